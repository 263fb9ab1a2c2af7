// The catch-up lane (--kafka-catch-up-linger-ms): records read while a feed
// catches up go to a second producer that lingers longer. Two producers keep
// no order between them, so a pipeline drains one before it uses the other;
// this checks, against the real broker, that a document's later revision
// never lands before an earlier one that the other lane still held.
#include "helpers.hpp"

#include <map>

using namespace integration;

namespace {

// Waits until `name` (a series without labels) reads at least `want`.
void wait_metric(unsigned short port, std::string const& name, double want) {
    auto const deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (metric_value(metrics_of(port), name) >= want) {
            return;
        }
        std::this_thread::sleep_for(20ms);
    }
    BOOST_FAIL(name << " never reached " << want);
}

} // namespace

BOOST_AUTO_TEST_SUITE(lanes)

BOOST_AUTO_TEST_CASE(a_revision_never_overtakes_the_catch_up_lane) {
    auto const couch = test_support::couch_url();
    auto const db = test_support::unique_name("lanes");
    test_support::couch_create_db(couch, db);
    int const docs = 20;
    std::map<std::string, std::string> first_rev;
    for (int i = 0; i < docs; ++i) {
        auto const id = "case-" + std::to_string(i);
        first_rev[id] = test_support::couch_put_doc(couch, db, id,
                                                    {{"doc_type", "CommCareCase"}, {"domain", "demo"}, {"n", 1}});
    }

    // The catch-up lane holds its records for 4 s; the following lane sends
    // within its 5 ms linger. Revisions written while the first records wait
    // in the catch-up lane are read by the live feed: they would reach the
    // broker first, were the lanes not drained in turn. (Not "as soon as
    // the status says following": pouchdb-server sends a continuous feed's
    // headers with its first row or heartbeat, 10 s later.)
    auto dir = test_support::make_temp_dir("lanes-ckpt");
    auto port = test_support::free_port();
    auto bridge = start_bridge(
        {{db}, dir, test_support::kafka_brokers(), {"--create-topics", "--kafka-catch-up-linger-ms", "4000"}}, port);
    wait_metric(port, "couch_bridge_kafka_in_flight_messages", docs);
    BOOST_TEST(metric_value(metrics_of(port), "couch_bridge_kafka_lane_switches_total") == 1.0); // to the catch-up lane
    std::map<std::string, std::string> second_rev;
    for (int i = 0; i < docs; ++i) {
        auto const id = "case-" + std::to_string(i);
        second_rev[id] = test_support::couch_put_doc(
            couch, db, id, {{"_rev", first_rev[id]}, {"doc_type", "CommCareCase"}, {"domain", "demo"}, {"n", 2}});
    }

    // Every revision arrives, and per document the first comes first (one
    // key, one partition: offsets order them).
    auto const deadline = std::chrono::steady_clock::now() + 90s;
    std::vector<test_support::consumed_record> got;
    while (std::chrono::steady_clock::now() < deadline) {
        got.clear();
        for (auto& r : test_support::consume_all(test_support::kafka_brokers(), {"case"})) {
            if (r.header("database") == db) {
                got.push_back(std::move(r));
            }
        }
        if (got.size() >= static_cast<std::size_t>(2 * docs)) {
            break;
        }
        std::this_thread::sleep_for(300ms);
    }
    BOOST_REQUIRE_EQUAL(got.size(), static_cast<std::size_t>(2 * docs));
    std::map<std::string, std::int64_t> offset_of; // id + '\n' + rev
    std::map<std::string, std::int32_t> partition_of;
    for (auto const& r : got) {
        offset_of[r.key + "\n" + r.header("rev")] = r.offset;
        partition_of[r.key + "\n" + r.header("rev")] = r.partition;
    }
    for (int i = 0; i < docs; ++i) {
        auto const id = "case-" + std::to_string(i);
        auto const a = id + "\n" + first_rev[id], b = id + "\n" + second_rev[id];
        BOOST_TEST_CONTEXT(id) {
            BOOST_REQUIRE(offset_of.count(a) == 1);
            BOOST_REQUIRE(offset_of.count(b) == 1);
            BOOST_TEST(partition_of[a] == partition_of[b]);
            BOOST_TEST(offset_of[a] < offset_of[b]);
        }
    }

    // The revisions went through the following producer: a second switch.
    BOOST_TEST(metric_value(metrics_of(port), "couch_bridge_kafka_lane_switches_total") == 2.0);
    BOOST_TEST(metric_value(metrics_of(port), "couch_bridge_kafka_catch_up_ready") == 1.0);
    BOOST_TEST(stop(*bridge) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
