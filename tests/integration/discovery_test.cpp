// Discovery (--db-pattern) of the real binary against pouchdb-server (no
// _db_updates: discovery polls _all_dbs) and the real broker: databases
// created, deleted and re-created under a running bridge are followed,
// stopped and followed again with no lost change, and a deletion survives a
// restart.
#include "bridge_process.hpp"
#include "helpers.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

using namespace integration;

namespace {

std::string state_of(unsigned short port, std::string const& db) {
    auto const all = databases_of(port);
    auto const* d = all.if_contains(db);
    return d == nullptr ? std::string("absent") : std::string(d->at("state").as_string());
}

bool wait_state(unsigned short port, std::string const& db, std::string const& want) {
    auto const deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (state_of(port, db) == want) {
            return true;
        }
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

std::string metrics_of(unsigned short port) {
    try {
        return test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/metrics").body;
    } catch (std::exception const&) {
        return {};
    }
}

bool wait_metric(unsigned short port, std::string const& line) {
    auto const deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (metrics_of(port).find(line + "\n") != std::string::npos) {
            return true;
        }
        std::this_thread::sleep_for(200ms);
    }
    return false;
}

void delete_db(std::string const& db) {
    auto r = test_support::couch_request(test_support::couch_url(), "DELETE", "/" + test_support::url_encode(db));
    BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
}

void put_cases(std::string const& db, std::vector<std::string> const& ids) {
    for (auto const& id : ids) {
        put_case(db, id);
    }
}

void require_all(std::string const& brokers, std::string const& db, std::set<std::string> const& ids) {
    auto const got = wait_for_ids(brokers, db, ids);
    for (auto const& id : ids) {
        BOOST_TEST(got.count(id) >= 1u, db << ": " << id << " never reached Kafka");
    }
}

} // namespace

BOOST_AUTO_TEST_SUITE(discovery)

BOOST_AUTO_TEST_CASE(created_deleted_and_recreated_databases_are_followed_with_no_lost_change) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const prefix = test_support::unique_name("disc");
    auto const a = prefix + "-a", b = prefix + "-b", skip = prefix + "-skip";
    test_support::couch_create_db(couch, a);
    test_support::couch_create_db(couch, skip);
    put_cases(a, {"a1", "a2"});
    put_cases(skip, {"s1"});
    auto const dir = test_support::make_temp_dir("disc-ckpt");
    auto const port = test_support::free_port();
    auto bridge = start_bridge({{}, dir, real,
                                {"--db-pattern", prefix + "-.*", "--exclude-db-pattern", prefix + "-skip.*",
                                 "--discovery-interval", "500"}},
                               port);

    // Found at startup.
    BOOST_REQUIRE(wait_state(port, a, "following"));
    require_all(real, a, {"a1", "a2"});

    // Created while it runs: followed from 0, so writes made before
    // discovery noticed the database are not lost.
    test_support::couch_create_db(couch, b);
    put_cases(b, {"b1", "b2", "b3"});
    require_all(real, b, {"b1", "b2", "b3"});
    BOOST_TEST(databases_of(port).at(b).at("origin").as_string() == "discovery");
    BOOST_REQUIRE(wait_for_checkpoint(port, b, 3));

    // Deleted: stopped, its checkpoint kept, recorded with the time.
    delete_db(b);
    BOOST_REQUIRE(wait_state(port, b, "deleted"));
    auto const deleted = databases_of(port).at(b).as_object();
    BOOST_TEST(!deleted.at("deleted_at").as_string().empty());
    BOOST_TEST(deleted.at("checkpoint").as_string() == "3");

    // Re-created with more changes than the old checkpoint covers: an
    // integer seq alone cannot tell this incarnation from the old one, so
    // only the deletion discovery saw makes the new one start from 0.
    test_support::couch_create_db(couch, b);
    put_cases(b, {"c1", "c2", "c3", "c4", "c5"});
    require_all(real, b, {"c1", "c2", "c3", "c4", "c5"});
    BOOST_TEST(databases_of(port).at(b).at("desired").as_string() == "following");

    // A change in the first database still arrives; the excluded one was never followed.
    put_cases(a, {"a3"});
    require_all(real, a, {"a3"});
    BOOST_TEST(ids_in_kafka(real, skip).empty());
    BOOST_TEST(!databases_of(port).contains(skip));

    BOOST_TEST(wait_metric(port, "couch_bridge_databases_discovered_total 2"));
    BOOST_TEST(wait_metric(port, "couch_bridge_databases_removed_total{reason=\"deleted\"} 1"));
    BOOST_TEST(wait_metric(port, "couch_bridge_databases_recreated_total{database=\"" + b + "\"} 1"));
    BOOST_TEST(wait_metric(port, "couch_bridge_databases{state=\"following\"} 2"));
    auto const status = status_of(port);
    BOOST_REQUIRE(status.is_object());
    BOOST_TEST(status.at("discovery").at("mode").as_string() == "polling");
    BOOST_TEST(status.at("discovery").at("databases").to_number<std::uint64_t>() == 2u);
    auto const log = read_log(dir + ".log");
    BOOST_TEST(log.find("no usable _db_updates") != std::string::npos);
    BOOST_TEST(log.find("db " + b + ": deleted on the server") != std::string::npos);
    BOOST_TEST(log.find("db " + b + ": deleted at ") != std::string::npos); // the re-creation
    BOOST_TEST(stop(*bridge) == 0);
}

BOOST_AUTO_TEST_CASE(a_database_deleted_while_the_bridge_was_down_is_recorded_and_comes_back_from_0) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const prefix = test_support::unique_name("disc-down");
    auto const c = prefix + "-c";
    test_support::couch_create_db(couch, c);
    put_cases(c, {"c1", "c2", "c3"});
    auto const dir = test_support::make_temp_dir("disc-down-ckpt");
    auto port = test_support::free_port();
    std::vector<std::string> const flags{"--db-pattern", prefix + "-.*", "--discovery-interval", "500"};
    auto first = start_bridge({{}, dir, real, flags}, port);
    BOOST_REQUIRE(wait_for_checkpoint(port, c, 3));
    BOOST_TEST(stop(*first) == 0);

    delete_db(c);
    port = test_support::free_port();
    auto second = start_bridge({{}, dir, real, flags}, port);
    BOOST_REQUIRE(wait_state(port, c, "deleted"));
    BOOST_TEST(databases_of(port).at(c).at("checkpoint").as_string() == "3");

    // The record survives a SIGKILL.
    second->signal(SIGKILL);
    second->wait_for_exit(30s);
    port = test_support::free_port();
    auto third = start_bridge({{}, dir, real, flags}, port);
    BOOST_REQUIRE(wait_state(port, c, "deleted"));

    test_support::couch_create_db(couch, c);
    put_cases(c, {"n1", "n2", "n3", "n4", "n5"});
    require_all(real, c, {"n1", "n2", "n3", "n4", "n5"});
    BOOST_TEST(databases_of(port).at(c).at("desired").as_string() == "following");
    BOOST_TEST(stop(*third) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
