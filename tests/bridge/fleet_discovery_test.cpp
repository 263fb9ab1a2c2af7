// Discovery wired to the real fleet (pipelines, flusher, checkpoint store,
// the in-process Kafka cluster) against the scripted CouchDB-protocol
// server: _db_updates events stop a deleted database's pipeline, record the
// deletion durably, and follow its new incarnation from 0; a --db database
// is never stopped by discovery.
#include "bridge/discovery.hpp"
#include "bridge/fleet.hpp"
#include "bridge/routing.hpp"
#include "checkpoint/flusher.hpp"
#include "checkpoint/store.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/producer.hpp"
#include "metrics/registry.hpp"
#include "tests/support/test_env.hpp"

#include "tests/couch/fault_server.hpp"
#include "tests/couch/wire.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace couch_test;

namespace {

script answer(int code, std::string const& body) {
    auto r = status_response(code, body);
    r.insert(r.find("\r\n") + 2, "Connection: close\r\n");
    return {w(r), close_now()};
}

std::string event(std::string const& db, std::string const& type, std::string const& seq) {
    return R"({"db_name":")" + db + R"(","type":")" + type + R"(","seq":")" + seq + "\"}\n";
}

bool has_target(fault_server const& s, std::string const& prefix, std::string const& part) {
    for (auto const& t : s.targets) {
        if (t.starts_with(prefix) && t.find(part) != std::string::npos) {
            return true;
        }
    }
    return false;
}

} // namespace

BOOST_AUTO_TEST_SUITE(fleet_discovery)

BOOST_AUTO_TEST_CASE(db_updates_events_stop_record_and_restart_a_recreated_database_from_0) {
    asio::io_context io;
    fault_server server(io);
    metrics::registry registry;
    auto store = checkpoint::store::open(test_support::make_temp_dir("fleet-discovery"));
    BOOST_REQUIRE(!store->write({{{"src", "fx_n"}, {"\"5-old\"", 0, "test"}}}));

    int feeds = 0;
    std::string deleted_record; // meta deleted_databases as the re-creation arrives
    std::string const terminator = "0\r\n\r\n";
    server.route = [&](std::string const&, std::string const& target) -> std::optional<script> {
        if (target.starts_with("/_db_updates")) {
            switch (++feeds) {
            case 1: // already known from the listing: nothing to do
                return script{w(chunked_200 + chunk(event("fx_n", "created", "1-a")) + terminator), hold()};
            case 2:
                return script{w(chunked_200 + chunk(event("fx_n", "deleted", "2-a") + event("fx_flag", "deleted", "3-a")) +
                                terminator),
                              hold()};
            case 3:
                deleted_record = store->get_meta("deleted_databases").value_or("");
                return script{w(chunked_200 + chunk(event("fx_n", "created", "4-a"))), hold()};
            default:
                return script{w(chunked_200), hold()};
            }
        }
        if (target.starts_with("/_all_dbs")) {
            return answer(200, R"(["_users","fx_flag","fx_n"])");
        }
        if (target == "/fx_n") {
            return feeds == 2 ? answer(404, R"({"error":"not_found","reason":"Database does not exist."})")
                              : answer(200, R"({"db_name":"fx_n","update_seq":"9-x"})");
        }
        if (target == "/fx_flag") {
            return answer(404, R"({"error":"not_found","reason":"Database does not exist."})");
        }
        return std::nullopt; // _changes: held open, no rows
    };

    kafka::embedded_cluster cluster{1};
    kafka::producer_config pcfg;
    pcfg.bootstrap_servers = cluster.bootstrap_servers();
    kafka::producer producer(io.get_executor(), pcfg, registry);
    auto const routes = bridge::router::from_spec("commcare", {});
    checkpoint::flusher flusher(io.get_executor(), *store, 100ms, registry, "test");
    asio::co_spawn(io, flusher.run(), asio::detached);
    couch::client_config client;
    client.url = server.url();
    couch::feed_options feed;
    feed.heartbeat = 200ms;
    feed.request_timeout = 10s;
    feed.backoff_initial = 50ms;
    feed.slow_retry = 200ms;
    bridge::fleet fleet({io.get_executor(), client, nullptr, "src", "0", {}, feed,
                         {producer, routes, flusher, registry, {}, nullptr}, *store, *store});
    fleet.start({"fx_flag"});
    bridge::discovery_options o;
    o.patterns = {"fx_.*"};
    o.heartbeat = 200ms;
    o.request_timeout = 10s;
    o.source_name = "src";
    bridge::discovery finder(
        io.get_executor(), client, o,
        {[&](std::string const& db, bool live) { fleet.found(db, live); }, [&](std::string const& db) { fleet.gone(db); }},
        *store, *store, registry);
    finder.start();

    auto const deadline = std::chrono::steady_clock::now() + 30s;
    bool restarted = false;
    while (!restarted && std::chrono::steady_clock::now() < deadline) {
        io.run_for(20ms);
        restarted = has_target(server, "/fx_n/_changes", "since=0");
    }
    // The reaper refreshes its gauges about once a second.
    for (int i = 0; i < 500 && registry.expose().find("couch_bridge_databases{state=\"following\"} 2\n") ==
                                    std::string::npos;
         ++i) {
        io.run_for(20ms);
    }
    auto const all = boost::json::parse(fleet.describe_all()).at("databases").as_object();
    auto const checkpoint_after = store->get({"src", "fx_n"});
    auto const record_after = store->get_meta("deleted_databases").value_or("");
    auto const metrics = registry.expose();
    finder.stop();
    fleet.stop_all();
    for (int i = 0; i < 100 && (!finder.stopped() || fleet.in_flight() > 0); ++i) {
        io.run_for(10ms);
    }
    io.run_for(500ms); // the pipelines' run() ends
    flusher.stop();
    server.stop();
    io.run_for(200ms);

    BOOST_TEST(restarted);
    // First followed from its checkpoint (found at startup), then from 0.
    BOOST_TEST(has_target(server, "/fx_n/_changes", "since=5-old"));
    BOOST_TEST(deleted_record.find("\"fx_n\"") != std::string::npos, deleted_record);
    BOOST_TEST(deleted_record.find("5-old") != std::string::npos, deleted_record);
    BOOST_TEST(deleted_record.find("fx_flag") == std::string::npos, deleted_record);
    BOOST_TEST(record_after == "{}");
    BOOST_TEST(!checkpoint_after.has_value()); // the old incarnation's position is gone
    BOOST_TEST(all.at("fx_n").at("desired").as_string() == "following");
    BOOST_TEST(all.at("fx_n").at("origin").as_string() == "discovery");
    BOOST_TEST(all.at("fx_flag").at("desired").as_string() == "following"); // --db: never stopped by discovery
    BOOST_TEST(all.at("fx_flag").at("origin").as_string() == "flag");
    BOOST_TEST(metrics.find("couch_bridge_databases_recreated_total{database=\"fx_n\"} 1\n") != std::string::npos);
    BOOST_TEST(metrics.find("couch_bridge_databases_removed_total{reason=\"deleted\"} 1\n") != std::string::npos);
    BOOST_TEST(metrics.find("couch_bridge_databases_discovered_total 1\n") != std::string::npos);
    // fx_flag, fx_n at startup, fx_n again after the re-creation.
    BOOST_TEST(metrics.find("couch_bridge_databases_followed_total 3\n") != std::string::npos);
    BOOST_TEST(metrics.find("couch_bridge_databases{state=\"following\"} 2\n") != std::string::npos);
}

// A database recorded as deleted, then resumed (POST .../resume) or put
// (PUT /databases/{db}) through the admin API: a new incarnation, followed
// from 0, never from the old incarnation's checkpoint; the deletion record
// goes, and an explicit since still wins.
BOOST_AUTO_TEST_CASE(resume_or_put_of_a_deleted_database_follows_a_new_incarnation_from_0) {
    asio::io_context io;
    fault_server server(io);
    metrics::registry registry;
    auto store = checkpoint::store::open(test_support::make_temp_dir("fleet-deleted"));
    BOOST_REQUIRE(!store->write({{{"src", "dz_r"}, {"\"5-old\"", 0, "test"}},
                                 {{"src", "dz_p"}, {"\"6-old\"", 0, "test"}},
                                 {{"src", "dz_s"}, {"\"7-old\"", 0, "test"}}}));
    BOOST_REQUIRE(!store->put_meta(
        "deleted_databases",
        R"({"dz_r":{"deleted_unix_ms":1000,"checkpoint":"\"5-old\""},"dz_p":{"deleted_unix_ms":1000,"checkpoint":"\"6-old\""},)"
        R"("dz_s":{"deleted_unix_ms":1000,"checkpoint":"\"7-old\""}})"));
    server.route = [&](std::string const&, std::string const& target) -> std::optional<script> {
        if (target.find("/_changes") == std::string::npos) {
            return answer(200, R"({"db_name":"x","update_seq":"1-x"})");
        }
        return std::nullopt; // _changes: held open, no rows
    };
    kafka::embedded_cluster cluster{1};
    kafka::producer_config pcfg;
    pcfg.bootstrap_servers = cluster.bootstrap_servers();
    kafka::producer producer(io.get_executor(), pcfg, registry);
    auto const routes = bridge::router::from_spec("commcare", {});
    checkpoint::flusher flusher(io.get_executor(), *store, 100ms, registry, "test");
    asio::co_spawn(io, flusher.run(), asio::detached);
    couch::client_config client;
    client.url = server.url();
    couch::feed_options feed;
    feed.heartbeat = 5s;
    feed.request_timeout = 10s;
    bridge::fleet fleet({io.get_executor(), client, nullptr, "src", "0", {}, feed,
                         {producer, routes, flusher, registry, {}, nullptr}, *store, *store});
    fleet.start({});
    auto const resumed = fleet.resume("dz_r");
    auto const put = fleet.follow("dz_p", "");
    auto const explicit_since = fleet.follow("dz_s", "\"7-old\"");
    auto const deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline &&
           !(has_target(server, "/dz_r/_changes", "") && has_target(server, "/dz_p/_changes", "") &&
             has_target(server, "/dz_s/_changes", ""))) {
        io.run_for(20ms);
    }
    auto const record = store->get_meta("deleted_databases").value_or("");
    fleet.stop_all();
    for (int i = 0; i < 100 && fleet.in_flight() > 0; ++i) {
        io.run_for(10ms);
    }
    io.run_for(300ms);
    flusher.stop();
    server.stop();
    io.run_for(200ms);

    BOOST_TEST(resumed.status == 200u, resumed.json);
    BOOST_TEST(put.status == 200u, put.json);
    BOOST_TEST(explicit_since.status == 200u, explicit_since.json);
    BOOST_TEST(has_target(server, "/dz_r/_changes", "since=0"));
    BOOST_TEST(!has_target(server, "/dz_r/_changes", "5-old"));
    BOOST_TEST(has_target(server, "/dz_p/_changes", "since=0"));
    BOOST_TEST(!has_target(server, "/dz_p/_changes", "6-old"));
    BOOST_TEST(has_target(server, "/dz_s/_changes", "since=7-old"));
    BOOST_TEST(record == "{}", record);
}

BOOST_AUTO_TEST_SUITE_END()
