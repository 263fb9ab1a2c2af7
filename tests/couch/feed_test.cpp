// The feed against a small in-test CouchDB-protocol server that follows a
// script per connection: write bytes, pause, close, or hold the socket open.
#include "couch/changes_feed.hpp"
#include "metrics/registry.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <deque>
#include <set>
#include <functional>
#include <string>
#include <vector>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

#include "fault_feed.hpp"
#include "fault_server.hpp"
#include "wire.hpp"

namespace {

using namespace couch_test;
using namespace couch_fault_feed;

bool contains(std::string const& s, std::string_view part) { return s.find(part) != std::string::npos; }

} // namespace

BOOST_AUTO_TEST_SUITE(feed)

BOOST_AUTO_TEST_CASE(catches_up_in_batches_then_follows_with_split_chunks) {
    asio::io_context io;
    fault_server server(io);
    // Batch 1 (limit 2, pending 1), batch 2 (1 row, pending 0), then continuous.
    auto b1 = normal_body({{"a/b", "1-x"}, {"c", "2-x"}}, "2-x", 1);
    server.push({w(chunked_200), w(chunk(b1.substr(0, 30))), w(chunk(b1.substr(30))), w(chunk("\n")), w("0\r\n\r\n")});
    auto b2 = normal_body({{"d", "3-x"}}, "3-x", 0);
    server.push({w(status_response(200, b2))});
    auto live = row_line("e", "4-x") + "\n" + row_line("f", "5-x");
    server.push({w(chunked_200), w(chunk("\n")), w(chunk(live.substr(0, 7))), pause_for(20ms),
                 w(chunk(live.substr(7, 100))), w(chunk(live.substr(107))), hold()});
    auto const out = drive(server, io, fast_options(), 5);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST((out.ids == std::vector<std::string>{"a/b", "c", "d", "e", "f"}));
    BOOST_TEST(out.seqs.back() == "\"5-x\"");
    BOOST_TEST((out.status.state == couch::feed_state::stopped));
    BOOST_REQUIRE_GE(server.targets.size(), 4u);
    BOOST_TEST(contains(server.targets[0], "feed=normal"));
    BOOST_TEST(contains(server.targets[0], "include_docs=true"));
    BOOST_TEST(contains(server.targets[0], "limit=2"));
    BOOST_TEST(contains(server.targets[0], "since=0"));
    BOOST_TEST(contains(server.targets[1], "/db")); // db check before resuming from a seq
    BOOST_TEST(contains(server.targets[2], "since=2-x"));
    BOOST_TEST(contains(server.targets[3], "feed=continuous"));
    BOOST_TEST(contains(server.targets[3], "heartbeat=150"));
    BOOST_TEST(contains(server.targets[3], "since=3-x"));
    BOOST_TEST(server.auth_headers[0] == "Authorization: Basic dTpzM2NyZXQ=");
    BOOST_TEST(!contains(out.status.last_error, "s3cret"));
}

// The state hook (what a pipeline refreshes its /status snapshot on, so
// that the fleet sees a caught-up feed at once): called on the feed's
// executor at each change of state, never twice for one state, with
// status() already telling the new state.
BOOST_AUTO_TEST_CASE(the_state_hook_reports_each_change_once_as_it_happens) {
    asio::io_context io;
    fault_server server(io);
    server.push({w(status_response(200, normal_body({{"a", "1-x"}}, "1-x", 0)))});
    server.push({w(chunked_200), w(chunk("\n")), hold()}); // continuous, silent: no row comes
    auto strand = asio::make_strand(io);
    metrics::registry registry;
    couch::client_config cfg;
    cfg.url = server.url();
    couch::changes_feed feed(strand, cfg, fast_options(), registry);
    std::vector<couch::feed_state> seen;
    bool consistent = true;
    bool on_strand = true;
    feed.on_state_change([&](couch::feed_state s) {
        seen.push_back(s);
        consistent = consistent && feed.status().state == s;
        on_strand = on_strand && strand.running_in_this_thread();
    });
    std::vector<std::string> ids;
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            for (;;) {
                for (auto& r : co_await feed.next()) {
                    ids.push_back(r.id);
                }
            }
        } catch (std::exception const&) {
        }
    }, asio::detached);
    // Until the hook says `following`; next() is still waiting for a row then.
    auto const deadline = std::chrono::steady_clock::now() + 30s;
    while ((seen.empty() || seen.back() != couch::feed_state::following) &&
           std::chrono::steady_clock::now() < deadline) {
        io.run_for(5ms);
    }
    auto const until_following = seen;
    asio::post(strand, [&] {
        feed.stop();
        server.stop();
    });
    io.run_for(200ms);
    feed.on_state_change({});

    BOOST_REQUIRE(!until_following.empty());
    BOOST_TEST((until_following.back() == couch::feed_state::following));
    BOOST_TEST((std::find(until_following.begin(), until_following.end(), couch::feed_state::catching_up) !=
                until_following.end()));
    BOOST_TEST((ids == std::vector<std::string>{"a"}));
    BOOST_TEST((seen.back() == couch::feed_state::stopped));
    for (std::size_t i = 1; i < seen.size(); ++i) {
        BOOST_TEST((seen[i] != seen[i - 1]), "state " << static_cast<int>(seen[i]) << " reported twice in a row");
    }
    BOOST_TEST(consistent);
    BOOST_TEST(on_strand);
}

BOOST_AUTO_TEST_CASE(stall_reset_5xx_and_last_seq_reconnect_from_the_last_row) {
    asio::io_context io;
    fault_server server(io);
    auto const empty_batch = [](std::string const& last) { return status_response(200, normal_body({}, last, 0)); };
    // since=0 catch-up: nothing; continuous: row a then stall (watchdog).
    server.push({w(empty_batch("0"))});
    server.push({w(chunked_200), w(chunk(row_line("a", "1-x"))), hold()});
    // After the stall: catch-up from 1-x, then continuous: row b and half of c, then reset.
    server.push({w(empty_batch("1-x"))});
    server.push({w(chunked_200), w(chunk(row_line("b", "2-x") + row_line("c", "3-x").substr(0, 20))), close_now()});
    // A 503, then catch-up, then continuous c and a last_seq end.
    server.push({w(status_response(503, R"({"error":"unavailable","reason":"try later"})"))});
    server.push({w(empty_batch("2-x"))});
    server.push({w(chunked_200), w(chunk(row_line("c", "3-x"))), w(chunk("{\"last_seq\":\"3-x\",\"pending\":0}\n")),
                 w("0\r\n\r\n"), hold()});
    server.push({w(empty_batch("3-x"))});
    server.push({w(chunked_200), w(chunk(row_line("d", "4-x"))), hold()});
    metrics::registry reg;
    auto const out = drive(server, io, fast_options(), 4, std::nullopt, &reg);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b", "c", "d"})); // none lost, duplicated, reordered
    BOOST_TEST(out.status.reconnects >= 4u);
    auto const text = reg.expose();
    BOOST_TEST(contains(text, R"(couch_bridge_couch_reconnects_total{database="db",reason="stall"} 1)"), text);
    BOOST_TEST(contains(text, R"(couch_bridge_couch_reconnects_total{database="db",reason="closed"} 1)"));
    BOOST_TEST(contains(text, R"(couch_bridge_couch_reconnects_total{database="db",reason="http_5xx"} 1)"));
    BOOST_TEST(contains(text, R"(couch_bridge_couch_reconnects_total{database="db",reason="last_seq"} 1)"));
    BOOST_TEST(contains(text, R"(couch_bridge_couch_rows_read_total{database="db"} 4)"));
    bool resumed_from_c = false;
    for (auto const& t : server.targets) {
        resumed_from_c = resumed_from_c || (contains(t, "feed=continuous") && contains(t, "since=3-x"));
    }
    BOOST_TEST(resumed_from_c);
}

BOOST_AUTO_TEST_CASE(unauthorized_is_a_visible_state) {
    asio::io_context io;
    fault_server server(io);
    for (int i = 0; i < 50; ++i) {
        server.push({w(status_response(401, R"({"error":"unauthorized","reason":"Name or password is incorrect."})"))});
    }
    auto const out = drive(server, io, fast_options(), 1, couch::feed_state::unauthorized);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.ids.empty());
    BOOST_TEST(contains(out.status.last_error, "Name or password is incorrect"), out.status.last_error);
    BOOST_TEST(contains(out.status.last_error, "database 'db'"));
    BOOST_TEST(!contains(out.status.last_error, "s3cret"));
}

namespace {
std::string const not_found = status_response(404, R"({"error":"not_found","reason":"Database does not exist."})");
std::string const emfile_500 =
    status_response(500, R"({"error":"emfile","reason":"Too many open files"})");
bool never(outcome const& o, couch::feed_state s) { return o.states_seen.count(s) == 0; }
} // namespace

BOOST_AUTO_TEST_CASE(in_body_500_emfile_backs_off_and_resumes_from_the_last_row) {
    asio::io_context io;
    fault_server server(io);
    server.push({w(status_response(200, normal_body({{"a", "1-x"}}, "1-x", 0)))});
    // The bug-1 shape: a live feed, then a whole 500 response written into its body.
    server.push({w(chunked_200), w(chunk(row_line("b", "2-x"))), w(chunk("\n")), w(emfile_500), hold()});
    server.push({w(status_response(200, normal_body({{"c", "3-x"}}, "3-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("d", "4-x"))), hold()});
    metrics::registry reg;
    auto const out = drive(server, io, fast_options(), 4, std::nullopt, &reg);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b", "c", "d"})); // nothing lost, nothing repeated
    BOOST_TEST(never(out, couch::feed_state::db_missing));
    BOOST_TEST(never(out, couch::feed_state::failed));
    bool resumed_from_b = false;
    for (auto const& t : server.targets) {
        resumed_from_b = resumed_from_b || (contains(t, "feed=normal") && contains(t, "since=2-x"));
    }
    BOOST_TEST(resumed_from_b);
    auto const text = reg.expose();
    BOOST_TEST(contains(text, R"(couch_bridge_couch_reconnects_total{database="db",reason="in_body_response"} 1)"), text);
    BOOST_TEST(contains(text, R"(couch_bridge_source_errors_total{reason="emfile"} 1)"));
    BOOST_TEST(contains(text, R"(couch_bridge_source_errors_total{reason="in_body_response"} 1)"));
    BOOST_TEST(contains(out.status.last_error, "HTTP 500"), out.status.last_error);
    BOOST_TEST(contains(out.status.last_error, "emfile"), out.status.last_error);
}

BOOST_AUTO_TEST_CASE(in_body_404_while_the_database_exists_is_not_missing) {
    asio::io_context io;
    fault_server server(io);
    server.push({w(status_response(200, normal_body({}, "5-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("a", "6-x"))), w(chunk("\n")), w(not_found), hold()});
    server.push({w(status_response(200, normal_body({}, "6-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("b", "7-x"))), hold()});
    auto const out = drive(server, io, fast_options(couch::since::now()), 2);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b"}));
    BOOST_TEST(never(out, couch::feed_state::db_missing));
    BOOST_TEST(never(out, couch::feed_state::failed));
    // GET /db was asked after the stray 404, before _changes again.
    BOOST_TEST(server.db_requests >= 2);
}

BOOST_AUTO_TEST_CASE(the_06k_race_with_a_confirmed_404_is_db_missing) {
    asio::io_context io;
    fault_server server(io);
    // The first GET /db (before the continuous feed) finds it; after the race it is gone.
    server.db_answer = [](int n) { return n == 0 ? status_response(200, R"({"update_seq":"5-x"})") : not_found; };
    server.push({w(status_response(200, normal_body({}, "5-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("a", "6-x"))), w(chunk("\n")), w(not_found), hold()});
    auto const out = drive(server, io, fast_options(couch::since::now()), 2, couch::feed_state::db_missing);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a"}));
    BOOST_TEST(contains(out.status.last_error, "does not exist"), out.status.last_error);
    BOOST_TEST(out.status.last_seq_read == "\"6-x\"", out.status.last_seq_read);
    BOOST_TEST(never(out, couch::feed_state::failed));
}

BOOST_AUTO_TEST_CASE(deleted_confirmed_then_recreated_is_refused_and_never_followed_from_0) {
    asio::io_context io;
    fault_server server(io);
    // Found, then gone (404 confirmed twice), then back with a new incarnation's update_seq.
    server.db_answer = [](int n) {
        if (n == 0) {
            return status_response(200, R"({"update_seq":"5-x"})");
        }
        if (n <= 2) {
            return not_found;
        }
        return status_response(200, R"({"update_seq":"1-y"})");
    };
    server.push({w(status_response(200, normal_body({}, "5-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("a", "6-x"))), w(not_found), hold()});
    auto opt = fast_options(couch::since::now());
    opt.on_recreate = couch::feed_options::recreate_policy::fail;
    auto const out = drive(server, io, opt, 2, couch::feed_state::failed);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.ids.size() == 1u);
    BOOST_TEST(!never(out, couch::feed_state::db_missing));
    BOOST_TEST(contains(out.status.last_error, "was deleted and re-created; refusing to follow the new incarnation"),
               out.status.last_error);
    for (auto const& t : server.targets) {
        BOOST_TEST(!contains(t, "since=0"), t);
    }
}

BOOST_AUTO_TEST_CASE(missing_then_present_again_without_a_new_incarnation_is_followed) {
    asio::io_context io;
    fault_server server(io);
    // 404 confirmed once (a resource error that answered 404?), then back with a higher update_seq.
    server.db_answer = [](int n) {
        return n == 1 ? not_found : status_response(200, R"({"update_seq":"9-x"})");
    };
    server.push({w(status_response(200, normal_body({}, "5-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("a", "6-x"))), w(not_found), hold()});
    server.push({w(status_response(200, normal_body({}, "6-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("b", "7-x"))), hold()});
    auto const out = drive(server, io, fast_options(couch::since::now()), 2);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b"}));
    BOOST_TEST(!never(out, couch::feed_state::db_missing));
    BOOST_TEST(never(out, couch::feed_state::failed));
}

BOOST_AUTO_TEST_CASE(garbage_in_the_body_is_a_protocol_error_with_backoff) {
    asio::io_context io;
    fault_server server(io);
    server.push({w(status_response(200, normal_body({{"a", "1-x"}}, "1-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("b", "2-x"))), w("<html>Bad Gateway</html>\r\n"), hold()});
    server.push({w(status_response(200, normal_body({}, "2-x", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("c", "3-x"))), hold()});
    metrics::registry reg;
    auto const out = drive(server, io, fast_options(), 3, std::nullopt, &reg);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b", "c"}));
    BOOST_TEST(never(out, couch::feed_state::db_missing));
    BOOST_TEST(never(out, couch::feed_state::failed));
    BOOST_TEST(contains(reg.expose(), R"(couch_bridge_couch_reconnects_total{database="db",reason="bad_response"} 1)"));
}

BOOST_AUTO_TEST_CASE(a_lower_update_seq_prefix_alone_is_not_a_recreate_on_couchdb_2) {
    // On an n=3 cluster a lagging shard copy can answer GET /db with a lower
    // sum of shard sequences: without a confirmed deletion, follow on.
    asio::io_context io;
    fault_server server(io);
    server.db_info = R"({"db_name":"db","update_seq":"2-g1AAAA"})";
    server.push({w(status_response(200, normal_body({{"a", "8-g1AAAA"}}, "8-g1AAAA", 0)))});
    server.push({w(chunked_200), w(chunk(row_line("b", "9-g1AAAA"))), hold()});
    auto const out = drive(server, io, fast_options(couch::since::from(couch::seq::from_raw_json("\"7-g1AAAA\""))), 2);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b"}));
    BOOST_TEST(never(out, couch::feed_state::failed));
}

BOOST_AUTO_TEST_CASE(recreated_db_with_integer_seqs_detected_by_update_seq) {
    // One node, one counter (PouchDB, CouchDB 1.x): an update_seq below the
    // position can only be a new incarnation.
    asio::io_context io;
    fault_server server(io);
    server.db_info = R"({"db_name":"db","update_seq":2})";
    auto opt = fast_options(couch::since::from(couch::seq::from_raw_json("7")));
    opt.on_recreate = couch::feed_options::recreate_policy::fail;
    auto const out = drive(server, io, opt, 1, couch::feed_state::failed);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(contains(out.status.last_error, "re-created"), out.status.last_error);
    for (auto const& t : server.targets) {
        BOOST_TEST(!contains(t, "_changes"), t);
    }
}

// The update_seq of a CouchDB 3.4.3 database before and after it was deleted
// and re-created (recordings 17a, 17b): every shard uuid changed.
std::string update_seq_of(std::string const& recording) {
    auto const text = test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + recording);
    auto const body = boost::json::parse(text.substr(text.find("\r\n\r\n") + 4));
    return boost::json::serialize(body.at("update_seq"));
}

BOOST_AUTO_TEST_CASE(recreate_proven_by_shard_uuids_restarts_from_0_by_default) {
    auto const before = update_seq_of("17a_db_info_before_recreate.http");
    auto const after = update_seq_of("17b_db_info_after_recreate.http");
    {
        asio::io_context io;
        fault_server server(io);
        server.db_info = R"({"db_name":"fx_r","update_seq":)" + after + "}";
        server.push({w(status_response(200, normal_body({{"new-1", "1-y"}}, "1-y", 0)))});
        server.push({w(chunked_200), hold()});
        metrics::registry reg;
        // No 404 was ever seen: the uuids alone prove the new incarnation.
        auto const out = drive(server, io, fast_options(couch::since::from(couch::seq::from_raw_json(before))), 1,
                               std::nullopt, &reg);
        BOOST_TEST(!out.timed_out);
        BOOST_TEST((out.ids == std::vector<std::string>{"new-1"}));
        BOOST_REQUIRE(!server.targets.empty());
        bool from_0 = false;
        for (auto const& t : server.targets) {
            from_0 = from_0 || (contains(t, "_changes") && contains(t, "since=0"));
        }
        BOOST_TEST(from_0);
        BOOST_TEST(out.status.recreated == 1u);
        BOOST_TEST(contains(reg.expose(), R"(couch_bridge_databases_recreated_total{database="db"} 1)"));
    }
    {
        asio::io_context io;
        fault_server server(io);
        server.db_info = R"({"db_name":"fx_r","update_seq":)" + after + "}";
        auto opt = fast_options(couch::since::from(couch::seq::from_raw_json(before)));
        opt.on_recreate = couch::feed_options::recreate_policy::fail;
        auto const out = drive(server, io, opt, 1, couch::feed_state::failed);
        BOOST_TEST(!out.timed_out);
        BOOST_TEST(contains(out.status.last_error, "4 new uuid"), out.status.last_error);
        for (auto const& t : server.targets) {
            BOOST_TEST(!contains(t, "_changes"), t);
        }
    }
}

BOOST_AUTO_TEST_CASE(same_shard_uuids_follow_on_even_with_a_lower_prefix) {
    // The same database answering with its own (older) update_seq: the
    // uuids match, so no heuristic may call it re-created.
    auto const before = update_seq_of("17a_db_info_before_recreate.http");
    asio::io_context io;
    fault_server server(io);
    server.db_info = R"({"db_name":"fx_r","update_seq":)" + before + "}";
    server.push({w(status_response(200, normal_body({{"a", "3-y"}}, "3-y", 0)))});
    server.push({w(chunked_200), hold()});
    auto opt = fast_options(couch::since::from(couch::seq::from_raw_json(before)));
    opt.on_recreate = couch::feed_options::recreate_policy::fail;
    auto const out = drive(server, io, opt, 1);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a"}));
    BOOST_TEST(never(out, couch::feed_state::failed));
    BOOST_TEST(out.status.recreated == 0u);
}

BOOST_AUTO_TEST_CASE(many_feeds_hit_by_5xx_at_once_reconnect_within_the_cap_and_recover) {
    asio::io_context io;
    fault_server server(io);
    server.answer_delay = 20ms;
    constexpr int feeds = 200;
    constexpr std::size_t cap = 8;
    // Every feed: a first _changes answered 500 (emfile), then one row. The
    // server answers in connection order, so scripts are per request, not per
    // feed: 200 errors first, then 200 good answers.
    for (int i = 0; i < feeds; ++i) {
        server.push({w(emfile_500)});
    }
    for (int i = 0; i < feeds; ++i) {
        server.push({w(status_response(200, normal_body({{"doc", "1-x"}}, "1-x", 0)))});
    }
    metrics::registry reg;
    couch::source_options so;
    so.max_connecting = cap;
    auto src = std::make_shared<couch::source>("test", so, reg);
    couch::client_config cfg;
    cfg.url = server.url();
    std::vector<std::unique_ptr<couch::changes_feed>> all;
    int done = 0;
    for (int i = 0; i < feeds; ++i) {
        auto o = fast_options();
        o.database = "db" + std::to_string(i);
        all.push_back(std::make_unique<couch::changes_feed>(asio::make_strand(io), cfg, o, reg, src));
    }
    std::vector<std::size_t> rows(feeds, 0);
    for (int i = 0; i < feeds; ++i) {
        asio::co_spawn(io, [&, i]() -> asio::awaitable<void> {
            try {
                auto r = co_await all[i]->next();
                rows[i] = r.size();
            } catch (std::exception const&) {
            }
            if (++done == feeds) {
                for (auto& f : all) {
                    f->stop();
                }
                server.stop();
            }
        }, asio::detached);
    }
    asio::steady_timer deadline(io, 60s);
    bool timed_out = false;
    deadline.async_wait([&](boost::system::error_code ec) {
        if (!ec && done < feeds) {
            timed_out = true;
            for (auto& f : all) {
                f->stop();
            }
            server.stop();
        }
    });
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
        asio::steady_timer t(io);
        while (done < feeds && !timed_out) {
            t.expires_after(5ms);
            co_await t.async_wait(asio::use_awaitable);
        }
        deadline.cancel();
    }, asio::detached);
    io.run();
    BOOST_TEST(!timed_out);
    BOOST_TEST(done == feeds);
    BOOST_TEST(std::count(rows.begin(), rows.end(), 1u) == feeds); // every feed recovered and read its row
    BOOST_TEST(server.max_unanswered <= static_cast<int>(cap), "server saw " << server.max_unanswered);
    BOOST_TEST(server.max_unanswered >= 2); // the cap, not a serial crawl
    auto const text = reg.expose();
    BOOST_TEST(contains(text, "couch_bridge_source_errors_total{reason=\"emfile\"} 200"), text);
    BOOST_TEST(src->status().state == "degraded");
}

BOOST_AUTO_TEST_CASE(oversized_row_fails_naming_db_and_doc) {
    asio::io_context io;
    fault_server server(io);
    server.push({w(status_response(200, normal_body({}, "1-x", 0)))});
    auto big = row_line("huge-doc", "2-x");
    big.insert(big.size() - 3, std::string(5000, ' '));
    server.push({w(chunked_200), w(chunk(row_line("ok", "1-y"))), w(chunk(big)), hold()});
    auto opt = fast_options();
    opt.max_row_bytes = 1000;
    auto const out = drive(server, io, opt, 2, couch::feed_state::failed);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"ok"}));
    BOOST_TEST(contains(out.status.last_error, "huge-doc"), out.status.last_error);
    BOOST_TEST(contains(out.status.last_error, "database 'db'"));
}

BOOST_AUTO_TEST_CASE(refused_connection_backs_off_and_stop_aborts_next) {
    asio::io_context io;
    fault_server server(io);
    auto const port = server.port();
    server.stop(); // nothing listens any more
    metrics::registry reg;
    auto strand = asio::make_strand(io);
    couch::client_config cfg;
    cfg.url = "http://127.0.0.1:" + std::to_string(port);
    couch::changes_feed feed(strand, cfg, fast_options(), reg);
    std::string error;
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            co_await feed.next();
        } catch (boost::system::system_error const& e) {
            error = e.code() == asio::error::operation_aborted ? "aborted" : e.what();
        }
    }, asio::detached);
    asio::steady_timer t(strand);
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        while (feed.status().reconnects < 3) {
            t.expires_after(10ms);
            co_await t.async_wait(asio::use_awaitable);
        }
        feed.stop();
    }, asio::detached);
    io.run();
    BOOST_TEST(error == "aborted");
    BOOST_TEST(contains(reg.expose(), R"(couch_bridge_couch_reconnects_total{database="db",reason="refused"})"));
    BOOST_TEST((feed.status().state == couch::feed_state::stopped));
    BOOST_TEST(contains(reg.expose(), R"(couch_bridge_couch_state{database="db",state="stopped"} 1)"));
}

BOOST_AUTO_TEST_SUITE_END()
