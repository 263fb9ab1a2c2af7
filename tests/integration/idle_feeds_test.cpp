// --max-open-feeds against pouchdb-server (no _db_updates: idle databases
// are polled round-robin) and the real broker: 60 databases, 10 feeds at
// most. Every database's changes reach Kafka, the open feeds never exceed
// the cap (couch_bridge_databases{state="following"}, sampled throughout),
// /status lists idle databases, and a change written to an idle database
// arrives.
#include "bridge_process.hpp"
#include "helpers.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <set>
#include <thread>

using namespace integration;

namespace {

std::vector<std::string> idle_of(unsigned short port) {
    std::vector<std::string> out;
    auto const s = status_of(port);
    if (s.is_object()) {
        if (auto const* idle = s.as_object().if_contains("idle"); idle != nullptr && idle->is_array()) {
            for (auto const& v : idle->as_array()) {
                out.emplace_back(v.as_string());
            }
        }
    }
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(idle_feeds)

BOOST_AUTO_TEST_CASE(sixty_databases_ten_feeds_and_a_change_to_an_idle_one_arrives) {
    constexpr int n = 60;
    constexpr int cap = 10;
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const prefix = test_support::unique_name("idle");
    std::vector<std::string> dbs;
    for (int i = 0; i < n; ++i) {
        dbs.push_back(prefix + "-" + std::to_string(i));
        test_support::couch_create_db(couch, dbs.back());
        put_case(dbs.back(), "first");
    }
    auto const dir = test_support::make_temp_dir("idle-ckpt");
    auto const port = test_support::free_port();
    auto bridge = start_bridge({{}, dir, real,
                                {"--db-pattern", prefix + "-.*", "--discovery-interval", "500", "--max-open-feeds",
                                 std::to_string(cap), "--idle-close", "500"}},
                               port);

    // The cap, sampled on a thread of its own for the whole test.
    std::atomic<bool> sampling{true};
    std::atomic<int> most_open{-1}, samples{0};
    std::thread sampler([&] {
        while (sampling) {
            auto const v = metric_value(metrics_of(port), R"(couch_bridge_databases{state="following"})");
            if (v >= 0) {
                most_open = std::max(most_open.load(), static_cast<int>(v));
                ++samples;
            }
            std::this_thread::sleep_for(100ms);
        }
    });

    // Every database's first change reaches Kafka (its checkpoint, which
    // moves only over acknowledged changes, covers it), though at most ten
    // feeds are open at a time.
    auto checkpointed = [&] {
        std::set<std::string> out;
        try {
            auto r = test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/databases");
            if (r.status == 200) {
                auto const all = json::parse(r.body);
                for (auto const& [name, d] : all.at("databases").as_object()) {
                    auto const& c = d.at("checkpoint");
                    if (c.is_string() && !c.as_string().empty() && c.as_string() != "0") {
                        out.insert(std::string(name));
                    }
                }
            }
        } catch (std::exception const&) {
            // not listening yet
        }
        return out;
    };
    auto const all_deadline = std::chrono::steady_clock::now() + 120s;
    std::set<std::string> done;
    while (done.size() < dbs.size() && std::chrono::steady_clock::now() < all_deadline) {
        done = checkpointed();
        std::this_thread::sleep_for(200ms);
    }
    for (auto const& db : dbs) {
        BOOST_TEST(done.count(db) == 1u, db << ": its first change was never acknowledged");
    }
    // Idle databases show in /status.
    auto const deadline = std::chrono::steady_clock::now() + 60s;
    std::vector<std::string> idle;
    while (std::chrono::steady_clock::now() < deadline && idle.size() < static_cast<std::size_t>(n - cap)) {
        idle = idle_of(port);
        std::this_thread::sleep_for(200ms);
    }
    BOOST_TEST(idle.size() >= static_cast<std::size_t>(n - cap));
    BOOST_REQUIRE(!idle.empty());

    // A change to an idle database: a poll finds it, its feed opens again
    // from its checkpoint, and the change arrives.
    auto const target = idle.front();
    put_case(target, "later");
    auto const got = wait_for_ids(real, target, {"first", "later"});
    BOOST_TEST(got.count("later") >= 1u, target << ": the change to the idle database never reached Kafka");

    auto const metrics = metrics_of(port);
    sampling = false;
    sampler.join();
    BOOST_TEST(samples.load() > 10);
    BOOST_TEST(most_open.load() <= cap);
    BOOST_TEST(metric_value(metrics, "couch_bridge_feeds_idle_closed_total") >= n - cap);
    BOOST_TEST(metric_value(metrics, "couch_bridge_idle_polls_total") > 0);
}

BOOST_AUTO_TEST_SUITE_END()
