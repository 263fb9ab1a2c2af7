#include "couch/shard_seq.hpp"

#include "couch/detail/erlang_term.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <optional>
#include <utility>

namespace couch {
namespace {

decoded_seq opaque(std::string reason) {
    decoded_seq d;
    d.opaque_reason = std::move(reason);
    return d;
}

bool all_digits(std::string_view s) noexcept {
    if (s.empty()) {
        return false;
    }
    for (char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
    }
    return true;
}

std::optional<std::uint64_t> parse_u64(std::string_view s) noexcept {
    if (!all_digits(s) || s.size() > 20) {
        return std::nullopt;
    }
    std::uint64_t v = 0;
    for (char c : s) {
        auto const d = static_cast<std::uint64_t>(c - '0');
        if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) {
            return std::nullopt;
        }
        v = v * 10 + d;
    }
    return v;
}

} // namespace

std::string shard_range::to_string() const {
    std::array<char, 18> buf{};
    std::snprintf(buf.data(), buf.size(), "%08x-%08x", begin, end);
    return std::string(buf.data(), 17);
}

decoded_seq decode_shard_seq(std::string_view text, shard_seq_limits const& limits) {
    if (text.size() > limits.max_text_bytes) {
        return opaque("seq longer than the limit");
    }
    if (auto const n = parse_u64(text)) {
        decoded_seq d;
        d.shape = seq_shape::integer;
        d.number = *n;
        return d;
    }
    auto const dash = text.find('-');
    if (dash == std::string_view::npos) {
        return opaque("not N-<base64url>");
    }
    auto const prefix = parse_u64(text.substr(0, dash));
    if (!prefix) {
        return opaque("the prefix before '-' is not a number");
    }
    auto const raw = detail::base64url_decode(text.substr(dash + 1));
    if (!raw) {
        return opaque("not base64url after '-'");
    }
    std::vector<shard_position> shards;
    bool compressed = false;
    if (auto const* err = detail::read_shard_term(*raw, limits, shards, compressed)) {
        return opaque(err);
    }
    // One entry per range: CouchDB reads each range from one copy. A range
    // listed twice would make the comparison ambiguous.
    std::vector<shard_range> ranges;
    ranges.reserve(shards.size());
    for (auto const& p : shards) {
        ranges.push_back(p.range);
    }
    std::sort(ranges.begin(), ranges.end(),
              [](shard_range a, shard_range b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
    if (std::adjacent_find(ranges.begin(), ranges.end()) != ranges.end()) {
        return opaque("a shard range is listed twice");
    }
    decoded_seq d;
    d.number = *prefix;
    d.compressed = compressed;
    d.shards = std::move(shards);
    d.shape = seq_shape::clustered;
    return d;
}

decoded_seq decode_shard_seq(seq const& s, shard_seq_limits const& limits) {
    std::string_view raw = s.raw_json();
    if (raw.empty()) {
        return opaque("empty seq");
    }
    if (raw.front() != '"') {
        // A JSON number: only a plain non-negative integer counts.
        if (auto const n = parse_u64(raw)) {
            decoded_seq d;
            d.shape = seq_shape::integer;
            d.number = *n;
            return d;
        }
        return opaque("a number that is not a non-negative integer");
    }
    if (raw.size() < 2 || raw.back() != '"') {
        return opaque("unterminated JSON string");
    }
    raw = raw.substr(1, raw.size() - 2);
    // Clustered seqs never need escapes; a string with any is not one.
    if (raw.find('\\') != std::string_view::npos) {
        return opaque("a JSON string with escapes");
    }
    return decode_shard_seq(raw, limits);
}

char const* to_string(incarnation i) noexcept {
    switch (i) {
    case incarnation::same_incarnation:
        return "same_incarnation";
    case incarnation::recreated:
        return "recreated";
    case incarnation::rewound:
        return "rewound";
    case incarnation::unknown:
        return "unknown";
    }
    return "unknown";
}

incarnation_check compare_incarnation(decoded_seq const& checkpoint, decoded_seq const& server,
                                      incarnation_options const& options) {
    incarnation_check r;
    if (checkpoint.shape != seq_shape::clustered || server.shape != seq_shape::clustered) {
        r.reason = "not a clustered seq on both sides";
        return r;
    }
    for (auto const& s : server.shards) {
        if (!s.has_uuid()) {
            continue;
        }
        shard_position const* same_uuid = nullptr;
        shard_position const* same_node = nullptr;
        for (auto const& c : checkpoint.shards) {
            if (!c.has_uuid() || !(c.range == s.range)) {
                continue;
            }
            if (c.uuid_prefix == s.uuid_prefix) {
                same_uuid = &c;
                break;
            }
            if (c.node == s.node && same_node == nullptr) {
                same_node = &c;
            }
        }
        if (same_uuid != nullptr) {
            ++r.matching;
            if (s.seq < same_uuid->seq) {
                r.rewinds.push_back({s.range, s.node, same_uuid->uuid_prefix, s.uuid_prefix, same_uuid->seq, s.seq});
            }
        } else if (same_node != nullptr) {
            ++r.changed;
            r.replaced.push_back({s.range, s.node, same_node->uuid_prefix, s.uuid_prefix, same_node->seq, s.seq});
        }
    }
    r.compared = r.matching + r.changed;
    auto const counts = std::to_string(r.compared) + " shard(s) compared, " + std::to_string(r.matching) +
                        " same uuid, " + std::to_string(r.changed) + " new uuid";
    if (r.compared == 0 || r.compared < options.min_compared_shards) {
        r.reason = "too few comparable shards: " + counts;
        return r;
    }
    if (r.matching == 0) {
        r.verdict = incarnation::recreated;
        r.reason = "every compared shard has a new uuid: " + counts;
        return r;
    }
    if (!r.rewinds.empty()) {
        r.verdict = incarnation::rewound;
        r.reason = std::to_string(r.rewinds.size()) + " shard(s) with the same uuid went backwards: " + counts;
        return r;
    }
    r.verdict = incarnation::same_incarnation;
    r.reason = counts;
    return r;
}

incarnation_check compare_incarnation(seq const& checkpoint, seq const& server, incarnation_options const& options) {
    return compare_incarnation(decode_shard_seq(checkpoint), decode_shard_seq(server), options);
}

} // namespace couch
