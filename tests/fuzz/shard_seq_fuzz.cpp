// Fuzzes the clustered-seq decoder and the incarnation comparison. The first
// input byte picks how the rest is used, so one corpus reaches every layer:
//   mode % 3 == 0  the rest is a seq's text ("N-<base64url>", "42", ...)
//   mode % 3 == 1  the rest is a term (after the 131 version byte); the
//                  harness wraps it uncompressed, so the fuzzer works on the
//                  term reader directly instead of on base64
//   mode % 3 == 2  the same, zlib-compressed by the harness with the true size
// Bit 0x10 selects small limits (4 shards, 16-byte atoms, 8-byte uuids,
// 256-byte terms) so the limit checks are reached with small inputs.
#include "couch/shard_seq.hpp"

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

std::string base64url(std::string_view in) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        acc = (acc << 8) | static_cast<std::uint8_t>(c);
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out.push_back(alphabet[(acc >> bits) & 63]);
        }
    }
    if (bits > 0) {
        out.push_back(alphabet[(acc << (6 - bits)) & 63]);
    }
    return out;
}

std::string wrap(std::string_view term, bool compressed) {
    std::string bytes(1, '\x83');
    if (!compressed) {
        bytes += term;
        return "1-" + base64url(bytes);
    }
    uLongf len = compressBound(static_cast<uLong>(term.size()));
    std::string z(len, '\0');
    if (compress2(reinterpret_cast<Bytef*>(z.data()), &len, reinterpret_cast<Bytef const*>(term.data()),
                  static_cast<uLong>(term.size()), 1) != Z_OK) {
        __builtin_trap();
    }
    z.resize(len);
    auto const size = static_cast<std::uint32_t>(term.size());
    bytes.push_back('\x50');
    for (int s = 24; s >= 0; s -= 8) {
        bytes.push_back(static_cast<char>((size >> s) & 0xff));
    }
    return "1-" + base64url(bytes + z);
}

// 17a's update_seq: a real q=4 seq to compare every decoded input against.
constexpr std::string_view reference =
    "2-g1AAAAEzeJzLYWBgYMlgTmEQTM4vTc5ISXIwNDLXMwBCwxygFFMeC5BkOACk_gNBVgZzImMuUIA9ydzMPDnJBJs-gqY1QEzbDzKNAWKaWbJFmnk"
    "KiaYlOQDJpHoUd5kmp6SkWqSSaFIiQ5I91BiIg8wsDFNMzM2xacgCAL7jUHI";

} // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    std::uint8_t const mode = data[0];
    std::string_view const rest(reinterpret_cast<char const*>(data + 1), size - 1);
    couch::shard_seq_limits limits;
    if ((mode & 0x10) != 0) {
        limits.max_shards = 4;
        limits.max_atom_bytes = 16;
        limits.max_uuid_bytes = 8;
        limits.max_term_bytes = 256;
    }
    std::string text;
    switch (mode % 3) {
    case 0:
        text.assign(rest);
        break;
    case 1:
        text = wrap(rest, false);
        break;
    default:
        text = wrap(rest, true);
        break;
    }
    auto const d = couch::decode_shard_seq(std::string_view(text), limits);
    // The JSON form must agree with the text form.
    auto const j = couch::decode_shard_seq(couch::seq::from_raw_json("\"" + text + "\""), limits);
    if (j.shape != d.shape || j.shards.size() != d.shards.size()) {
        if (text.find_first_of("\"\\") == std::string::npos) {
            __builtin_trap();
        }
    }
    if (d.shape == couch::seq_shape::clustered) {
        if (d.shards.empty() || d.shards.size() > limits.max_shards || !d.opaque_reason.empty()) {
            __builtin_trap();
        }
        for (auto const& p : d.shards) {
            if (p.range.begin > p.range.end || p.uuid_prefix.size() > limits.max_uuid_bytes ||
                p.node.size() > 2 * limits.max_atom_bytes || p.epoch_node.size() > 2 * limits.max_atom_bytes) {
                __builtin_trap();
            }
        }
        // A seq against itself never rewinds and is never "recreated".
        auto const self = couch::compare_incarnation(d, d);
        if (!self.rewinds.empty() || self.verdict == couch::incarnation::recreated ||
            self.verdict == couch::incarnation::rewound || self.changed != 0) {
            __builtin_trap();
        }
    } else if (d.opaque_reason.empty() && d.shape == couch::seq_shape::opaque) {
        __builtin_trap();
    }
    static auto const ref = couch::decode_shard_seq(reference);
    auto const a = couch::compare_incarnation(ref, d);
    auto const b = couch::compare_incarnation(d, ref);
    if (a.compared != a.matching + a.changed || b.compared != b.matching + b.changed ||
        a.replaced.size() != a.changed || (a.verdict == couch::incarnation::rewound && a.rewinds.empty())) {
        __builtin_trap();
    }
    return 0;
}
