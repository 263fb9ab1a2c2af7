#include "couch/detail/erlang_term.hpp"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <utility>

namespace couch::detail {
namespace {

// Erlang external term format tags (erts/emulator/beam/external.h).
constexpr std::uint8_t version_magic = 131;
constexpr std::uint8_t tag_compressed = 80;
constexpr std::uint8_t tag_small_integer = 97; // u8
constexpr std::uint8_t tag_integer = 98;       // i32, big-endian
constexpr std::uint8_t tag_small_big = 110;    // u8 n, u8 sign, n bytes little-endian
constexpr std::uint8_t tag_atom = 100;         // u16 length, Latin-1
constexpr std::uint8_t tag_atom_utf8 = 118;    // u16 length, UTF-8
constexpr std::uint8_t tag_small_atom = 115;   // u8 length, Latin-1
constexpr std::uint8_t tag_small_atom_utf8 = 119; // u8 length, UTF-8
constexpr std::uint8_t tag_small_tuple = 104;  // u8 arity
constexpr std::uint8_t tag_nil = 106;
constexpr std::uint8_t tag_string = 107;       // u16 length, bytes: a list of small integers
constexpr std::uint8_t tag_list = 108;         // u32 length, elements, tail
constexpr std::uint8_t tag_binary = 109;       // u32 length, bytes

// Reads the subset described in shard_seq.hpp from an uncompressed term
// (after the version byte). Every read checks the bytes left; the first
// failure is kept as the reason and every later read fails too.
class term_reader {
public:
    term_reader(std::string_view bytes, shard_seq_limits const& limits) : in_(bytes), limits_(limits) {}

    char const* error() const noexcept { return error_; }
    bool at_end() const noexcept { return pos_ == in_.size(); }

    bool fail(char const* why) {
        if (error_ == nullptr) {
            error_ = why;
        }
        return false;
    }

    bool u8(std::uint8_t& v) {
        if (in_.size() - pos_ < 1) {
            return fail("term truncated");
        }
        v = static_cast<std::uint8_t>(in_[pos_++]);
        return true;
    }

    bool be(std::size_t n, std::uint32_t& v) {
        if (in_.size() - pos_ < n) {
            return fail("term truncated");
        }
        v = 0;
        for (std::size_t i = 0; i < n; ++i) {
            v = (v << 8) | static_cast<std::uint8_t>(in_[pos_++]);
        }
        return true;
    }

    bool take(std::size_t n, std::string_view& out) {
        if (in_.size() - pos_ < n) {
            return fail("term truncated");
        }
        out = in_.substr(pos_, n);
        pos_ += n;
        return true;
    }

    bool expect(std::uint8_t tag, char const* why) {
        std::uint8_t t = 0;
        if (!u8(t)) {
            return false;
        }
        return t == tag || fail(why);
    }

    // A non-negative integer that fits in `max`.
    bool integer(std::uint64_t max, std::uint64_t& v) {
        std::uint8_t tag = 0;
        if (!u8(tag)) {
            return false;
        }
        return integer_after_tag(tag, max, v);
    }

    bool integer_after_tag(std::uint8_t tag, std::uint64_t max, std::uint64_t& v) {
        switch (tag) {
        case tag_small_integer: {
            std::uint8_t b = 0;
            if (!u8(b)) {
                return false;
            }
            v = b;
            break;
        }
        case tag_integer: {
            std::uint32_t u = 0;
            if (!be(4, u)) {
                return false;
            }
            if ((u & 0x80000000u) != 0) {
                return fail("negative integer");
            }
            v = u;
            break;
        }
        case tag_small_big: {
            std::uint8_t n = 0;
            std::uint8_t sign = 0;
            if (!u8(n) || !u8(sign)) {
                return false;
            }
            if (sign != 0) {
                return fail("negative integer");
            }
            if (n > 8) {
                return fail("integer wider than 64 bits");
            }
            std::string_view digits;
            if (!take(n, digits)) {
                return false;
            }
            v = 0;
            for (std::size_t i = n; i-- > 0;) {
                v = (v << 8) | static_cast<std::uint8_t>(digits[i]);
            }
            break;
        }
        default:
            return fail("expected an integer");
        }
        return v <= max || fail("integer out of range");
    }

    // An atom as UTF-8 (Latin-1 atoms converted, so both encodings of one
    // node name compare equal).
    bool atom(std::string& out) {
        std::uint8_t tag = 0;
        if (!u8(tag)) {
            return false;
        }
        std::uint32_t len = 0;
        bool latin1 = false;
        switch (tag) {
        case tag_atom:
            latin1 = true;
            [[fallthrough]];
        case tag_atom_utf8:
            if (!be(2, len)) {
                return false;
            }
            break;
        case tag_small_atom:
            latin1 = true;
            [[fallthrough]];
        case tag_small_atom_utf8:
            if (!be(1, len)) {
                return false;
            }
            break;
        default:
            return fail("expected an atom");
        }
        if (len > limits_.max_atom_bytes) {
            return fail("atom too long");
        }
        std::string_view text;
        if (!take(len, text)) {
            return false;
        }
        out.clear();
        if (!latin1) {
            out.assign(text);
            return true;
        }
        out.reserve(text.size());
        for (char c : text) {
            auto const b = static_cast<std::uint8_t>(c);
            if (b < 0x80) {
                out.push_back(c);
            } else {
                out.push_back(static_cast<char>(0xc0 | (b >> 6)));
                out.push_back(static_cast<char>(0x80 | (b & 0x3f)));
            }
        }
        return true;
    }

    // [Begin, End]: a two-element proper list of integers, or the STRING_EXT
    // term_to_binary uses when both are below 256.
    bool range(shard_range& r) {
        std::uint8_t tag = 0;
        if (!u8(tag)) {
            return false;
        }
        std::uint64_t b = 0;
        std::uint64_t e = 0;
        if (tag == tag_string) {
            std::uint32_t len = 0;
            std::string_view bytes;
            if (!be(2, len) || !take(len, bytes)) {
                return false;
            }
            if (len != 2) {
                return fail("a shard range is not two integers");
            }
            b = static_cast<std::uint8_t>(bytes[0]);
            e = static_cast<std::uint8_t>(bytes[1]);
        } else {
            if (tag != tag_list) {
                return fail("expected a shard range list");
            }
            std::uint32_t len = 0;
            if (!be(4, len)) {
                return false;
            }
            if (len != 2) {
                return fail("a shard range is not two integers");
            }
            constexpr auto max = std::uint64_t{std::numeric_limits<std::uint32_t>::max()};
            if (!integer(max, b) || !integer(max, e) || !expect(tag_nil, "a shard range is an improper list")) {
                return false;
            }
        }
        if (b > e) {
            return fail("a shard range ends before it begins");
        }
        r.begin = static_cast<std::uint32_t>(b);
        r.end = static_cast<std::uint32_t>(e);
        return true;
    }

    // Seq | {Seq, Uuid} | {Seq, Uuid, EpochNode}
    bool shard_seq(shard_position& p) {
        std::uint8_t tag = 0;
        if (!u8(tag)) {
            return false;
        }
        constexpr auto max = std::numeric_limits<std::uint64_t>::max();
        if (tag != tag_small_tuple) {
            return integer_after_tag(tag, max, p.seq);
        }
        std::uint8_t arity = 0;
        if (!u8(arity)) {
            return false;
        }
        if (arity != 2 && arity != 3) {
            return fail("a shard seq tuple is not {Seq, Uuid} or {Seq, Uuid, Node}");
        }
        if (!integer(max, p.seq) || !expect(tag_binary, "a shard uuid is not a binary")) {
            return false;
        }
        std::uint32_t len = 0;
        std::string_view uuid;
        if (!be(4, len)) {
            return false;
        }
        if (len > limits_.max_uuid_bytes) {
            return fail("shard uuid too long");
        }
        if (!take(len, uuid)) {
            return false;
        }
        p.uuid_prefix.assign(uuid);
        return arity == 2 || atom(p.epoch_node);
    }

    // {Node, [Begin, End], ShardSeq}
    bool entry(shard_position& p) {
        std::uint8_t arity = 0;
        if (!expect(tag_small_tuple, "a list entry is not a tuple") || !u8(arity)) {
            return false;
        }
        if (arity != 3) {
            return fail("a list entry is not {Node, Range, Seq}");
        }
        return atom(p.node) && range(p.range) && shard_seq(p);
    }

    bool shard_list(std::vector<shard_position>& out) {
        std::uint8_t tag = 0;
        if (!u8(tag)) {
            return false;
        }
        if (tag == tag_nil) {
            return fail("empty shard list");
        }
        if (tag != tag_list) {
            return fail("the term is not a list");
        }
        std::uint32_t n = 0;
        if (!be(4, n)) {
            return false;
        }
        if (n == 0) {
            return fail("empty shard list");
        }
        if (n > limits_.max_shards) {
            return fail("too many shards");
        }
        // Each entry takes at least ~20 bytes: never reserve for a count the
        // remaining input cannot hold.
        out.reserve(std::min<std::size_t>(n, (in_.size() - pos_) / 16 + 1));
        for (std::uint32_t i = 0; i < n; ++i) {
            shard_position p;
            if (!entry(p)) {
                return false;
            }
            out.push_back(std::move(p));
        }
        return expect(tag_nil, "the shard list is an improper list");
    }

private:
    std::string_view in_;
    std::size_t pos_ = 0;
    shard_seq_limits const& limits_;
    char const* error_ = nullptr;
};

int base64url_value(char c) noexcept {
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

// Inflates exactly `size` bytes from a zlib stream that must end there and
// use all of `in`. Never allocates more than `size` (already checked against
// the limit by the caller), so a zlib bomb stops at the declared size.
char const* inflate_exact(std::string_view in, std::size_t size, std::string& out) {
    if (in.size() > std::numeric_limits<uInt>::max() || size > std::numeric_limits<uInt>::max()) {
        return "term larger than zlib can inflate in one call";
    }
    z_stream z{};
    if (inflateInit(&z) != Z_OK) {
        return "zlib init failed";
    }
    out.resize(size);
    // zlib's API is not const-correct; it never writes through next_in.
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(size);
    int const rc = inflate(&z, Z_FINISH);
    std::size_t const produced = size - z.avail_out;
    std::size_t const left_in = z.avail_in;
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        return produced == size ? "compressed term larger than its declared size" : "broken zlib stream";
    }
    if (produced != size) {
        return "compressed term smaller than its declared size";
    }
    if (left_in != 0) {
        return "bytes after the zlib stream";
    }
    return nullptr;
}

} // namespace

// Base64url as CouchDB writes it (no padding); '=' padding is tolerated.
std::optional<std::string> base64url_decode(std::string_view s) {
    while (!s.empty() && s.back() == '=') {
        s.remove_suffix(1);
    }
    if (s.size() % 4 == 1) {
        return std::nullopt;
    }
    std::string out;
    out.reserve(s.size() / 4 * 3 + 2);
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : s) {
        int const v = base64url_value(c);
        if (v < 0) {
            return std::nullopt;
        }
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    return out;
}

char const* read_shard_term(std::string_view bytes, shard_seq_limits const& limits, std::vector<shard_position>& shards,
                            bool& compressed) {
    if (bytes.size() < 2 || static_cast<std::uint8_t>(bytes[0]) != version_magic) {
        return "not an Erlang external term";
    }
    std::string inflated;
    compressed = static_cast<std::uint8_t>(bytes[1]) == tag_compressed;
    if (compressed) {
        if (bytes.size() < 6) {
            return "compressed term truncated";
        }
        std::size_t size = 0;
        for (std::size_t i = 2; i < 6; ++i) {
            size = (size << 8) | static_cast<std::uint8_t>(bytes[i]);
        }
        if (size > limits.max_term_bytes) {
            return "term larger than the limit";
        }
        if (auto const* err = inflate_exact(bytes.substr(6), size, inflated)) {
            return err;
        }
        bytes = inflated;
    } else {
        bytes.remove_prefix(1);
        if (bytes.size() > limits.max_term_bytes) {
            return "term larger than the limit";
        }
    }
    term_reader reader(bytes, limits);
    if (!reader.shard_list(shards)) {
        return reader.error();
    }
    if (!reader.at_end()) {
        return "bytes after the term";
    }
    return nullptr;
}

} // namespace couch::detail
