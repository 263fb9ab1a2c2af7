// Cookie auth of a feed: POST /_session, the AuthSession cookie alone on
// every request, renewal on 401, a wrong password, a failed login.
#include "feed_test_server.hpp"

#include <boost/test/unit_test.hpp>

using namespace feed_test;

BOOST_AUTO_TEST_SUITE(cookie_auth)

// --- cookie auth -------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(cookie_login_then_the_cookie_alone_on_every_request) {
    asio::io_context io;
    int changes = 0;
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            return {w(recording("09a_post_session.http"))};
        }
        if (r.cookie != recorded_cookie) { // CouchDB: an unknown cookie is anonymous
            return {w(recording("09e_changes_with_bogus_cookie.http"))};
        }
        if (!r.changes()) {
            return {w(db_info_200), hold()};
        }
        if (++changes == 1) {
            return {w(recording("09b_changes_with_session_cookie.http"))}; // 3 rows, pending 9
        }
        if (changes == 2) {
            return {w(status_response(200, normal_body({{"d", "5-x"}}, "5-x", 0)))};
        }
        return {w(chunked_200), w(chunk(row_line("e", "6-x"))), hold()};
    });
    auto opt = fast_options();
    opt.batch_limit = 3;
    auto const out = drive(server, io, cookie_config(server), opt, 5);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST((out.ids == std::vector<std::string>{"97ce7c4fb05742a7bcfa5c0ce2a4fced",
                                                    "241a8987881b4a7f98408d5c6153e4aa", "_design/x", "d", "e"}));
    BOOST_REQUIRE_GE(server.requests.size(), 3u);
    auto const& login = server.requests[0];
    BOOST_TEST(login.method == "POST");
    BOOST_TEST(login.target == "/_session");
    BOOST_TEST(contains(login.content_type, "application/json"), login.content_type);
    BOOST_TEST(login.body == R"({"name":"admin","password":"s3cret"})");
    BOOST_TEST(login.authorization.empty());
    for (std::size_t i = 1; i < server.requests.size(); ++i) {
        BOOST_TEST_CONTEXT("request " << i << " " << server.requests[i].target) {
            BOOST_TEST(server.requests[i].cookie == recorded_cookie); // name=value only, no attributes
            BOOST_TEST(server.requests[i].authorization.empty());     // never the password again
        }
    }
    BOOST_TEST(server.count([](auto const& r) { return r.session(); }) == 1u); // one login is enough
    std::vector<std::string> changes_targets;
    for (auto const& r : server.requests) {
        if (r.changes()) {
            changes_targets.push_back(r.target);
        }
    }
    BOOST_REQUIRE_GE(changes_targets.size(), 2u);
    BOOST_TEST(contains(changes_targets[1], "since=4-g1AAAA"), changes_targets[1]); // 09b's last_seq
    check_no_secrets(out, {"s3cret", recorded_cookie.substr(12)});
}

BOOST_AUTO_TEST_CASE(cookie_expired_is_renewed_on_401_without_an_unauthorized_state) {
    asio::io_context io;
    std::string const first = "AuthSession=Zmlyc3Q6Y29va2ll", second = "AuthSession=c2Vjb25kOmNvb2tpZQ";
    int logins = 0;
    std::string valid; // the one cookie the server accepts at this moment
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            valid = ++logins == 1 ? first : second;
            return {w(session_ok(valid))};
        }
        if (r.cookie != valid) {
            return {w(recording("09e_changes_with_bogus_cookie.http"))};
        }
        if (!r.changes()) {
            return {w(db_info_200), hold()};
        }
        if (contains(r.target, "feed=normal")) {
            return {w(status_response(200, r.target.ends_with("since=0") ? normal_body({{"a", "1-x"}}, "1-x", 0)
                                                                         : normal_body({}, "2-x", 0)))};
        }
        // The continuous feed: one row, then the session "expires" and the server ends the response.
        valid = "expired";
        return {w(chunked_200), w(chunk(row_line(r.cookie == first ? "b" : "c", r.cookie == first ? "2-x" : "3-x"))),
                w("0\r\n\r\n"), hold()};
    });
    bool saw_unauthorized = false;
    auto const out = drive(server, io, cookie_config(server), fast_options(), 3, [&](couch::feed_status const& s) {
        saw_unauthorized = saw_unauthorized || s.state == couch::feed_state::unauthorized;
        return false;
    });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b", "c"}));
    BOOST_TEST(logins == 2);
    BOOST_TEST(!saw_unauthorized);
    BOOST_TEST(contains(out.metrics, R"(couch_bridge_couch_reconnects_total{database="db",reason="unauthorized"} 0)"),
               out.metrics);
    // After the 401 the same request went out again with the new cookie.
    bool retried_with_second = false;
    for (auto const& r : server.requests) {
        retried_with_second = retried_with_second || (r.changes() && r.cookie == second);
    }
    BOOST_TEST(retried_with_second);
    check_no_secrets(out, {"s3cret", "Zmlyc3Q6Y29va2ll", "c2Vjb25kOmNvb2tpZQ"});
}

BOOST_AUTO_TEST_CASE(cookie_wrong_password_is_unauthorized_with_couchdbs_reason) {
    asio::io_context io;
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            return {w(recording("09d_post_session_wrong_password.http"))};
        }
        return {w(recording("09e_changes_with_bogus_cookie.http"))};
    });
    auto const out = drive(server, io, cookie_config(server), fast_options(), 1, [&](couch::feed_status const& s) {
        return s.state == couch::feed_state::unauthorized && s.reconnects >= 2;
    });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.ids.empty());
    BOOST_TEST(contains(out.status.last_error, "Name or password is incorrect"), out.status.last_error);
    BOOST_TEST(contains(out.status.last_error, "database 'db'"), out.status.last_error);
    // Retried slowly with a new login each time; no _changes without a session.
    BOOST_TEST(server.count([](auto const& r) { return r.session(); }) >= 2u);
    BOOST_TEST(server.count([](auto const& r) { return r.changes(); }) == 0u);
    check_no_secrets(out, {"s3cret"});
}

BOOST_AUTO_TEST_CASE(cookie_login_transport_failure_is_transient_not_unauthorized) {
    asio::io_context io;
    int logins = 0;
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            if (++logins == 1) {
                return {close_now()}; // e.g. a proxy restarting
            }
            return {w(recording("09a_post_session.http"))};
        }
        return simple_couch({{"a", "1-x"}}, "1-x", {})(r);
    });
    auto const out = drive(server, io, cookie_config(server), fast_options(), 1);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a"}));
    BOOST_TEST(logins == 2);
    BOOST_TEST(contains(out.metrics, R"(couch_bridge_couch_reconnects_total{database="db",reason="unauthorized"} 0)"),
               out.metrics);
    BOOST_TEST(contains(out.metrics, R"(couch_bridge_couch_reconnects_total{database="db",reason="closed"} 1)"),
               out.metrics);
}

// A 401 that survives one renewal makes the feed `unauthorized`; once the
// operator fixes the permissions on the server it must recover by itself,
// even though the cookie it holds has expired in the meantime.
BOOST_AUTO_TEST_CASE(cookie_unauthorized_streak_recovers_with_a_fresh_login) {
    asio::io_context io;
    int logins = 0, refusals = 0;
    int fixed_at_login = 0; // cookies from logins after this one are accepted (0: none yet)
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            ++logins;
            return {w(session_ok("AuthSession=login" + std::to_string(logins)))};
        }
        int const n = r.cookie.starts_with("AuthSession=login") ? std::stoi(r.cookie.substr(17)) : 0;
        if (fixed_at_login == 0 || n <= fixed_at_login) {
            if (++refusals == 3) {
                fixed_at_login = logins; // permissions granted; older sessions stay invalid
            }
            return {w(recording("09e_changes_with_bogus_cookie.http"))};
        }
        return simple_couch({{"a", "1-x"}}, "1-x", {})(r);
    });
    bool saw_unauthorized = false;
    auto const out = drive(server, io, cookie_config(server), fast_options(), 1, [&](couch::feed_status const& s) {
        saw_unauthorized = saw_unauthorized || s.state == couch::feed_state::unauthorized;
        return false;
    });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a"}));
    BOOST_TEST(saw_unauthorized);
    BOOST_TEST(logins > fixed_at_login);
}

BOOST_AUTO_TEST_SUITE_END()
