// At-least-once, proven: the bridge is SIGKILLed at random moments while a
// writer keeps changing three databases, and the broker is stopped for 30 s
// under load. At the end every (database, id, rev) that CouchDB's _changes
// shows must be in Kafka: zero loss. Duplicates are counted and printed.
#include "bridge_process.hpp"

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

namespace {

std::vector<std::string> const doc_types{"CommCareCase", "XFormInstance", "CommCareUser"};

// Keeps creating, updating and deleting documents in `dbs` until stopped.
class writer {
public:
    writer(std::string couch, std::vector<std::string> dbs, unsigned seed)
        : couch_(std::move(couch)), dbs_(std::move(dbs)), rng_(seed) {
        thread_ = std::thread([this] { loop(); });
    }
    ~writer() { stop(); }
    void stop() {
        stop_ = true;
        if (thread_.joinable()) {
            thread_.join();
        }
    }
    std::uint64_t writes() const { return writes_; }
    std::string const& error() const { return error_; }

private:
    void loop() {
        std::map<std::pair<std::string, std::string>, std::string> live; // (db,id) -> rev
        std::uint64_t n = 0;
        try {
            while (!stop_) {
                auto const& db = dbs_[rng_() % dbs_.size()];
                auto op = rng_() % 10;
                if (op < 6 || live.size() < 10) {
                    auto id = "doc-" + std::to_string(n++);
                    auto type = doc_types[rng_() % doc_types.size()];
                    auto rev = test_support::couch_put_doc(couch_, db, id,
                                                           {{"doc_type", type}, {"domain", "crash"}, {"n", n}});
                    live[{db, id}] = rev;
                } else {
                    auto it = live.begin();
                    std::advance(it, static_cast<long>(rng_() % live.size()));
                    if (it->first.first != db) {
                        continue;
                    }
                    if (op < 8) {
                        auto rev = test_support::couch_put_doc(couch_, db, it->first.second,
                                                               {{"_rev", it->second}, {"doc_type", "CommCareCase"},
                                                                {"domain", "crash"}, {"updated", true}});
                        it->second = rev;
                    } else {
                        test_support::couch_delete_doc(couch_, db, it->first.second, it->second);
                        live.erase(it);
                    }
                }
                ++writes_;
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
        } catch (std::exception const& e) {
            error_ = e.what();
        }
    }

    std::string couch_;
    std::vector<std::string> dbs_;
    std::mt19937 rng_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> writes_{0};
    std::string error_;
};

using change_key = std::tuple<std::string, std::string, std::string>; // db, id, rev

// What CouchDB's _changes shows: the current rev of every document.
std::set<change_key> couch_changes(std::string const& couch, std::vector<std::string> const& dbs) {
    std::set<change_key> out;
    for (auto const& db : dbs) {
        auto r = test_support::couch_request(couch, "GET", "/" + db + "/_changes");
        BOOST_REQUIRE_MESSAGE(r.status == 200, "GET " << db << "/_changes -> " << r.status);
        auto parsed = json::parse(r.body);
        BOOST_REQUIRE_MESSAGE(parsed.is_object() && parsed.as_object().contains("results"),
                              "unexpected _changes body of " << db << ": " << r.body.substr(0, 300));
        for (auto const& row : parsed.at("results").as_array()) {
            out.emplace(db, std::string(row.at("id").as_string()),
                        std::string(row.at("changes").as_array().at(0).at("rev").as_string()));
        }
    }
    return out;
}

struct kafka_view {
    std::set<change_key> unique;
    std::size_t total = 0;
};

kafka_view kafka_records(std::vector<std::string> const& topics) {
    kafka_view v;
    for (auto const& r : test_support::consume_all(test_support::kafka_brokers(), topics, std::chrono::seconds(120))) {
        v.unique.emplace(r.header("database"), r.key, r.header("rev"));
        ++v.total;
    }
    return v;
}

std::size_t missing(std::set<change_key> const& expected, kafka_view const& got) {
    std::size_t n = 0;
    for (auto const& k : expected) {
        n += got.unique.count(k) ? 0 : 1;
    }
    return n;
}

// Waits until Kafka holds every expected change (or the deadline passes);
// returns what Kafka holds then.
kafka_view wait_complete(std::set<change_key> const& expected, std::vector<std::string> const& topics) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
    kafka_view got;
    do {
        got = kafka_records(topics);
        if (missing(expected, got) == 0) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::seconds(2));
    } while (std::chrono::steady_clock::now() < deadline);
    return got;
}

void report(std::string const& line) {
    std::cout << line << std::endl;
    if (char const* s = std::getenv("CKB_TEST_STATE_DIR")) {
        std::ofstream(std::string(s) + "/crash-test-figures.txt", std::ios::app) << line << '\n';
    }
}

struct scenario {
    std::string prefix = test_support::unique_name("crash");
    std::vector<std::string> dbs;
    std::vector<std::string> topics;
    std::string dir = test_support::make_temp_dir("crash-ckpt");
    scenario() {
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
        return {dbs, dir, test_support::kafka_brokers(),
                {"--routing", "prefix:" + prefix + "-", "--default-topic", prefix + "-meta",
                 "--kafka-property", "topic.metadata.refresh.interval.ms=1000"}};
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(crash)

BOOST_AUTO_TEST_CASE(sigkill_at_random_moments_loses_nothing) {
    scenario s;
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

    auto lost = missing(expected, got);
    report("crash test (SIGKILL): kills=" + std::to_string(kills) + " writes=" + std::to_string(w.writes()) +
           " changes=" + std::to_string(expected.size()) + " records=" + std::to_string(got.total) +
           " lost=" + std::to_string(lost) + " duplicates=" + std::to_string(got.total - got.unique.size()) +
           " peak_rss_mib=" + std::to_string(peak_kib / 1024));
    BOOST_TEST(kills >= 20);
    BOOST_TEST(expected.size() > 100u);
    BOOST_TEST(lost == 0u);
    BOOST_REQUIRE(code.has_value());
    BOOST_TEST(*code == 0);
}

BOOST_AUTO_TEST_CASE(broker_down_for_30_seconds_loses_nothing_and_memory_stays_bounded) {
    if (std::getenv("CKB_TEST_KAFKA_BROKERS")) {
        BOOST_TEST_MESSAGE("skipped: the broker is external (CKB_TEST_KAFKA_BROKERS), this test cannot stop it");
        return;
    }
    auto const script = std::string(std::getenv("CKB_SOURCE_DIR")) + "/tests/servers/kafka-broker.sh";
    auto const state = std::string(std::getenv("CKB_TEST_STATE_DIR"));
    scenario s;
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

    auto lost = missing(expected, got);
    report("crash test (broker down 30 s): writes=" + std::to_string(w.writes()) + " changes=" +
           std::to_string(expected.size()) + " records=" + std::to_string(got.total) + " lost=" +
           std::to_string(lost) + " duplicates=" + std::to_string(got.total - got.unique.size()) +
           " peak_rss_mib=" + std::to_string(peak_kib / 1024));
    BOOST_TEST(lost == 0u);
    // The in-flight window bounds memory: far below what buffering every
    // change of the outage would take.
    BOOST_TEST(peak_kib < 400 * 1024);
    BOOST_REQUIRE(code.has_value());
    BOOST_TEST(*code == 0);
}

BOOST_AUTO_TEST_SUITE_END()
