// Group mode, end to end: three processes of the real binary share 24
// databases through a consumer group on the real Kafka broker while a writer
// changes all of them. One is killed with -9 and started again. At every
// sampled moment no database runs in two instances (from each instance's
// /status); after each move every database runs in exactly one; at the end
// every (database, id, rev) CouchDB shows is in Kafka. The same after a
// rolling restart of all three under load.
#include "group_support.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <map>

using namespace integration;

BOOST_AUTO_TEST_SUITE(group_mode)

BOOST_AUTO_TEST_CASE(three_instances_share_fail_over_and_lose_nothing) {
    group_case c;
    auto inst = start_three(c, "grp");
    std::vector<instance*> live{&inst[0], &inst[1], &inst[2]};
    std::size_t samples = 0;
    writer w(test_support::couch_url(), c.dbs, 1313);
    wait_all_members(live);
    settle(c, live, samples);
    // Each instance has a share (partitions; a partition may hold none of
    // the 24 databases, so databases are counted over all of them).
    std::size_t running = 0;
    for (auto* i : live) {
        running += status_of(i->port).at("databases").as_object().size();
    }
    BOOST_TEST(running == c.dbs.size());
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
    audit(c, live, w,
          "3 instances, 24 databases, kill -9, at-least-once: failover_s=" + std::to_string(failover_s) +
              " ownership_samples=" + std::to_string(samples));
}

// Waits until the instance on `port` has published what it read: nothing in
// flight and no count moving for a second.
void quiesce(unsigned short port) {
    auto const deadline = std::chrono::steady_clock::now() + 60s;
    auto last = published_by_db(port);
    auto still_since = std::chrono::steady_clock::now();
    for (;;) {
        std::this_thread::sleep_for(200ms);
        auto now = published_by_db(port);
        bool in_flight = false;
        if (auto s = status_of(port); s.is_object()) {
            for (auto const& [db, v] : s.at("databases").as_object()) {
                in_flight = in_flight || v.at("in_flight").to_number<double>() > 0;
            }
        }
        if (now != last || in_flight) {
            last = std::move(now);
            still_since = std::chrono::steady_clock::now();
        } else if (std::chrono::steady_clock::now() - still_since >= 1s) {
            return;
        }
        BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                              "the instance on port " << port << " did not go quiet in 60 s");
    }
}

BOOST_AUTO_TEST_CASE(a_paused_instance_publishes_nothing_for_databases_that_moved) {
    group_case c;
    auto inst = start_three(c, "grp-zombie");
    std::vector<instance*> live{&inst[0], &inst[1], &inst[2]};
    std::size_t samples = 0;
    writer w(test_support::couch_url(), c.dbs, 777);
    wait_all_members(live);
    settle(c, live, samples);
    std::this_thread::sleep_for(2s);

    // The zombie-to-be: the instance that runs the most databases.
    auto const zi = busiest(inst);
    auto& z = inst[zi];
    auto const others = all_but(inst, zi);
    // What it runs, has published and has in flight, read while nothing is
    // written: a row read between these reads and SIGSTOP would be published
    // after the pause without having been counted (under load, a round of
    // reads lets dozens through).
    w.pause();
    quiesce(z.port);
    auto before = status_of(z.port);
    BOOST_REQUIRE(before.is_object());
    std::map<std::string, double> in_flight;
    for (auto const& [db, v] : before.at("databases").as_object()) {
        in_flight[std::string(db)] = v.at("in_flight").to_number<double>();
    }
    auto published0 = published_by_db(z.port);
    BOOST_REQUIRE(!in_flight.empty());

    // Paused past the session timeout: the group moves its databases.
    z.proc->signal(SIGSTOP);
    w.resume();
    settle(c, others, samples);
    std::this_thread::sleep_for(3s); // the writer keeps changing its old databases
    z.proc->signal(SIGCONT);
    // It finds out, releases them, rejoins and may get a share back.
    BOOST_REQUIRE_MESSAGE(wait_for_log(z.dir + ".log", "did not run for", 30s), "log: " << z.dir << ".log");
    std::this_thread::sleep_for(8s);
    settle(c, live, samples);
    auto now_runs = status_of(z.port).at("databases").as_object();
    auto published1 = published_by_db(z.port);
    w.stop();

    double moved_increase = 0, moved_in_flight = 0;
    std::size_t moved = 0;
    for (auto const& [db, f] : in_flight) {
        if (now_runs.contains(db)) {
            continue; // given back to it by the rebalance after it rejoined
        }
        ++moved;
        moved_increase += published1[db] - published0[db];
        moved_in_flight += f;
    }
    report("group test (zombie): databases moved away=" + std::to_string(moved) + " published by the zombie "
           "after its pause=" + std::to_string(moved_increase) + " in flight when paused=" +
           std::to_string(moved_in_flight));
    BOOST_TEST_INFO("zombie log: " << z.dir << ".log");
    BOOST_REQUIRE(moved > 0u);
    // Only what was already in flight when it was paused may be acknowledged
    // afterwards.
    BOOST_TEST(moved_increase <= moved_in_flight);
    for (auto* i : live) {
        BOOST_TEST(stop(*i->proc) == 0);
    }
}

BOOST_AUTO_TEST_CASE(a_rolling_restart_under_load_loses_nothing) {
    group_case c;
    auto inst = start_three(c, "grp-roll");
    std::vector<instance*> live{&inst[0], &inst[1], &inst[2]};
    std::size_t samples = 0;
    writer w(test_support::couch_url(), c.dbs, 4242);
    wait_all_members(live);
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
        wait_all_members(live);
        settle(c, live, samples);
    }
    audit(c, live, w, "rolling restart of 3 instances, at-least-once: ownership_samples=" + std::to_string(samples));
}

// Exactly-once in a group: one transactional producer per assignment
// partition. A kill -9, a zombie paused past the session timeout and a
// SIGTERM, all under load; a read_committed reader must then see every
// change exactly once.
BOOST_AUTO_TEST_CASE(exactly_once_survives_kill_zombie_and_restart_without_duplicates) {
    group_case c;
    c.delivery = "exactly-once";
    auto inst = start_three(c, "grp-eos");
    std::vector<instance*> live{&inst[0], &inst[1], &inst[2]};
    std::size_t samples = 0;
    writer w(test_support::couch_url(), c.dbs, 9090);
    wait_all_members(live);
    settle(c, live, samples);
    for (auto* i : live) {
        auto g = status_of(i->port).at("group");
        BOOST_TEST(g.at("transactional_partitions").as_array() == g.at("partitions").as_array(),
                   "every assigned partition has its producer: " << boost::json::serialize(g));
    }
    std::this_thread::sleep_for(2s);

    // kill -9 of the busiest: its open transactions are aborted by the
    // members that take its partitions over.
    auto const k = busiest(inst);
    inst[k].proc->signal(SIGKILL);
    inst[k].proc->wait_for_exit(10s);
    auto const failover_s = settle(c, all_but(inst, k), samples);
    inst[k].port = test_support::free_port();
    inst[k].proc = start_bridge(c.options(inst[k].dir), inst[k].port);
    wait_all_members(live);
    settle(c, live, samples);
    std::this_thread::sleep_for(2s);

    // A zombie: paused past the session timeout while it holds partitions.
    auto const zi = busiest(inst);
    inst[zi].proc->signal(SIGSTOP);
    settle(c, all_but(inst, zi), samples);
    std::this_thread::sleep_for(3s);
    inst[zi].proc->signal(SIGCONT);
    BOOST_REQUIRE_MESSAGE(wait_for_log(inst[zi].dir + ".log", "did not run for", 30s),
                          "log: " << inst[zi].dir << ".log");
    std::this_thread::sleep_for(8s);
    settle(c, live, samples);

    // A clean restart of another one.
    auto const r = (zi + 1) % inst.size();
    BOOST_TEST(stop(*inst[r].proc) == 0);
    settle(c, all_but(inst, r), samples);
    inst[r].port = test_support::free_port();
    inst[r].proc = start_bridge(c.options(inst[r].dir), inst[r].port);
    wait_all_members(live);
    settle(c, live, samples);
    audit(c, live, w,
          "3 instances, 24 databases, exactly-once, kill -9 + zombie + restart: failover_s=" +
              std::to_string(failover_s) + " ownership_samples=" + std::to_string(samples));
}

BOOST_AUTO_TEST_SUITE_END()
