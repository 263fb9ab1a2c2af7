#pragma once

// Internal to bridge/fleet*.cpp: what the fleet keeps per database, and its
// metrics.

#include "bridge/fleet.hpp"

#include <boost/json/object.hpp>

#include <array>
#include <chrono>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace metrics {
class registry;
class counter;
class gauge;
} // namespace metrics

namespace bridge {

struct fleet::entry {
    std::string db;
    std::string desired = "following"; // following | paused | removed | deleted
    bool from_api = false;             // persisted (meta "fleet")
    bool from_flag = false;
    bool from_discovery = false;       // found by discovery (--db-pattern)
    std::unique_ptr<pipeline> p;
    std::shared_ptr<std::atomic<bool>> done;
    bool stopping = false;
    std::optional<std::string> rewind_to; // applied durably before the next start
    boost::json::object options;          // per-database settings (see follow())
    std::string last_checkpoint;          // of the last pipeline, when it was reaped (may not be flushed yet)
    // desired == "deleted": when the server's database went away, and the
    // checkpoint it had then (persisted in meta "deleted_databases").
    std::int64_t deleted_unix_ms = 0;
    std::string deleted_checkpoint;
    // --max-open-feeds: `idle` (desired following, no pipeline: the feed
    // was closed, or could not open under the cap); `wake` once it changed
    // (or was never caught up), with the start kind to use then.
    bool idle = false;
    bool wake = false;
    std::optional<std::string> wake_kind;
    bool polling = false;
    std::chrono::system_clock::time_point opened_at{}; // of the running pipeline
    // The running pipeline's rows_read when the reaper first saw it caught
    // up: a feed with no row since then was only visited for its catch-up.
    std::optional<std::uint64_t> rows_when_caught_up;
};

// Checks a database's per-database options (see fleet::follow); returns
// an error text, empty when they are fine (fleet_commands.cpp).
std::string check_database_options(boost::json::object const& o);

// The fleet's metrics: what changed (counters) and how many databases are in
// each state (gauges, refreshed by the reaper about once a second).
struct fleet::probe {
    explicit probe(metrics::registry& r);
    static constexpr std::array<char const*, 6> states = {"following", "stopping", "paused",
                                                          "removed",   "deleted",  "idle"};
    metrics::registry& registry;
    metrics::counter& followed;
    metrics::counter& discovered;
    metrics::counter& removed_deleted;
    metrics::counter& removed_api;
    // couch_bridge_databases_recreated_total{database} is the feeds' series
    // (labelled per database), looked up when it happens.
    std::array<metrics::gauge*, states.size()> by_state{};
    metrics::counter& idle_closed; // feeds closed for --idle-close / the cap
    metrics::counter& reopened;    // idle databases opened again
    metrics::counter& polls;       // GET /{db} of idle databases (no _db_updates)
};

} // namespace bridge
