#pragma once

// Runs one changes_feed in a test: reads rows until enough arrived or the
// feed's status meets a condition, then stops the feed and the test's
// server. Shared by the drivers of fault_feed.hpp (fault_server) and
// feed_test_server.hpp (the scripted TLS/cookie server).

#include "couch/changes_feed.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace couch_feed_driver {

// What one run saw; every assertion reads it after the run returned.
struct feed_run {
    std::vector<std::string> ids, seqs;
    std::vector<std::size_t> batches;        // rows per next() call
    std::set<couch::feed_state> states_seen; // sampled every `sample` interval
    couch::feed_status status;               // just after the stop
    std::string error;                       // what next() threw, if anything
    bool timed_out = false;                  // the 60 s safety net ended it
};

// `feed` runs on `strand` (an executor of `io`); `stop_server` is called
// once, with the feed's stop. Returns when io.run() does.
inline void run_feed(boost::asio::io_context& io, boost::asio::any_io_executor strand, couch::changes_feed& feed,
                     std::function<void()> stop_server, std::size_t want,
                     std::function<bool(couch::feed_status const&)> until, std::chrono::milliseconds sample,
                     feed_run& out) {
    namespace asio = boost::asio;
    bool finished = false;
    auto finish = [&] {
        if (!finished) {
            finished = true;
            feed.stop();
            out.status = feed.status();
            stop_server();
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
        auto const deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60); // safety net only
        while (!finished) {
            out.states_seen.insert(feed.status().state);
            if (until && until(feed.status())) {
                finish();
                break;
            }
            if (std::chrono::steady_clock::now() > deadline) {
                out.timed_out = true;
                finish();
                break;
            }
            watch.expires_after(sample);
            co_await watch.async_wait(asio::use_awaitable);
        }
    }, asio::detached);
    io.run();
}

} // namespace couch_feed_driver
