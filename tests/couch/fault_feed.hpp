#pragma once

// Driving one changes_feed against a couch_test::fault_server: the options
// of a fast test and the rows, batches and states it saw. Shared by
// feed_test.cpp and coalesce_test.cpp.

#include "couch/changes_feed.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fault_server.hpp"

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

struct outcome {
    std::vector<std::string> ids, seqs;
    std::set<couch::feed_state> states_seen; // sampled every 2 ms
    couch::feed_status status;
    std::string error;
    bool timed_out = false;
    std::vector<std::size_t> batches; // rows per next() call
};

// Reads rows until `want` rows arrived or `until_state` is reached, then stops
// the feed and the server; all assertions happen after run() returns.
inline outcome drive(couch_test::fault_server& server, asio::io_context& io, couch::feed_options options, std::size_t want,
              std::optional<couch::feed_state> until_state = std::nullopt, metrics::registry* reg = nullptr) {
    outcome out;
    metrics::registry local;
    auto strand = asio::make_strand(io);
    couch::client_config cfg;
    cfg.url = server.url();
    couch::changes_feed feed(strand, cfg, std::move(options), reg ? *reg : local);
    bool finished = false;
    auto finish = [&] {
        if (!finished) {
            finished = true;
            feed.stop();
            out.status = feed.status();
            server.stop();
        }
    };
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            while (out.ids.size() < want) {
                auto rows = co_await feed.next();
                out.batches.push_back(rows.size());
                for (auto& r : rows) {
                    out.ids.push_back(r.id);
                    out.seqs.push_back(r.seq.raw_json());
                }
            }
        } catch (std::exception const& e) {
            out.error = e.what();
        }
        finish();
    }, asio::detached);
    asio::steady_timer watch(strand);
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        auto const deadline = std::chrono::steady_clock::now() + 60s;
        while (!finished) {
            out.states_seen.insert(feed.status().state);
            if (until_state && feed.status().state == *until_state) {
                finish();
                break;
            }
            if (std::chrono::steady_clock::now() > deadline) {
                out.timed_out = true;
                finish();
                break;
            }
            watch.expires_after(2ms);
            co_await watch.async_wait(asio::use_awaitable);
        }
    }, asio::detached);
    io.run();
    return out;
}

} // namespace couch_fault_feed
