// --max-open-feeds with `_db_updates`: four databases, two feeds at most.
// The fleet opens two, closes them once idle, opens the other two, closes
// them too; then a `_db_updates` `updated` event (discovery's hook) opens
// the feed of the database it names again, from its checkpoint (a
// normal-feed catch-up, then continuous), and no poll is made meanwhile.
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
#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace couch_test;

namespace {

std::string event(std::string const& db, std::string const& type, std::string const& seq) {
    return R"({"db_name":")" + db + R"(","type":")" + type + R"(","seq":")" + seq + "\"}\n";
}

// The index of the first target at or after `from` that starts with
// `prefix` and contains `part`, or -1.
long find_target(fault_server const& s, std::size_t from, std::string const& prefix, std::string const& part) {
    for (auto i = from; i < s.targets.size(); ++i) {
        if (s.targets[i].starts_with(prefix) && s.targets[i].find(part) != std::string::npos) {
            return static_cast<long>(i);
        }
    }
    return -1;
}

} // namespace

BOOST_AUTO_TEST_SUITE(fleet_idle)

BOOST_AUTO_TEST_CASE(an_updated_event_opens_an_idle_database_again_and_the_cap_holds) {
    std::vector<std::string> const dbs{"ix_a", "ix_b", "ix_c", "ix_d"};
    asio::io_context io;
    fault_server server(io);
    metrics::registry registry;
    auto store = checkpoint::store::open(test_support::make_temp_dir("fleet-idle"));
    bool send_update = false;
    std::size_t update_sent_at = 0; // server.targets.size() when the event went out
    server.route = [&](std::string const&, std::string const& target) -> std::optional<script> {
        if (target.starts_with("/_db_updates")) {
            // Silent until the test lets the event out (discovery's watchdog
            // reopens a silent feed after 2 x heartbeat + 1 s).
            if (!send_update) {
                return script{w(chunked_200), hold()};
            }
            return script{w(chunked_200), w(chunk(event("ix_c", "updated", "9-a"))), hold()};
        }
        if (target.starts_with("/_all_dbs")) {
            return script{w(status_response(200, R"(["_users","ix_a","ix_b","ix_c","ix_d"])")), hold()};
        }
        if (target.find("/_changes") == std::string::npos) {
            return script{w(status_response(200, R"({"db_name":"x","update_seq":"1-x"})")), hold()};
        }
        if (target.find("feed=normal") != std::string::npos) {
            auto const db = target.substr(1, target.find("/_changes") - 1);
            return script{w(status_response(200, target.find("since=0") != std::string::npos
                                                     ? normal_body({{db + "-doc", "1-x"}}, "1-x", 0)
                                                     : normal_body({}, "1-x", 0))),
                          hold()};
        }
        return script{w(chunked_200), hold()}; // continuous: silent
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
    feed.backoff_initial = 50ms;
    feed.slow_retry = 200ms;
    feed.seq_interval = 0;
    bridge::fleet fleet({io.get_executor(), client, nullptr, "src", "0", {}, feed,
                         {producer, routes, flusher, registry, {}, nullptr}, *store, *store, {}, {}, nullptr, 2, 300ms});
    fleet.start({});
    bridge::discovery_options o;
    o.patterns = {"ix_.*"};
    o.heartbeat = 1s;
    o.request_timeout = 10s;
    o.source_name = "src";
    bridge::discovery_hooks hooks{[&](std::string const& db, bool live) { fleet.found(db, live); },
                                  [&](std::string const& db) { fleet.gone(db); },
                                  [&](std::string const& db) { fleet.updated(db); },
                                  [&](bool on) { fleet.set_change_events(on); }};
    bridge::discovery finder(io.get_executor(), client, o, hooks, *store, *store, registry);
    finder.start();

    std::size_t most_open = 0;
    auto run_until = [&](std::function<bool()> done, std::chrono::seconds limit) {
        auto const deadline = std::chrono::steady_clock::now() + limit;
        while (!done() && std::chrono::steady_clock::now() < deadline) {
            io.run_for(20ms);
            most_open = std::max(most_open, fleet.open_feeds());
        }
        return done();
    };
    // Every database caught up once, then all four idle.
    bool const all_idle = run_until([&] { return fleet.idle_databases().size() == dbs.size(); }, 30s);
    auto const idle_before = fleet.idle_databases();
    auto const listed_idle = boost::json::parse(fleet.describe_all()).at("databases");
    auto const polls_before = registry.expose();
    // The event: ix_c changed.
    update_sent_at = server.targets.size();
    send_update = true;
    bool const reopened = run_until(
        [&] { return find_target(server, update_sent_at, "/ix_c/_changes", "feed=continuous") >= 0; }, 40s);
    auto const catch_up = find_target(server, update_sent_at, "/ix_c/_changes", "feed=normal");
    auto const continuous = find_target(server, update_sent_at, "/ix_c/_changes", "feed=continuous");
    auto const metrics = registry.expose();
    auto const listed_after = boost::json::parse(fleet.describe_all()).at("databases");
    finder.stop();
    fleet.stop_all();
    run_until([&] { return finder.stopped() && fleet.in_flight() == 0; }, 10s);
    server.stop();
    io.run_for(200ms);

    BOOST_TEST(all_idle);
    BOOST_TEST(idle_before == dbs, "idle: " << idle_before.size());
    BOOST_TEST(most_open <= 2u); // the cap, at every sample
    BOOST_TEST(most_open == 2u);
    BOOST_TEST(reopened);
    BOOST_TEST(catch_up >= 0);
    BOOST_TEST(catch_up < continuous);
    if (catch_up >= 0) {
        // From its checkpoint, not from 0.
        BOOST_TEST(server.targets[static_cast<std::size_t>(catch_up)].find("since=1-x") != std::string::npos,
                   server.targets[static_cast<std::size_t>(catch_up)]);
    }
    // Only ix_c opened again; the others stayed idle (no poll wakes them).
    for (auto const* other : {"/ix_a/_changes", "/ix_b/_changes", "/ix_d/_changes"}) {
        BOOST_TEST(find_target(server, update_sent_at, other, "") == -1, other);
    }
    // GET /databases tells idle from open, as /status's `idle` list does.
    for (auto const& db : dbs) {
        auto const& d = listed_idle.at(db);
        BOOST_TEST(d.at("state").as_string() == "idle", db);
        BOOST_TEST(d.at("feed").as_string() == "idle", db);
        BOOST_TEST(d.at("desired").as_string() == "following", db);
    }
    BOOST_TEST(listed_after.at("ix_c").at("feed").as_string() == "open");
    BOOST_TEST(listed_after.at("ix_c").at("state").as_string() != "idle");
    for (auto const* other : {"ix_a", "ix_b", "ix_d"}) {
        BOOST_TEST(listed_after.at(other).at("feed").as_string() == "idle", other);
    }
    BOOST_TEST(polls_before.find("couch_bridge_idle_polls_total 0\n") != std::string::npos);
    BOOST_TEST(metrics.find("couch_bridge_feeds_idle_closed_total 4\n") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
