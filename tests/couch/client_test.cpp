// couch::client, the one client of a source: one cookie login for all the
// feeds built on it, one renewal when its session expires under many feeds
// at once, and kept-alive connections, so that a catch-up of many batches
// costs one connection. Against the scripted server of fault_server.hpp,
// which counts the connections it accepts.
#include "couch/changes_feed.hpp"
#include "couch/client.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fault_server.hpp"
#include "wire.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace couch_test;

namespace {

couch::feed_options options_for(std::string db) {
    couch::feed_options o;
    o.database = std::move(db);
    o.since = couch::since::beginning();
    o.heartbeat = 5s;
    o.backoff_initial = 20ms;
    o.backoff_max = 50ms;
    o.slow_retry = 100ms;
    o.seq_interval = 0;
    o.request_timeout = 20s;
    return o;
}

std::string session_answer(std::string const& cookie) {
    std::string const body = R"({"ok":true,"name":"admin","roles":["_admin"]})";
    return "HTTP/1.1 200 OK\r\nSet-Cookie: " + cookie +
           "; Version=1; Path=/; HttpOnly\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string const unauthorized =
    status_response(401, R"({"error":"unauthorized","reason":"You are not authorized to access this db."})");

struct feed_run {
    explicit feed_run(asio::io_context& io) : strand(asio::make_strand(io)) {}
    asio::strand<asio::io_context::executor_type> strand; // the feed's, and its reader's
    std::unique_ptr<couch::changes_feed> feed;
    std::vector<std::string> ids;
    std::string error;
    bool done = false;
};

// Runs every feed until `enough` holds for its rows (or 30 s pass), then
// stops them all and the server. Assertions after it returns.
bool drive(asio::io_context& io, fault_server& server, std::vector<feed_run>& runs,
           std::function<bool(std::vector<std::string> const&)> enough) {
    for (auto& r : runs) {
        asio::co_spawn(r.strand, [&r, &enough]() -> asio::awaitable<void> {
            try {
                while (!enough(r.ids)) {
                    for (auto& row : co_await r.feed->next()) {
                        r.ids.push_back(row.id);
                    }
                }
            } catch (std::exception const& e) {
                r.error = e.what();
            }
            r.done = true;
        }, asio::detached);
    }
    auto const deadline = std::chrono::steady_clock::now() + 30s;
    auto all_done = [&] {
        return std::all_of(runs.begin(), runs.end(), [](feed_run const& r) { return r.done; });
    };
    while (!all_done() && std::chrono::steady_clock::now() < deadline) {
        io.run_for(10ms);
    }
    bool const finished = all_done();
    for (auto& r : runs) {
        r.feed->stop();
    }
    server.stop();
    io.run_for(100ms);
    return finished;
}

bool has(std::vector<std::string> const& ids, std::string const& id) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
}

} // namespace

BOOST_AUTO_TEST_SUITE(client)

// Ten feeds start at once on one client with cookie auth: one POST /_session
// (a slow one, so that the others ask while it is under way), and every
// request carries its cookie.
BOOST_AUTO_TEST_CASE(many_feeds_on_one_client_log_in_once) {
    asio::io_context io;
    fault_server server(io);
    server.route = [&](std::string const& method, std::string const& target) -> std::optional<script> {
        if (target == "/_session") {
            BOOST_CHECK(method == "POST");
            return script{pause_for(100ms), w(session_answer("AuthSession=b25l")), hold()};
        }
        if (server.cookies.back() != "AuthSession=b25l") {
            return script{w(unauthorized), hold()};
        }
        if (target.find("/_changes") == std::string::npos) {
            return script{w(status_response(200, R"({"db_name":"db","update_seq":"2-x"})")), hold()};
        }
        if (target.find("feed=normal") != std::string::npos) {
            return script{w(status_response(200, normal_body({{"a", "1-x"}}, "1-x", 0))), hold()};
        }
        return script{w(chunked_200), w(chunk(row_line("b", "2-x"))), hold()};
    };
    metrics::registry reg;
    couch::client_config cfg;
    cfg.url = "http://127.0.0.1:" + std::to_string(server.port());
    cfg.user = "admin";
    cfg.password = "pw";
    cfg.auth = couch::client_config::auth_mode::cookie;
    auto cl = std::make_shared<couch::client>(io.get_executor(), cfg, nullptr, &reg);
    std::vector<feed_run> runs;
    for (int i = 0; i < 10; ++i) {
        runs.emplace_back(io);
    }
    for (std::size_t i = 0; i < runs.size(); ++i) {
        runs[i].feed = std::make_unique<couch::changes_feed>(runs[i].strand, cl,
                                                             options_for("db" + std::to_string(i)), reg);
    }
    bool const finished = drive(io, server, runs, [](auto const& ids) { return has(ids, "b"); });
    BOOST_TEST(finished);
    for (auto const& r : runs) {
        BOOST_TEST(r.error.empty(), r.error);
        BOOST_TEST((r.ids == std::vector<std::string>{"a", "b"}));
    }
    BOOST_TEST(std::count(server.targets.begin(), server.targets.end(), "/_session") == 1);
    BOOST_TEST(cl->stats().logins == 1u);
    for (std::size_t i = 0; i < server.targets.size(); ++i) {
        if (server.targets[i] != "/_session") {
            BOOST_TEST(server.cookies[i] == "AuthSession=b25l", server.targets[i]);
        }
    }
    BOOST_TEST(reg.expose().find("couch_bridge_couch_session_logins_total 1") != std::string::npos);
}

// The session expires while ten feeds follow: every one of them meets a 401
// with the old cookie, and the client logs in once more, not once per feed.
BOOST_AUTO_TEST_CASE(an_expired_session_is_renewed_once_for_all_feeds) {
    constexpr int feeds = 10;
    asio::io_context io;
    fault_server server(io);
    int logins = 0;
    std::set<std::string> followed_with_first; // databases whose continuous feed was served with cookie one
    bool first_expired = false;
    server.route = [&](std::string const&, std::string const& target) -> std::optional<script> {
        if (target == "/_session") {
            ++logins;
            return script{pause_for(50ms), w(session_answer(logins == 1 ? "AuthSession=b25l" : "AuthSession=dHdv")),
                          hold()};
        }
        auto const& cookie = server.cookies.back();
        bool const valid = cookie == "AuthSession=dHdv" || (cookie == "AuthSession=b25l" && !first_expired);
        if (!valid) {
            return script{w(unauthorized), hold()};
        }
        if (target.find("/_changes") == std::string::npos) {
            return script{w(status_response(200, R"({"db_name":"db","update_seq":"2-x"})")), hold()};
        }
        if (target.find("feed=normal") != std::string::npos) {
            return script{w(status_response(200, target.find("since=0") != std::string::npos
                                                     ? normal_body({{"a", "1-x"}}, "1-x", 0)
                                                     : normal_body({}, "2-x", 0))),
                          hold()};
        }
        if (cookie == "AuthSession=b25l") {
            // One row, then the response ends; once every feed got here
            // the first session expires.
            followed_with_first.insert(target.substr(0, target.find("/_changes")));
            first_expired = first_expired || followed_with_first.size() == feeds;
            return script{w(chunked_200), w(chunk(row_line("b", "2-x"))), w("0\r\n\r\n"), hold()};
        }
        return script{w(chunked_200), w(chunk(row_line("c", "3-x"))), hold()};
    };
    metrics::registry reg;
    couch::client_config cfg;
    cfg.url = "http://127.0.0.1:" + std::to_string(server.port());
    cfg.user = "admin";
    cfg.password = "pw";
    cfg.auth = couch::client_config::auth_mode::cookie;
    auto cl = std::make_shared<couch::client>(io.get_executor(), cfg, nullptr, &reg);
    std::vector<feed_run> runs;
    for (int i = 0; i < feeds; ++i) {
        runs.emplace_back(io);
    }
    for (std::size_t i = 0; i < runs.size(); ++i) {
        runs[i].feed = std::make_unique<couch::changes_feed>(runs[i].strand, cl,
                                                             options_for("db" + std::to_string(i)), reg);
    }
    bool const finished = drive(io, server, runs, [](auto const& ids) { return has(ids, "c"); });
    BOOST_TEST(finished);
    BOOST_TEST(first_expired);
    for (auto const& r : runs) {
        BOOST_TEST(r.error.empty(), r.error);
        BOOST_TEST(has(r.ids, "a"));
        BOOST_TEST(has(r.ids, "c"));
        BOOST_TEST((r.feed->status().state != couch::feed_state::unauthorized));
    }
    BOOST_TEST(logins == 2); // the first login, and one renewal
    BOOST_TEST(cl->stats().logins == 2u);
    auto const refused = std::count(server.cookies.begin(), server.cookies.end(), "AuthSession=b25l");
    BOOST_TEST(refused >= feeds); // each feed did present the old cookie
}

namespace {

// `batches` catch-up batches of two rows each (limit=2), each on the
// connection the last one left open; the last says nothing is pending.
void push_batches(fault_server& server, int batches) {
    for (int b = 0; b < batches; ++b) {
        auto const s1 = std::to_string(2 * b + 1) + "-x", s2 = std::to_string(2 * b + 2) + "-x";
        server.push({w(status_response(
                         200, normal_body({{"d" + std::to_string(2 * b), s1}, {"d" + std::to_string(2 * b + 1), s2}},
                                          s2, 2 * (batches - b - 1)))),
                     hold()});
    }
}

std::shared_ptr<couch::client> client_of(asio::io_context& io, fault_server& server, metrics::registry& reg) {
    couch::client_config cfg;
    cfg.url = server.url();
    return std::make_shared<couch::client>(io.get_executor(), cfg, nullptr, &reg);
}

} // namespace

// While the owner still holds a batch's rows (publishing them), the next
// batch's request is already at the server: it prepares that response
// meanwhile, instead of waiting for the owner's next call (issue 16: the
// catch-up stalled at every batch boundary). Only once the database was
// checked: the first batch from 0 needs none, the second goes after the
// check, and from then on each request goes ahead of the call.
BOOST_AUTO_TEST_CASE(the_next_batch_is_asked_for_while_the_rows_are_being_published) {
    constexpr int batches = 5;
    asio::io_context io;
    fault_server server(io);
    push_batches(server, batches);
    server.push({w(chunked_200), hold()});
    metrics::registry reg;
    auto cl = client_of(io, server, reg);
    auto opt = options_for("db");
    opt.batch_limit = 2;
    auto strand = asio::make_strand(io);
    couch::changes_feed feed(strand, cl, opt, reg);
    auto changes_requests = [&server] {
        return std::count_if(server.targets.begin(), server.targets.end(),
                             [](auto const& t) { return t.find("/_changes") != std::string::npos; });
    };
    // Per batch: the _changes requests the server had seen once the owner
    // had held the batch's rows for 100 ms without asking for more.
    std::vector<long> seen;
    std::string error;
    asio::co_spawn(
        strand,
        [&]() -> asio::awaitable<void> {
            for (int b = 0; b < batches; ++b) {
                auto rows = co_await feed.next();
                if (rows.size() != 2u) {
                    error = "batch " + std::to_string(b) + ": " + std::to_string(rows.size()) + " rows";
                    break;
                }
                asio::steady_timer publishing(strand, 100ms);
                co_await publishing.async_wait(asio::use_awaitable);
                seen.push_back(changes_requests());
            }
            feed.stop();
            server.stop();
        },
        [&](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (std::exception const& x) {
                    error = x.what();
                }
            }
        });
    io.run_for(30s);
    BOOST_TEST(error.empty(), error);
    BOOST_REQUIRE_EQUAL(seen.size(), static_cast<std::size_t>(batches));
    BOOST_TEST(seen[0] == 1); // before the check of the database: nothing ahead
    for (int b = 1; b + 1 < batches; ++b) {
        BOOST_TEST_CONTEXT("batch " << b) { BOOST_TEST(seen[b] == b + 2); }
    }
    // The last batch says it drained the feed: the continuous request is
    // not sent ahead (it would wait for changes, not prepare a batch).
    BOOST_TEST(seen[batches - 1] == batches);
    BOOST_TEST(server.connections == 1); // every request on the kept connection
}

// A catch-up of 20 batches, then the continuous feed: all on one
// connection (before the client: one connection per batch, 21 in all).
BOOST_AUTO_TEST_CASE(catch_up_batches_reuse_one_connection) {
    constexpr int batches = 20;
    asio::io_context io;
    fault_server server(io);
    push_batches(server, batches);
    server.push({w(chunked_200), w(chunk(row_line("live", "99-x"))), hold()});
    metrics::registry reg;
    auto cl = client_of(io, server, reg);
    auto opt = options_for("db");
    opt.batch_limit = 2;
    std::vector<feed_run> runs;
    runs.emplace_back(io);
    runs[0].feed = std::make_unique<couch::changes_feed>(runs[0].strand, cl, opt, reg);
    bool const finished = drive(io, server, runs, [](auto const& ids) { return has(ids, "live"); });
    BOOST_TEST(finished);
    BOOST_TEST(runs[0].error.empty(), runs[0].error);
    BOOST_TEST(runs[0].ids.size() == 2u * batches + 1);
    auto const changes = std::count_if(server.targets.begin(), server.targets.end(),
                                       [](auto const& t) { return t.find("/_changes") != std::string::npos; });
    BOOST_TEST(changes == batches + 1);
    // The figure docs/BENCHMARKS.md quotes (--log_level=message).
    BOOST_TEST_MESSAGE("catch-up of " << batches << " batches and the continuous feed: " << server.targets.size()
                                      << " requests on " << server.connections << " connection(s)");
    BOOST_TEST(server.connections == 1);
    BOOST_TEST(cl->stats().connections_opened == 1u);
    // Every request after the first on the kept one (the batches, the
    // db check before following, the continuous feed).
    BOOST_TEST(cl->stats().reused == server.targets.size() - 1);
    BOOST_TEST(runs[0].feed->status().reconnects == 0u);
}

// A kept connection the server closed meanwhile is replaced without a
// reconnect counted (every answer here closes its connection).
BOOST_AUTO_TEST_CASE(a_kept_connection_the_server_closed_is_replaced_silently) {
    asio::io_context io;
    fault_server server(io);
    for (int b = 0; b < 3; ++b) {
        auto const s = std::to_string(b + 1) + "-x";
        server.push({w(status_response(200, normal_body({{"d" + std::to_string(b), s}}, s, 2 - b))), close_now()});
    }
    server.push({w(chunked_200), w(chunk(row_line("live", "9-x"))), hold()});
    metrics::registry reg;
    couch::client_config cfg;
    cfg.url = server.url();
    auto cl = std::make_shared<couch::client>(io.get_executor(), cfg, nullptr, &reg);
    auto opt = options_for("db");
    opt.batch_limit = 1;
    std::vector<feed_run> runs;
    runs.emplace_back(io);
    runs[0].feed = std::make_unique<couch::changes_feed>(runs[0].strand, cl, opt, reg);
    bool const finished = drive(io, server, runs, [](auto const& ids) { return has(ids, "live"); });
    BOOST_TEST(finished);
    BOOST_TEST((runs[0].ids == std::vector<std::string>{"d0", "d1", "d2", "live"}));
    BOOST_TEST(runs[0].feed->status().reconnects == 0u);
    BOOST_TEST(server.connections == 4);
}

BOOST_AUTO_TEST_SUITE_END()
