// Discovery against the scripted CouchDB-protocol server: the patterns, the
// _db_updates path (recording 15b: created, deleted, re-created), events
// checked against the server, the startup reconciliation with the stored
// checkpoints, and polling _all_dbs where there is no _db_updates. The
// fleet is replaced by hooks that record what discovery reported.
#include "bridge/discovery.hpp"
#include "checkpoint/store.hpp"
#include "metrics/registry.hpp"
#include "tests/support/test_env.hpp"

#include "tests/couch/fault_server.hpp"
#include "tests/couch/wire.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <functional>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace couch_test;

namespace {

std::string recording(std::string const& name) {
    return test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + name);
}

script answer(int code, std::string const& body) {
    auto r = status_response(code, body);
    r.insert(r.find("\r\n") + 2, "Connection: close\r\n");
    return {w(r), close_now()};
}

struct harness {
    asio::io_context io;
    fault_server server{io};
    metrics::registry registry;
    std::string const dir = test_support::make_temp_dir("discovery");
    std::unique_ptr<checkpoint::store> store = checkpoint::store::open(dir);
    std::vector<std::string> calls; // "found fx_a live", "found fx_a startup", "gone fx_a"
    std::unique_ptr<bridge::discovery> d;

    void start(bridge::discovery_options o) {
        couch::client_config c;
        c.url = server.url();
        o.source_name = "src";
        o.request_timeout = 10s;
        d = std::make_unique<bridge::discovery>(
            io.get_executor(), c, o,
            bridge::discovery_hooks{
                [this](std::string const& db, bool live) {
                    calls.push_back("found " + db + (live ? " live" : " startup"));
                },
                [this](std::string const& db) { calls.push_back("gone " + db); }},
            *store, *store, registry);
        d->start();
    }
    // Runs until `done()` or 30 s; then stops discovery and the server.
    bool run_until(std::function<bool()> const& done) {
        auto const deadline = std::chrono::steady_clock::now() + 30s;
        while (!done() && std::chrono::steady_clock::now() < deadline) {
            io.run_for(10ms);
        }
        bool const ok = done();
        d->stop();
        for (int i = 0; i < 500 && !d->stopped(); ++i) {
            io.run_for(10ms);
        }
        server.stop();
        io.run_for(50ms);
        return ok;
    }
    int count(std::string const& target_prefix) const {
        int n = 0;
        for (auto const& t : server.targets) {
            n += t.starts_with(target_prefix) ? 1 : 0;
        }
        return n;
    }
};

bridge::discovery_options options(std::vector<std::string> patterns, std::vector<std::string> exclude = {}) {
    bridge::discovery_options o;
    o.patterns = std::move(patterns);
    o.exclude_patterns = std::move(exclude);
    o.heartbeat = 200ms;
    o.interval = 100ms;
    return o;
}

} // namespace

BOOST_AUTO_TEST_SUITE(discovery)

BOOST_AUTO_TEST_CASE(patterns_match_whole_names_never_system_databases_and_exclusions_win) {
    bridge::db_matcher m({"fx_.*", "tenant-[0-9]+", "_.*"}, {"fx_x.*"});
    BOOST_TEST(m.matches("fx_a"));
    BOOST_TEST(m.matches("tenant-12"));
    BOOST_TEST(!m.matches("tenant-12a")); // whole name
    BOOST_TEST(!m.matches("xfx_a"));      // whole name
    BOOST_TEST(!m.matches("fx_xy"));      // excluded
    BOOST_TEST(!m.matches("_users"));     // system databases never match
    BOOST_TEST(!m.matches("_global_changes"));
    BOOST_TEST(!m.matches(""));
    BOOST_TEST(bridge::db_matcher({}, {}).empty());
    BOOST_TEST(!bridge::db_matcher({}, {}).matches("a"));
    try {
        bridge::db_matcher bad({"ok.*"}, {"fx_("});
        BOOST_FAIL("a bad pattern was accepted");
    } catch (std::invalid_argument const& e) {
        BOOST_TEST(std::string(e.what()).find("--exclude-db-pattern 'fx_(' is not a valid") != std::string::npos,
                   e.what());
    }
}

BOOST_AUTO_TEST_CASE(db_updates_15b_created_deleted_recreated_drive_the_fleet) {
    harness h;
    // Checkpoints of this source: fx_old matches and is gone from the server
    // (deleted while the bridge was down); other_db does not match; fx_q
    // belongs to another source.
    checkpoint::position pos{"\"5-old\"", 0, "test"};
    BOOST_REQUIRE(!h.store->write({{{"src", "fx_old"}, pos}, {{"src", "other_db"}, pos}, {{"elsewhere", "fx_q"}, pos}}));
    int feeds = 0;
    int fx_c_checks = 0;
    h.server.route = [&](std::string const&, std::string const& target) -> std::optional<script> {
        if (target.starts_with("/_db_updates")) {
            if (feeds++ == 0) {
                return script{w(recording("15b_db_updates_continuous_since_now_live.http")), hold()};
            }
            return script{w(chunked_200), hold()}; // the reopened feed: quiet
        }
        if (target.starts_with("/_all_dbs")) {
            return answer(200, R"(["_global_changes","_replicator","fx_a","other_db"])");
        }
        if (target == "/fx_c") {
            // At each event: created (exists), deleted (gone), created again.
            return ++fx_c_checks == 2 ? answer(404, R"({"error":"not_found","reason":"Database does not exist."})")
                                      : answer(200, R"({"db_name":"fx_c"})");
        }
        return answer(404, R"({"error":"not_found"})");
    };
    h.start(options({"fx_.*"}));
    std::vector<std::string> const want{"gone fx_old", "found fx_a startup", "found fx_c live", "gone fx_c",
                                        "found fx_c live"};
    // The recording ends without a terminator and the server holds the
    // socket: the watchdog reopens the feed from the stored position.
    BOOST_TEST(h.run_until([&] { return h.calls.size() >= want.size() && feeds >= 2; }));
    BOOST_TEST(h.calls == want, boost::test_tools::per_element());
    BOOST_TEST(h.count("/_db_updates?feed=continuous&heartbeat=200&since=now") == 1);
    auto const stored = h.store->get_meta("db_updates_seq:src");
    BOOST_REQUIRE(stored);
    BOOST_TEST(stored->starts_with("\"968-g1AAAA"));
    BOOST_TEST(h.count("/_db_updates?feed=continuous&heartbeat=200&since=968-g1AAAA") == 1);
    // Only lifecycle events of matching databases are checked; "_dbs" is not.
    BOOST_TEST(h.count("/fx_c") == 3);
    BOOST_TEST(h.count("/_dbs") == 0);
    // The listing happened once: the reopened feed resumed from a position.
    BOOST_TEST(h.count("/_all_dbs") == 1);
    auto const s = h.d->status();
    BOOST_TEST(s.at("mode").as_string() == "db_updates");
    BOOST_TEST(s.at("events").as_uint64() == 8u);
    BOOST_TEST(s.at("databases").as_uint64() == 2u); // fx_a, fx_c
}

BOOST_AUTO_TEST_CASE(a_deleted_event_for_a_database_that_exists_again_is_a_new_incarnation) {
    harness h;
    auto line = [](std::string const& db, std::string const& type, std::string const& seq) {
        return chunk(R"({"db_name":")" + db + R"(","type":")" + type + R"(","seq":")" + seq + "\"}\n");
    };
    h.server.route = [&](std::string const&, std::string const& target) -> std::optional<script> {
        if (target.starts_with("/_db_updates")) {
            return script{w(chunked_200 + chunk("\n") + line("fx_r", "deleted", "2-x") +
                            line("fx_gone", "created", "3-x") + line("nomatch", "created", "4-x") +
                            line("fx_r", "updated", "5-x")),
                          hold()};
        }
        if (target.starts_with("/_all_dbs")) {
            return answer(200, R"(["fx_r"])");
        }
        if (target == "/fx_r") {
            return answer(200, R"({"db_name":"fx_r"})"); // deleted and created again since the event
        }
        return answer(404, R"({"error":"not_found","reason":"Database does not exist."})");
    };
    h.start(options({"fx_.*"}));
    BOOST_TEST(h.run_until([&] { return h.store->get_meta("db_updates_seq:src").value_or("") == "\"5-x\""; }));
    std::vector<std::string> const want{"found fx_r startup", "gone fx_r", "found fx_r live"};
    BOOST_TEST(h.calls == want, boost::test_tools::per_element());
    BOOST_TEST(h.count("/fx_gone") == 1); // created, then deleted again: nothing to follow
    BOOST_TEST(h.count("/nomatch") == 0);
}

BOOST_AUTO_TEST_CASE(without_db_updates_all_dbs_is_polled_and_a_failed_listing_removes_nothing) {
    harness h;
    int lists = 0;
    h.server.route = [&](std::string const&, std::string const& target) -> std::optional<script> {
        if (target.starts_with("/_db_updates")) {
            // pouchdb-server 4.2
            return script{w("HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                            "0\r\n\r\n"),
                          close_now()};
        }
        ++lists;
        if (lists == 1) {
            return answer(200, R"(["_users","a1","a2","b1"])");
        }
        if (lists == 2) {
            return answer(500, R"({"error":"unknown_error","reason":"emfile"})");
        }
        if (lists == 3) {
            return answer(200, R"(["a1","a2","a3","b1"])");
        }
        return answer(200, R"(["a2","a3","b1"])");
    };
    h.start(options({"a[0-9]", "b.*"}, {"b.*"}));
    std::vector<std::string> const want{"found a1 startup", "found a2 startup", "found a3 live", "gone a1"};
    BOOST_TEST(h.run_until([&] { return h.calls.size() >= want.size() && lists >= 6; }));
    BOOST_TEST(h.calls == want, boost::test_tools::per_element());
    BOOST_TEST(h.count("/_db_updates") == 1); // asked once, then polled
    auto const s = h.d->status();
    BOOST_TEST(s.at("mode").as_string() == "polling");
    BOOST_TEST(s.at("fallback_reason").as_string().find("HTTP 400") != std::string::npos);
    BOOST_TEST(s.at("last_error").as_string().find("emfile") != std::string::npos);
    BOOST_TEST(s.at("databases").as_uint64() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
