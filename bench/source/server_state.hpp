#pragma once

// What every request handler of bench-source shares: the served data, the
// live writes, the counters of /_bench/stats, and the options that shape
// the responses (framing, row rate, live changes).

#include "bench/source/catalog.hpp"
#include "bench/source/live.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace bench_source {

struct server_stats {
    std::atomic<std::uint64_t> rows{0};
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> changes_requests{0};
    std::atomic<std::int64_t> open_connections{0};
    std::atomic<std::int64_t> peak_connections{0};
    std::atomic<std::uint64_t> connections_accepted{0};
    std::atomic<std::int64_t> open_feeds{0}; // continuous feeds past their backlog
};

using clock_type = std::chrono::steady_clock;

// Hands out the send times of one database's rows at a fixed rate, shared by
// every response of that database. Idle time earns at most `credit` of
// rows, so a reader that comes back does not get a burst.
class row_pacer {
public:
    // The time at which the next row may be sent (now or later); reserves it.
    clock_type::time_point reserve(std::chrono::nanoseconds period)
    {
        constexpr auto credit = std::chrono::milliseconds(5);
        std::lock_guard const lock(mutex_);
        auto const now = clock_type::now();
        auto const slot = std::max(next_, now - credit);
        next_ = slot + period;
        return slot;
    }

private:
    std::mutex mutex_;
    clock_type::time_point next_{};
};

struct server_state {
    catalog const& cat;
    live_state& live;
    feed_gate& gate;
    std::vector<std::string> const& names;        // by index
    std::vector<std::string> const& sorted_names; // in byte order, for _all_dbs

    server_stats stats;
    std::size_t batch_bytes;
    // Live mode: every database gains one change per interval after startup
    // (0: the data is static).
    std::uint64_t live_interval_ms = 0;
    // CouchDB framing (see the header comment).
    bool couch_like = false;
    // Rows per second per database (0: as fast as the socket takes them).
    double row_rate = 0;
    std::vector<row_pacer> pacers{};
    clock_type::time_point started = clock_type::now();

    std::chrono::nanoseconds row_period() const
    {
        return std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / row_rate));
    }

    // The current last seq of database `db`.
    std::uint64_t update_seq_now(std::size_t db) const
    {
        auto n = cat.changes_per_db() + live.writes(db);
        if (live_interval_ms > 0) {
            auto const ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                                  started)
                                .count();
            n += static_cast<std::uint64_t>(ms) / live_interval_ms;
        }
        return n;
    }

    // Live mode: when the next live change appears (a feed waiting for it
    // wakes then, not up to an interval later).
    clock_type::time_point next_live_tick() const
    {
        auto const interval = std::chrono::milliseconds(live_interval_ms);
        auto const ticks = (clock_type::now() - started) / interval;
        return started + (ticks + 1) * interval;
    }
};

} // namespace bench_source
