// Group mode, end to end: three processes of the real binary share 24
// databases through a consumer group on the real Kafka broker while a writer
// changes all of them. One is killed with -9 and started again. At every
// sampled moment no database runs in two instances (from each instance's
// /status); after each move every database runs in exactly one; at the end
// every (database, id, rev) CouchDB shows is in Kafka. The same after a
// rolling restart of all three under load.
#include "bridge_process.hpp"
#include "change_audit.hpp"
#include "helpers.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <array>
#include <csignal>
#include <map>
#include <optional>

using namespace integration;

namespace {

struct group_case {
    std::string prefix = test_support::unique_name("grp");
    std::vector<std::string> dbs, topics;
    std::string group = test_support::unique_name("ckb-group");
    group_case() {
        for (int i = 0; i < 24; ++i) {
            dbs.push_back(prefix + "-db" + std::to_string(i));
            test_support::couch_create_db(test_support::couch_url(), dbs.back());
        }
        for (auto const& t : doc_types) {
            topics.push_back(prefix + "-" + t);
        }
        topics.push_back(prefix + "-meta");
    }
    bridge_options options(std::string const& dir) const {
        return {dbs, dir, test_support::kafka_brokers(),
                {"--routing", "prefix:" + prefix + "-", "--default-topic", prefix + "-meta", "--group", group,
                 "--checkpoint-store", "kafka", "--checkpoint-topic", prefix + "-checkpoints",
                 "--assignment-partitions", "16", "--group-session-timeout", "6000", "--kafka-property",
                 "topic.metadata.refresh.interval.ms=1000"}};
    }
};

struct instance {
    std::string dir;
    unsigned short port = 0;
    std::unique_ptr<test_support::child_process> proc;
};

// database -> how many live instances list it in /status now.
std::map<std::string, int> owners(std::vector<instance*> const& live) {
    std::map<std::string, int> n;
    for (auto* i : live) {
        auto s = status_of(i->port);
        if (!s.is_object()) {
            continue;
        }
        for (auto const& [db, v] : s.at("databases").as_object()) {
            ++n[std::string(db)];
        }
    }
    return n;
}

// Samples until every database runs in exactly one instance; fails the
// test if a sample ever shows one in two. Returns the seconds it took.
double settle(group_case const& c, std::vector<instance*> const& live, std::size_t& samples) {
    auto const t0 = std::chrono::steady_clock::now();
    auto const deadline = t0 + 120s;
    for (;;) {
        auto n = owners(live);
        ++samples;
        for (auto const& [db, k] : n) {
            BOOST_REQUIRE_MESSAGE(k <= 1, "database " << db << " runs in " << k << " instances at once");
        }
        bool all = n.size() == c.dbs.size();
        if (all) {
            return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        }
        BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                              "after 120 s only " << n.size() << " of " << c.dbs.size() << " databases run");
        std::this_thread::sleep_for(200ms);
    }
}

} // namespace

BOOST_AUTO_TEST_SUITE(group_mode)

BOOST_AUTO_TEST_CASE(three_instances_share_fail_over_and_lose_nothing) {
    group_case c;
    std::array<instance, 3> inst;
    for (std::size_t i = 0; i < inst.size(); ++i) {
        inst[i].dir = test_support::make_temp_dir("grp-" + std::to_string(i));
        inst[i].port = test_support::free_port();
        inst[i].proc = start_bridge(c.options(inst[i].dir), inst[i].port);
    }
    std::vector<instance*> live{&inst[0], &inst[1], &inst[2]};
    std::size_t samples = 0;
    writer w(test_support::couch_url(), c.dbs, 1313);
    settle(c, live, samples);
    // Each instance has a share.
    for (auto* i : live) {
        auto s = status_of(i->port);
        BOOST_REQUIRE(s.is_object());
        BOOST_TEST_INFO("log: " << i->dir << ".log");
        BOOST_TEST(s.at("databases").as_object().size() > 0u);
        BOOST_TEST(!s.at("group").at("member_id").as_string().empty());
    }
    std::this_thread::sleep_for(3s);

    // kill -9: the others take over its databases.
    inst[2].proc->signal(SIGKILL);
    inst[2].proc->wait_for_exit(10s);
    live.pop_back();
    auto const failover_s = settle(c, live, samples);

    // Started again, it gets a share back.
    inst[2].port = test_support::free_port();
    inst[2].proc = start_bridge(c.options(inst[2].dir), inst[2].port);
    live.push_back(&inst[2]);
    auto const deadline = std::chrono::steady_clock::now() + 120s;
    for (;;) {
        auto s = status_of(inst[2].port);
        if (s.is_object() && !s.at("databases").as_object().empty()) {
            break;
        }
        BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline, "the restarted instance got no share");
        for (auto const& [db, k] : owners(live)) {
            BOOST_REQUIRE_MESSAGE(k <= 1, "database " << db << " runs in " << k << " instances at once");
        }
        ++samples;
        std::this_thread::sleep_for(200ms);
    }
    settle(c, live, samples);
    std::this_thread::sleep_for(2s);
    w.stop();
    BOOST_REQUIRE_MESSAGE(w.error().empty(), "writer failed: " << w.error());

    auto expected = couch_changes(test_support::couch_url(), c.dbs);
    auto got = wait_complete(expected, c.topics);
    for (auto* i : live) {
        BOOST_TEST(stop(*i->proc) == 0);
    }
    auto lost = missing(expected, got);
    report("group test (3 instances, 24 databases, at-least-once): failover_s=" + std::to_string(failover_s) +
           " writes=" + std::to_string(w.writes()) + " changes=" + std::to_string(expected.size()) + " records=" +
           std::to_string(got.total) + " lost=" + std::to_string(lost) + " duplicates=" +
           std::to_string(got.total - got.unique.size()) + " ownership_samples=" + std::to_string(samples));
    BOOST_TEST(expected.size() > 100u);
    BOOST_TEST(lost == 0u);
}

BOOST_AUTO_TEST_CASE(a_rolling_restart_under_load_loses_nothing) {
    group_case c;
    std::array<instance, 3> inst;
    for (std::size_t i = 0; i < inst.size(); ++i) {
        inst[i].dir = test_support::make_temp_dir("grp-roll-" + std::to_string(i));
        inst[i].port = test_support::free_port();
        inst[i].proc = start_bridge(c.options(inst[i].dir), inst[i].port);
    }
    std::vector<instance*> live{&inst[0], &inst[1], &inst[2]};
    std::size_t samples = 0;
    writer w(test_support::couch_url(), c.dbs, 4242);
    settle(c, live, samples);
    for (std::size_t i = 0; i < inst.size(); ++i) {
        // SIGTERM: its databases are released (checkpoints written) and
        // taken over; then it comes back and gets a share again.
        BOOST_TEST_INFO("instance " << i << " log: " << inst[i].dir << ".log");
        BOOST_TEST(stop(*inst[i].proc) == 0);
        std::vector<instance*> others;
        for (auto* x : live) {
            if (x != &inst[i]) {
                others.push_back(x);
            }
        }
        settle(c, others, samples);
        inst[i].port = test_support::free_port();
        inst[i].proc = start_bridge(c.options(inst[i].dir), inst[i].port);
        settle(c, live, samples);
    }
    std::this_thread::sleep_for(2s);
    w.stop();
    BOOST_REQUIRE_MESSAGE(w.error().empty(), "writer failed: " << w.error());
    auto expected = couch_changes(test_support::couch_url(), c.dbs);
    auto got = wait_complete(expected, c.topics);
    for (auto* i : live) {
        BOOST_TEST(stop(*i->proc) == 0);
    }
    auto lost = missing(expected, got);
    report("group test (rolling restart of 3 instances, at-least-once): writes=" + std::to_string(w.writes()) +
           " changes=" + std::to_string(expected.size()) + " records=" + std::to_string(got.total) + " lost=" +
           std::to_string(lost) + " duplicates=" + std::to_string(got.total - got.unique.size()) +
           " ownership_samples=" + std::to_string(samples));
    BOOST_TEST(expected.size() > 100u);
    BOOST_TEST(lost == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
