// At-least-once and exactly-once, proven: the bridge is SIGKILLed at random
// moments while a writer keeps changing three databases, and the broker is
// stopped for 30 s under load. At the end every (database, id, rev) that
// CouchDB's _changes shows must be in Kafka: zero loss. At-least-once counts
// and prints the duplicates; exactly-once (records and checkpoints in one
// transaction, read back read_committed) must have none.
#include "bridge_process.hpp"
#include "change_audit.hpp"

#include "tests/support/couch_http.hpp"
#include "tests/support/kafka_consume.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace json = boost::json;

using namespace integration;

namespace {

struct scenario {
    bool exactly_once = false;
    std::string prefix = test_support::unique_name("crash");
    std::vector<std::string> dbs;
    std::vector<std::string> topics;
    std::string dir = test_support::make_temp_dir("crash-ckpt");
    explicit scenario(bool eos) : exactly_once(eos) {
        for (int i = 0; i < 3; ++i) {
            dbs.push_back(prefix + "-db" + std::to_string(i));
            test_support::couch_create_db(test_support::couch_url(), dbs.back());
        }
        for (auto const& t : doc_types) {
            topics.push_back(prefix + "-" + t);
        }
        topics.push_back(prefix + "-meta");
    }
    integration::bridge_options options() const {
        integration::bridge_options o{dbs, dir, test_support::kafka_brokers(),
                                      {"--routing", "prefix:" + prefix + "-", "--default-topic", prefix + "-meta",
                                       "--kafka-property", "topic.metadata.refresh.interval.ms=1000"}};
        if (exactly_once) {
            o.extra.insert(o.extra.end(), {"--delivery", "exactly-once", "--checkpoint-store", "kafka",
                                           "--checkpoint-topic", prefix + "-checkpoints", "--commit-interval", "100"});
        }
        return o;
    }
    std::string mode() const { return exactly_once ? "exactly-once" : "at-least-once"; }
};

void sigkill_rounds(bool eos) {
    scenario s(eos);
    writer w(test_support::couch_url(), s.dbs, 20261122);
    std::mt19937 rng(7);
    int kills = 0;
    long peak_kib = 0;
    for (int round = 0; round < 22; ++round) {
        auto bridge = integration::start_bridge(s.options(), test_support::free_port());
        std::uniform_int_distribution<int> ms(200, 2500);
        std::this_thread::sleep_for(std::chrono::milliseconds(ms(rng)));
        peak_kib = std::max(peak_kib, bridge->peak_rss_kib());
        BOOST_REQUIRE_MESSAGE(bridge->running(), "the bridge exited by itself in round " << round << "; log: " << s.dir
                                                                                         << ".log");
        bridge->signal(SIGKILL);
        bridge->wait_for_exit(std::chrono::seconds(10));
        ++kills;
    }
    w.stop();
    BOOST_REQUIRE_MESSAGE(w.error().empty(), "writer failed: " << w.error());

    // A last, uninterrupted run catches up; then everything must be there.
    auto bridge = integration::start_bridge(s.options(), test_support::free_port());
    auto expected = couch_changes(test_support::couch_url(), s.dbs);
    auto got = wait_complete(expected, s.topics);
    peak_kib = std::max(peak_kib, bridge->peak_rss_kib());
    bridge->signal(SIGTERM);
    auto code = bridge->wait_for_exit(std::chrono::seconds(60));
    if (eos) {
        got = kafka_records(s.topics); // after the last commit
    }

    auto lost = missing(expected, got);
    auto const duplicates = got.total - got.unique.size();
    report("crash test (SIGKILL, " + s.mode() + "): kills=" + std::to_string(kills) + " writes=" +
           std::to_string(w.writes()) + " changes=" + std::to_string(expected.size()) + " records=" +
           std::to_string(got.total) + " lost=" + std::to_string(lost) + " duplicates=" + std::to_string(duplicates) +
           " peak_rss_mib=" + std::to_string(peak_kib / 1024));
    BOOST_TEST(kills >= 20);
    BOOST_TEST(expected.size() > 100u);
    BOOST_TEST(lost == 0u);
    if (eos) {
        BOOST_TEST(duplicates == 0u);
    }
    BOOST_REQUIRE(code.has_value());
    BOOST_TEST(*code == 0);
}

void broker_down_30s(bool eos) {
    if (std::getenv("CKB_TEST_KAFKA_BROKERS")) {
        BOOST_TEST_MESSAGE("skipped: the broker is external (CKB_TEST_KAFKA_BROKERS), this test cannot stop it");
        return;
    }
    auto const script = std::string(std::getenv("CKB_SOURCE_DIR")) + "/tests/servers/kafka-broker.sh";
    auto const state = std::string(std::getenv("CKB_TEST_STATE_DIR"));
    scenario s(eos);
    writer w(test_support::couch_url(), s.dbs, 42);
    auto bridge = integration::start_bridge(s.options(), test_support::free_port());
    std::this_thread::sleep_for(std::chrono::seconds(3));
    BOOST_REQUIRE(std::system(("bash '" + script + "' halt '" + state + "' > /dev/null").c_str()) == 0);
    long peak_kib = 0;
    for (int i = 0; i < 30; ++i) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        peak_kib = std::max(peak_kib, bridge->peak_rss_kib());
        BOOST_REQUIRE_MESSAGE(bridge->running(), "the bridge died while the broker was down; log: " << s.dir << ".log");
    }
    int const rc = std::system(("bash '" + script + "' restart '" + state + "' > /dev/null").c_str());
    BOOST_REQUIRE(rc == 0);
    std::this_thread::sleep_for(std::chrono::seconds(3));
    w.stop();
    BOOST_REQUIRE_MESSAGE(w.error().empty(), "writer failed: " << w.error());

    auto expected = couch_changes(test_support::couch_url(), s.dbs);
    auto got = wait_complete(expected, s.topics);
    peak_kib = std::max(peak_kib, bridge->peak_rss_kib());
    bridge->signal(SIGTERM);
    auto code = bridge->wait_for_exit(std::chrono::seconds(60));
    if (eos) {
        got = kafka_records(s.topics);
    }

    auto lost = missing(expected, got);
    auto const duplicates = got.total - got.unique.size();
    report("crash test (broker down 30 s, " + s.mode() + "): writes=" + std::to_string(w.writes()) + " changes=" +
           std::to_string(expected.size()) + " records=" + std::to_string(got.total) + " lost=" +
           std::to_string(lost) + " duplicates=" + std::to_string(duplicates) +
           " peak_rss_mib=" + std::to_string(peak_kib / 1024));
    BOOST_TEST(lost == 0u);
    if (eos) {
        BOOST_TEST(duplicates == 0u);
    }
    // The in-flight window bounds memory: far below what buffering every
    // change of the outage would take.
    BOOST_TEST(peak_kib < 400 * 1024);
    BOOST_REQUIRE(code.has_value());
    BOOST_TEST(*code == 0);
}

} // namespace

BOOST_AUTO_TEST_SUITE(crash)

BOOST_AUTO_TEST_CASE(sigkill_at_random_moments_loses_nothing) { sigkill_rounds(false); }

BOOST_AUTO_TEST_CASE(broker_down_for_30_seconds_loses_nothing_and_memory_stays_bounded) { broker_down_30s(false); }

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(exactly_once_crash)

BOOST_AUTO_TEST_CASE(sigkill_at_random_moments_neither_loses_nor_duplicates) { sigkill_rounds(true); }

BOOST_AUTO_TEST_CASE(broker_down_for_30_seconds_neither_loses_nor_duplicates) { broker_down_30s(true); }

BOOST_AUTO_TEST_SUITE_END()
