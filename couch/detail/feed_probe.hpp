#pragma once

#include "couch/changes_feed.hpp" // feed_state

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace metrics {
class registry;
class counter;
class gauge;
} // namespace metrics

// What a changes feed reports about itself, and the small text helpers of
// its messages. Private to couch/changes_feed*.cpp.
namespace couch::detail {

// One feed's metrics (labelled database=<db>), looked up once.
struct feed_probe {
    feed_probe(metrics::registry& r, std::string const& db);
    void set_state(feed_state s) noexcept;
    void reconnect(std::string const& reason);

    metrics::counter& rows;
    metrics::counter& bytes;
    metrics::gauge& last_row;
    metrics::gauge& pending;
    metrics::counter& recreated;
    metrics::counter& source_rewinds;
    std::array<metrics::gauge*, 8> states{};
    std::map<std::string, metrics::counter*, std::less<>> reconnects;
};

// CouchDB's `error: reason` of an error body, else its first 200 bytes.
std::string reason_of(std::string const& body);

// The printable start of stray bytes, for a log line.
std::string printable_prefix(std::string_view s, std::size_t n = 120);

// The numeric prefix of a seq ("12-g1AA..." or 12); nullopt if it has none.
std::optional<std::uint64_t> seq_prefix(std::string_view raw);

} // namespace couch::detail
