#pragma once

// Driving one changes_feed against a couch_test::fault_server: the options
// of a fast test and the rows, batches and states it saw. Shared by
// feed_test.cpp and coalesce_test.cpp.

#include "couch/changes_feed.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "fault_server.hpp"
#include "feed_driver.hpp"

namespace couch_fault_feed {

namespace asio = boost::asio;
using namespace std::chrono_literals;

inline couch::feed_options fast_options(couch::since since = couch::since::beginning()) {
    couch::feed_options o;
    o.database = "db";
    o.since = std::move(since);
    o.heartbeat = 150ms;
    o.backoff_initial = 20ms;
    o.backoff_max = 100ms;
    o.slow_retry = 100ms;
    o.batch_limit = 2;
    o.seq_interval = 0;
    o.request_timeout = 10s;
    return o;
}

using outcome = couch_feed_driver::feed_run;

// Reads rows until `want` rows arrived or `until` holds (sampled every 2 ms),
// then stops the feed and the server; all assertions happen after it returns.
inline outcome drive_until(couch_test::fault_server& server, asio::io_context& io, couch::feed_options options,
                           std::size_t want, std::function<bool(couch::feed_status const&)> until,
                           metrics::registry* reg = nullptr) {
    outcome out;
    metrics::registry local;
    auto strand = asio::make_strand(io);
    couch::client_config cfg;
    cfg.url = server.url();
    couch::changes_feed feed(strand, cfg, std::move(options), reg ? *reg : local);
    couch_feed_driver::run_feed(io, strand, feed, [&] { server.stop(); }, want, std::move(until), 2ms, out);
    return out;
}

// drive_until, ending when the feed reaches `until_state` (when given).
inline outcome drive(couch_test::fault_server& server, asio::io_context& io, couch::feed_options options,
                     std::size_t want, std::optional<couch::feed_state> until_state = std::nullopt,
                     metrics::registry* reg = nullptr) {
    auto until = [until_state](couch::feed_status const& st) { return until_state && st.state == *until_state; };
    return drive_until(server, io, std::move(options), want, until, reg);
}

} // namespace couch_fault_feed
