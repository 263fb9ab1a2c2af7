// HTTPS for the feeds and the server-wide requests: certificate and
// host-name verification, ca_file, tls_verify=false, and a CA file that
// cannot be read.
#include "feed_test_server.hpp"

#include <boost/test/unit_test.hpp>

using namespace feed_test;

BOOST_AUTO_TEST_SUITE(tls)

// --- HTTPS ------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(https_with_ca_file_verifies_ip_and_dns_names) {
    auto const m = make_tls_material("DNS:localhost,IP:127.0.0.1");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    for (std::string const host : {"127.0.0.1", "localhost"}) {
        BOOST_TEST_CONTEXT("host " << host) {
            asio::io_context io;
            test_server server(io, simple_couch({{"a", "1-x"}}, "1-x", {{"b", "2-x"}, {"c", "3-x"}}), ctx.get());
            couch::client_config cfg;
            cfg.url = server.url(host);
            cfg.ca_file = ca_file;
            auto const out = drive(server, io, cfg, fast_options(), 3);
            BOOST_TEST(!out.timed_out);
            BOOST_TEST(out.error.empty(), out.error);
            BOOST_TEST((out.ids == std::vector<std::string>{"a", "b", "c"}));
            BOOST_TEST(server.handshake_failures == 0);
            BOOST_REQUIRE(!server.requests.empty());
            // Basic auth travels inside TLS, as it does over plain HTTP.
            BOOST_TEST(server.requests[0].authorization == "Basic dTpzM2NyZXQ=");
        }
    }
}

BOOST_AUTO_TEST_CASE(https_untrusted_certificate_is_refused_by_default) {
    auto const m = make_tls_material("DNS:localhost,IP:127.0.0.1");
    auto ctx = server_context(m);
    asio::io_context io;
    test_server server(io, simple_couch({{"a", "1-x"}}, "1-x", {}), ctx.get());
    couch::client_config cfg;
    cfg.url = server.url(); // no ca_file: the test CA is in no trust store
    auto const out = drive(server, io, cfg, fast_options(), 1,
                           [](couch::feed_status const& s) { return s.reconnects >= 2; });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.ids.empty());
    BOOST_TEST(server.requests.empty()); // no request (and so no credentials) ever sent
    BOOST_TEST(server.handshake_failures >= 1);
    BOOST_TEST(contains(out.status.last_error, "certificate"), out.status.last_error);
    BOOST_TEST(contains(out.status.last_error, "database 'db'"), out.status.last_error);
    check_no_secrets(out, {"s3cret"});
}

BOOST_AUTO_TEST_CASE(https_host_name_mismatch_is_refused) {
    auto const m = make_tls_material("DNS:couch.example.org");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    for (std::string const host : {"127.0.0.1", "localhost"}) {
        BOOST_TEST_CONTEXT("host " << host) {
            asio::io_context io;
            test_server server(io, simple_couch({{"a", "1-x"}}, "1-x", {}), ctx.get());
            couch::client_config cfg;
            cfg.url = server.url(host);
            cfg.ca_file = ca_file; // trusted, but for another name
            auto const out = drive(server, io, cfg, fast_options(), 1,
                                   [](couch::feed_status const& s) { return s.reconnects >= 2; });
            BOOST_TEST(!out.timed_out);
            BOOST_TEST(out.ids.empty());
            BOOST_TEST(server.requests.empty());
            BOOST_TEST(contains(out.status.last_error, "mismatch"), out.status.last_error);
            check_no_secrets(out, {"s3cret"});
        }
    }
}

BOOST_AUTO_TEST_CASE(tls_verify_false_accepts_an_untrusted_certificate_for_another_name) {
    auto const m = make_tls_material("DNS:couch.example.org");
    auto ctx = server_context(m);
    asio::io_context io;
    test_server server(io, simple_couch({{"a", "1-x"}}, "1-x", {{"b", "2-x"}}), ctx.get());
    couch::client_config cfg;
    cfg.url = server.url();
    cfg.tls_verify = false;
    auto const out = drive(server, io, cfg, fast_options(), 2);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b"}));
    BOOST_TEST(server.handshake_failures == 0);
}

BOOST_AUTO_TEST_CASE(unreadable_ca_file_is_a_startup_error_naming_the_file) {
    asio::io_context io;
    metrics::registry reg;
    couch::client_config cfg;
    cfg.url = "https://u:s3cret@127.0.0.1:1";
    cfg.ca_file = test_support::make_temp_dir("couchtls") + "/missing-ca.pem";
    std::string message;
    try {
        couch::changes_feed feed(io.get_executor(), cfg, fast_options(), reg);
    } catch (std::exception const& e) {
        message = e.what();
    }
    BOOST_TEST(contains(message, "missing-ca.pem"), message);
    BOOST_TEST(!contains(message, "s3cret"), message);

    auto const garbage = write_temp("garbage.pem", "not a certificate\n");
    cfg.ca_file = garbage;
    message.clear();
    try {
        couch::changes_feed feed(io.get_executor(), cfg, fast_options(), reg);
    } catch (std::exception const& e) {
        message = e.what();
    }
    BOOST_TEST(contains(message, "garbage.pem"), message);
}

BOOST_AUTO_TEST_CASE(https_with_cookie_auth) {
    auto const m = make_tls_material("IP:127.0.0.1");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    asio::io_context io;
    auto couch = simple_couch({{"a", "1-x"}}, "1-x", {{"b", "2-x"}});
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            return {w(recording("09a_post_session.http"))};
        }
        if (r.cookie != recorded_cookie) {
            return {w(recording("09e_changes_with_bogus_cookie.http"))};
        }
        return couch(r);
    }, ctx.get());
    auto cfg = cookie_config(server);
    cfg.url = "https://127.0.0.1:" + std::to_string(server.port());
    cfg.ca_file = ca_file;
    auto const out = drive(server, io, cfg, fast_options(), 2);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b"}));
    BOOST_TEST(server.count([](auto const& r) { return r.session(); }) == 1u);
}

// The server-wide requests of discovery set TLS up the same way (couch/detail/connection).
BOOST_AUTO_TEST_CASE(discovery_requests_over_https_verify_the_server) {
    auto const m = make_tls_material("DNS:localhost,IP:127.0.0.1");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    for (bool const trusted : {true, false}) {
        BOOST_TEST_CONTEXT("trusted " << trusted) {
            asio::io_context io;
            test_server server(
                io, [](seen_request const&) { return script{w(status_response(200, R"(["a","b"])")), close_now()}; },
                ctx.get());
            couch::client_config cfg;
            cfg.url = server.url("localhost");
            cfg.ca_file = trusted ? ca_file : std::string();
            couch::http_session session(io.get_executor(), cfg, 10s);
            couch::all_dbs_listing got;
            asio::co_spawn(io, couch::list_all_dbs(session), [&](std::exception_ptr, couch::all_dbs_listing r) {
                got = std::move(r);
                server.stop();
            });
            io.run_for(20s);
            if (trusted) {
                BOOST_TEST(got.error.empty(), got.error);
                BOOST_TEST((got.names == std::vector<std::string>{"a", "b"}));
                BOOST_REQUIRE(!server.requests.empty());
                BOOST_TEST(server.requests[0].authorization == "Basic dTpzM2NyZXQ=");
            } else {
                BOOST_TEST(contains(got.error, "TLS certificate of https://localhost:"), got.error);
                BOOST_TEST(contains(got.error, "not accepted"), got.error);
                BOOST_TEST(!contains(got.error, "s3cret"));
                BOOST_TEST(server.requests.empty()); // no request, so no credentials, ever sent
            }
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
