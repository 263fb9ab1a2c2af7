// rewind() while the feed's I/O is in flight (a read of the continuous
// feed, plain and TLS; the db check before resuming).
#include "feed_test_server.hpp"

#include <boost/test/unit_test.hpp>

using namespace feed_test;

BOOST_AUTO_TEST_SUITE(rewind_in_flight)

// --- rewind() with I/O in flight -----------------------------------------------------

// The owner rewinds (e.g. after a delivery failure) while next() waits in a
// read of the continuous feed: that next() must go on from the new position,
// with no rows of the old connection and no error.
void rewind_during_read(bool tls) {
    auto const m = make_tls_material("IP:127.0.0.1");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    asio::io_context io;
    int changes = 0;
    test_server server(io, [&](seen_request const& r) -> script {
        if (!r.changes()) {
            return {w(db_info_200), hold()};
        }
        switch (++changes) {
        case 1:
            return {w(status_response(200, normal_body({{"a", "1-x"}}, "1-x", 0)))};
        case 2: // b, then nothing: next() waits in a read
            return {w(chunked_200), w(chunk(row_line("b", "2-x"))), hold()};
        case 3:
            return {w(status_response(200, normal_body({{"b", "2-x"}}, "2-x", 0)))};
        default:
            return {w(chunked_200), w(chunk(row_line("c", "3-x"))), hold()};
        }
    }, tls ? ctx.get() : nullptr);
    metrics::registry reg;
    auto strand = asio::make_strand(io);
    couch::client_config cfg;
    cfg.url = server.url();
    cfg.ca_file = ca_file;
    couch::changes_feed feed(strand, cfg, fast_options(), reg);
    std::vector<std::string> ids;
    std::string error;
    bool waiting = false, rewound = false, done = false, timed_out = false;
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            while (ids.size() < 4) {
                waiting = ids.size() == 2; // after b: the next read has nothing to read
                auto rows = co_await feed.next();
                for (auto& r : rows) {
                    ids.push_back(r.id);
                }
            }
        } catch (std::exception const& e) {
            error = e.what();
        }
        done = true;
        feed.stop();
        server.stop();
    }, asio::detached);
    asio::steady_timer t(strand);
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        auto const deadline = std::chrono::steady_clock::now() + 60s; // safety net only
        while (!done) {
            if (waiting && !rewound) {
                rewound = true; // the reader is suspended in next(), in the socket read
                feed.rewind(couch::since::from(couch::seq::from_raw_json("\"1-x\"")));
            }
            if (std::chrono::steady_clock::now() > deadline) {
                timed_out = true;
                feed.stop();
                server.stop();
                break;
            }
            t.expires_after(10ms);
            co_await t.async_wait(asio::use_awaitable);
        }
    }, asio::detached);
    io.run();
    BOOST_TEST(!timed_out);
    BOOST_TEST(rewound);
    BOOST_TEST(error.empty(), error);
    BOOST_TEST((ids == std::vector<std::string>{"a", "b", "b", "c"}));
    BOOST_REQUIRE_GE(server.requests.size(), 4u);
    std::vector<std::string> changes_targets;
    for (auto const& r : server.requests) {
        if (r.changes()) {
            changes_targets.push_back(r.target);
        }
    }
    BOOST_REQUIRE_GE(changes_targets.size(), 3u);
    BOOST_TEST(contains(changes_targets[2], "feed=normal"), changes_targets[2]);
    BOOST_TEST(contains(changes_targets[2], "since=1-x"), changes_targets[2]);
    BOOST_TEST(server.handshake_failures == 0);
}

BOOST_AUTO_TEST_CASE(rewind_while_a_read_is_in_flight) { rewind_during_read(false); }

BOOST_AUTO_TEST_CASE(rewind_while_a_tls_read_is_in_flight) { rewind_during_read(true); }

// A rewind while the db-info request (made before resuming from a seq) has no
// answer yet must not wait for that request's deadline.
BOOST_AUTO_TEST_CASE(rewind_while_the_db_check_is_in_flight) {
    asio::io_context io;
    int db_checks = 0;
    test_server server(io, [&](seen_request const& r) -> script {
        if (!r.changes() && ++db_checks == 1) {
            return {hold()}; // the first one never gets an answer
        }
        return simple_couch({{"a", "1-x"}}, "1-x", {{"b", "2-x"}})(r);
    });
    metrics::registry reg;
    auto strand = asio::make_strand(io);
    couch::client_config cfg;
    cfg.url = server.url();
    auto opt = fast_options(couch::since::from(couch::seq::from_raw_json("\"7-x\"")));
    opt.request_timeout = 600s; // far beyond the test's safety net
    couch::changes_feed feed(strand, cfg, opt, reg);
    std::vector<std::string> ids;
    std::string error;
    bool rewound = false, done = false, timed_out = false;
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            while (ids.size() < 2) {
                auto rows = co_await feed.next();
                for (auto& r : rows) {
                    ids.push_back(r.id);
                }
            }
        } catch (std::exception const& e) {
            error = e.what();
        }
        done = true;
        feed.stop();
        server.stop();
    }, asio::detached);
    asio::steady_timer t(strand);
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        auto const deadline = std::chrono::steady_clock::now() + 60s; // safety net only
        while (!done) {
            if (!rewound && !server.requests.empty()) {
                rewound = true; // the server holds GET /db: the feed waits for its answer
                feed.rewind(couch::since::beginning());
            }
            if (std::chrono::steady_clock::now() > deadline) {
                timed_out = true;
                feed.stop();
                server.stop();
                break;
            }
            t.expires_after(10ms);
            co_await t.async_wait(asio::use_awaitable);
        }
    }, asio::detached);
    io.run();
    BOOST_TEST(!timed_out);
    BOOST_TEST(rewound);
    BOOST_TEST(error.empty(), error);
    BOOST_TEST((ids == std::vector<std::string>{"a", "b"}));
    BOOST_REQUIRE_GE(server.requests.size(), 2u);
    BOOST_TEST(server.requests[0].target == "/db");
    BOOST_TEST(contains(server.requests[1].target, "since=0"), server.requests[1].target);
}

BOOST_AUTO_TEST_SUITE_END()
