// The server-wide requests of discovery against the scripted server:
// _all_dbs in pages, GET /{db} existence, the continuous _db_updates feed
// replaying the CouchDB 3.4.3 recordings, and the answers that mean "no
// _db_updates here".
#include "couch/databases.hpp"
#include "couch/db_updates_feed.hpp"
#include "couch/http_session.hpp"
#include "couch/url.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "fault_server.hpp"
#include "wire.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace couch_test;

namespace {

std::string recording(std::string const& name) {
    return test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + name);
}

// A whole answer, then the server closes (no keep-alive to get wrong).
script answer(int code, std::string const& body) {
    auto r = status_response(code, body);
    r.insert(r.find("\r\n") + 2, "Connection: close\r\n");
    return {w(r), close_now()};
}

std::string percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
            i += 2;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

std::string query_param(std::string const& target, std::string const& name) {
    auto const q = target.find('?');
    if (q == std::string::npos) {
        return {};
    }
    std::string_view rest(target);
    rest.remove_prefix(q + 1);
    while (!rest.empty()) {
        auto const amp = std::min(rest.find('&'), rest.size());
        auto const kv = rest.substr(0, amp);
        if (kv.starts_with(name + "=")) {
            return percent_decode(kv.substr(name.size() + 1));
        }
        rest.remove_prefix(std::min(amp + 1, rest.size()));
    }
    return {};
}

// _all_dbs the way CouchDB 3 pages it: byte order, start_key a JSON string
// and inclusive, limit a count (recordings 16a-16c).
std::optional<script> couch_all_dbs(std::vector<std::string> const& names, std::string const& target) {
    if (!target.starts_with("/_all_dbs")) {
        return std::nullopt;
    }
    auto it = names.begin();
    if (auto key = query_param(target, "start_key"); !key.empty()) {
        auto const from = std::string(boost::json::parse(key).as_string());
        it = std::lower_bound(names.begin(), names.end(), from);
    }
    std::size_t limit = names.size();
    if (auto l = query_param(target, "limit"); !l.empty()) {
        limit = std::stoul(l);
    }
    boost::json::array page;
    for (; it != names.end() && page.size() < limit; ++it) {
        page.emplace_back(*it);
    }
    return answer(200, boost::json::serialize(page));
}

// Runs `work` on `io` (with the server) until it completes or 20 s pass.
template <class T>
std::optional<T> run(asio::io_context& io, asio::awaitable<T> work, fault_server& server) {
    std::optional<T> out;
    asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, T v) {
        if (!e) {
            out = std::move(v);
        }
    });
    auto const deadline = std::chrono::steady_clock::now() + 20s;
    while (!out && std::chrono::steady_clock::now() < deadline) {
        io.run_for(10ms);
    }
    server.stop();
    io.run_for(50ms);
    return out;
}

couch::client_config config_for(fault_server const& s) {
    couch::client_config c;
    c.url = s.url();
    return c;
}

} // namespace

BOOST_AUTO_TEST_SUITE(discovery_requests)

BOOST_AUTO_TEST_CASE(all_dbs_is_listed_in_pages_through_start_key_and_limit) {
    std::vector<std::string> names{"_global_changes", "_replicator", "_users"};
    for (int i = 0; i < 2345; ++i) {
        char n[16];
        std::snprintf(n, sizeof n, "db-%05d", i);
        names.emplace_back(n);
    }
    asio::io_context io;
    fault_server server(io);
    server.route = [&](std::string const&, std::string const& target) { return couch_all_dbs(names, target); };
    couch::http_session session(io.get_executor(), config_for(server), 10s);
    auto r = run(io, couch::list_all_dbs(session, 1000), server);
    BOOST_REQUIRE(r);
    BOOST_TEST(r->error.empty(), r->error);
    BOOST_TEST(r->names == names, boost::test_tools::per_element());
    BOOST_TEST(r->pages == 3u);
    BOOST_REQUIRE_EQUAL(server.targets.size(), 3u);
    BOOST_TEST(server.targets[0] == "/_all_dbs?limit=1000");
    BOOST_TEST(server.targets[1] == "/_all_dbs?start_key=%22db-00996%22&limit=1001");
    BOOST_TEST(server.targets[2] == "/_all_dbs?start_key=%22db-01996%22&limit=1001");
    // Basic authentication from the URL on every request.
    for (auto const& a : server.auth_headers) {
        BOOST_TEST(a == "Authorization: Basic " + couch::base64("u:s3cret"));
    }
}

BOOST_AUTO_TEST_CASE(a_server_that_ignores_paging_is_listed_in_one_request) {
    // pouchdb-server: start_key and limit are ignored, everything comes back.
    std::vector<std::string> names{"_replicator", "_users", "a", "b", "c", "d", "e"};
    asio::io_context io;
    fault_server server(io);
    server.route = [&](std::string const&, std::string const&) { return couch_all_dbs(names, "/_all_dbs"); };
    couch::http_session session(io.get_executor(), config_for(server), 10s);
    auto r = run(io, couch::list_all_dbs(session, 2), server);
    BOOST_REQUIRE(r);
    BOOST_TEST(r->error.empty());
    BOOST_TEST(r->names == names, boost::test_tools::per_element());
    BOOST_TEST(r->pages == 1u);
}

BOOST_AUTO_TEST_CASE(a_failed_listing_says_why_and_is_never_a_short_list) {
    for (auto const& [code, body, want] : std::vector<std::tuple<int, std::string, std::string>>{
             {500, R"({"error":"unknown_error","reason":"emfile"})", "HTTP 500: unknown_error: emfile"},
             {401, R"({"error":"unauthorized","reason":"You are not a server admin."})", "HTTP 401"},
             {200, R"({"not":"a list"})", "not a JSON array"},
         }) {
        asio::io_context io;
        fault_server server(io);
        int n = 0;
        server.route = [&, code = code, body = body](std::string const&, std::string const&) {
            // The first page is fine, the second fails.
            return n++ == 0 ? answer(200, R"(["a","b"])") : answer(code, body);
        };
        couch::http_session session(io.get_executor(), config_for(server), 10s);
        auto r = run(io, couch::list_all_dbs(session, 2), server);
        BOOST_REQUIRE(r);
        BOOST_TEST(r->error.find(want) != std::string::npos, r->error);
        BOOST_TEST(r->error.find("s3cret") == std::string::npos);
        BOOST_TEST(r->status == (code == 200 ? 0u : static_cast<unsigned>(code)));
    }
}

BOOST_AUTO_TEST_CASE(database_existence_is_200_or_404_and_unknown_otherwise) {
    asio::io_context io;
    fault_server server(io);
    server.route = [](std::string const&, std::string const& target) -> std::optional<script> {
        if (target == "/there") {
            return answer(200, R"({"db_name":"there","update_seq":"1-x"})");
        }
        if (target == "/a%2Fb") {
            return answer(404, R"({"error":"not_found","reason":"Database does not exist."})");
        }
        return answer(500, R"({"error":"unknown_error","reason":"emfile"})");
    };
    couch::http_session session(io.get_executor(), config_for(server), 10s);
    auto all = [&]() -> asio::awaitable<std::vector<std::optional<bool>>> {
        std::vector<std::optional<bool>> out;
        out.push_back(co_await couch::database_exists(session, "there"));
        out.push_back(co_await couch::database_exists(session, "a/b"));
        out.push_back(co_await couch::database_exists(session, "busy"));
        co_return out;
    };
    auto r = run(io, all(), server);
    BOOST_REQUIRE(r);
    BOOST_REQUIRE_EQUAL(r->size(), 3u);
    BOOST_TEST(((*r)[0] == std::optional<bool>(true)));
    BOOST_TEST(((*r)[1] == std::optional<bool>(false)));
    BOOST_TEST(!(*r)[2].has_value());
}

BOOST_AUTO_TEST_CASE(cookie_auth_logs_in_once_and_again_after_a_401) {
    asio::io_context io;
    fault_server server(io);
    int lists = 0;
    server.route = [&](std::string const&, std::string const& target) -> std::optional<script> {
        if (target == "/_session") {
            return script{w("HTTP/1.1 200 OK\r\nSet-Cookie: AuthSession=abc; Path=/\r\nContent-Length: 11\r\n"
                            "Connection: close\r\n\r\n{\"ok\":true}"),
                          close_now()};
        }
        return ++lists == 2 ? answer(401, R"({"error":"unauthorized"})") : answer(200, R"(["x"])");
    };
    auto cfg = config_for(server);
    cfg.auth = couch::client_config::auth_mode::cookie;
    couch::http_session session(io.get_executor(), cfg, 10s);
    auto twice = [&]() -> asio::awaitable<std::size_t> {
        auto a = co_await couch::list_all_dbs(session);
        auto b = co_await couch::list_all_dbs(session);
        co_return a.names.size() + b.names.size();
    };
    auto r = run(io, twice(), server);
    BOOST_REQUIRE(r);
    BOOST_TEST(*r == 2u);
    std::vector<std::string> const want{"/_session", "/_all_dbs?limit=1000", "/_all_dbs?limit=1000", "/_session",
                                        "/_all_dbs?limit=1000"};
    BOOST_TEST(server.targets == want, boost::test_tools::per_element());
    BOOST_TEST(server.methods[0] == "POST");
    BOOST_TEST(server.bodies[0] == R"({"name":"u","password":"s3cret"})");
}

BOOST_AUTO_TEST_CASE(db_updates_15b_live_recreate_then_the_watchdog) {
    asio::io_context io;
    fault_server server(io);
    server.route = [](std::string const&, std::string const& target) -> std::optional<script> {
        if (target.starts_with("/_db_updates")) {
            return script{w(recording("15b_db_updates_continuous_since_now_live.http")), hold()};
        }
        return std::nullopt;
    };
    couch::http_session session(io.get_executor(), config_for(server), 10s);
    couch::db_updates_feed feed(session, 200ms);
    struct result {
        couch::db_updates_feed::opened outcome;
        std::vector<couch::db_update> events;
        std::string error;
        bool stalled_error = false;
        std::string last_seq;
    };
    auto follow = [&]() -> asio::awaitable<result> {
        result out;
        auto o = co_await feed.open(couch::since::now());
        out.outcome = o.outcome;
        while (o.outcome == couch::db_updates_feed::opened::ok) {
            auto b = co_await feed.next();
            out.events.insert(out.events.end(), b.events.begin(), b.events.end());
            if (!b.error.empty() || b.ended) {
                out.error = b.error;
                break;
            }
        }
        out.last_seq = feed.last_seq().raw_json();
        co_return out;
    };
    auto r = run(io, follow(), server);
    BOOST_REQUIRE(r);
    BOOST_TEST((r->outcome == couch::db_updates_feed::opened::ok));
    BOOST_REQUIRE(!server.targets.empty());
    BOOST_TEST(server.targets[0] == "/_db_updates?feed=continuous&heartbeat=200&since=now");
    std::vector<std::string> got;
    for (auto const& e : r->events) {
        got.push_back(e.db_name + " " + e.type_name);
    }
    std::vector<std::string> const want{"fx_c created", "_dbs updated", "fx_c updated", "fx_c deleted",
                                        "_dbs updated", "_dbs updated", "fx_c created", "fx_c updated"};
    BOOST_TEST(got == want, boost::test_tools::per_element());
    BOOST_TEST(r->last_seq.starts_with("\"968-g1AAAA"));
    // The recording ends without a terminator and the server holds the
    // socket: the watchdog ends the wait.
    BOOST_TEST(r->error.find("within") != std::string::npos, r->error);
}

BOOST_AUTO_TEST_CASE(no_usable_db_updates_is_unsupported_and_trouble_is_failed) {
    struct want_case {
        std::string answer_raw; // empty: nobody listens
        couch::db_updates_feed::opened outcome;
        std::string says;
    };
    auto const r15d = recording("15d_db_updates_no_global_changes.http");
    std::vector<want_case> const cases{
        {r15d, couch::db_updates_feed::opened::unsupported, "HTTP 404: not_found: Database does not exist."},
        // pouchdb-server 4.2: 400 with an empty chunked body.
        {"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         couch::db_updates_feed::opened::unsupported, "HTTP 400"},
        {status_response(401, R"({"error":"unauthorized","reason":"You are not a server admin."})"),
         couch::db_updates_feed::opened::unsupported, "You are not a server admin."},
        {status_response(500, R"({"error":"unknown_error","reason":"emfile"})"),
         couch::db_updates_feed::opened::failed, "emfile"},
        {"", couch::db_updates_feed::opened::failed, "cannot connect"},
    };
    for (auto const& c : cases) {
        asio::io_context io;
        fault_server server(io);
        auto const url = server.url();
        server.route = [&](std::string const&, std::string const&) { return script{w(c.answer_raw), close_now()}; };
        if (c.answer_raw.empty()) {
            server.stop(); // connection refused
        }
        couch::client_config cfg;
        cfg.url = url;
        couch::http_session session(io.get_executor(), cfg, 10s);
        couch::db_updates_feed feed(session, 500ms);
        auto r = run(io, feed.open(couch::since::from(couch::seq::from_raw_json("\"5-abc\""))), server);
        BOOST_REQUIRE(r);
        BOOST_TEST_CONTEXT(c.says) {
            BOOST_TEST((r->outcome == c.outcome));
            BOOST_TEST(r->message.find(c.says) != std::string::npos, r->message);
            BOOST_TEST(r->message.find("s3cret") == std::string::npos);
        }
        if (!c.answer_raw.empty()) {
            BOOST_TEST(server.targets.at(0) == "/_db_updates?feed=continuous&heartbeat=500&since=5-abc");
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
