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

#include <algorithm>
#include <array>
#include <csignal>
#include <functional>
#include <map>
#include <optional>
#include <sstream>

using namespace integration;

namespace {

struct group_case {
    std::string delivery = "at-least-once";
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
                 "topic.metadata.refresh.interval.ms=1000", "--delivery", delivery}};
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

// Waits until every instance is a member with partitions of its own (the
// rebalance after the last one joined is done).
void wait_all_members(std::vector<instance*> const& live) {
    auto const deadline = std::chrono::steady_clock::now() + 120s;
    for (;;) {
        bool all = true;
        for (auto* i : live) {
            auto s = status_of(i->port);
            all = all && s.is_object() && !s.at("group").at("partitions").as_array().empty() &&
                  !s.at("group").at("member_id").as_string().empty();
        }
        if (all) {
            return;
        }
        BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline, "not every instance got partitions");
        std::this_thread::sleep_for(200ms);
    }
}

// Three instances of the group, started at once (with `options` instead of
// the case's own when given).
std::array<instance, 3> start_three(group_case const& c, std::string const& name,
                                    std::function<bridge_options(std::string const&)> const& options = {}) {
    std::array<instance, 3> inst;
    for (std::size_t i = 0; i < inst.size(); ++i) {
        inst[i].dir = test_support::make_temp_dir(name + "-" + std::to_string(i));
        inst[i].port = test_support::free_port();
        inst[i].proc = start_bridge(options ? options(inst[i].dir) : c.options(inst[i].dir), inst[i].port);
    }
    return inst;
}

// Stops what runs at the end of a case, then checks that Kafka holds every
// change CouchDB shows; reports the figures under `what`.
// Waits until Kafka holds every change (read_committed: in exactly-once
// mode only what was committed), then stops the instances. Exactly-once:
// read again after the stop (the last transactions committed) and require
// each change once. (Stopping first would count rows the instances had not
// read yet when they stopped as lost.)
void audit(group_case const& c, std::vector<instance*> const& live, writer& w, std::string const& what) {
    std::this_thread::sleep_for(2s);
    w.stop();
    BOOST_REQUIRE_MESSAGE(w.error().empty(), "writer failed: " << w.error());
    auto expected = couch_changes(test_support::couch_url(), c.dbs);
    bool const once = c.delivery == "exactly-once";
    auto got = wait_complete(expected, c.topics);
    for (auto* i : live) {
        BOOST_TEST(stop(*i->proc) == 0);
    }
    if (once) {
        got = wait_complete(expected, c.topics);
    }
    auto lost = missing(expected, got);
    report("group test (" + what + "): writes=" + std::to_string(w.writes()) + " changes=" +
           std::to_string(expected.size()) + " records=" + std::to_string(got.total) + " lost=" +
           std::to_string(lost) + " duplicates=" + std::to_string(got.total - got.unique.size()));
    BOOST_TEST(expected.size() > 100u);
    BOOST_TEST(lost == 0u);
    if (once) {
        BOOST_TEST(got.total == got.unique.size(), "duplicates in exactly-once mode: " << got.total - got.unique.size());
    }
}

// The instance that runs the most databases now.
std::size_t busiest(std::array<instance, 3> const& inst) {
    std::size_t zi = 0, most = 0;
    for (std::size_t i = 0; i < inst.size(); ++i) {
        auto st = status_of(inst[i].port);
        auto const n = st.is_object() ? st.at("databases").as_object().size() : 0;
        if (n > most) {
            most = n;
            zi = i;
        }
    }
    return zi;
}

std::vector<instance*> all_but(std::array<instance, 3>& inst, std::size_t skip) {
    std::vector<instance*> out;
    for (std::size_t i = 0; i < inst.size(); ++i) {
        if (i != skip) {
            out.push_back(&inst[i]);
        }
    }
    return out;
}

} // namespace

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

// couch_bridge_records_published_total of the instance on `port`, by database.
std::map<std::string, double> published_by_db(unsigned short port) {
    std::map<std::string, double> out;
    auto r = test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/metrics");
    std::istringstream lines(r.body);
    std::string const name = "couch_bridge_records_published_total{";
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind(name, 0) != 0) {
            continue;
        }
        auto const db_at = line.find("database=\"");
        if (db_at == std::string::npos) {
            continue;
        }
        auto const db_end = line.find('"', db_at + 10);
        out[line.substr(db_at + 10, db_end - db_at - 10)] += std::stod(line.substr(line.rfind(' ') + 1));
    }
    return out;
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

// The admin API of any instance answers for the whole group: /databases
// names every database's owner the same way on every instance, and a pause,
// a rewind and a resume sent to an instance that does not own the database
// take effect on the one that does.
BOOST_AUTO_TEST_CASE(the_admin_api_of_any_instance_acts_for_the_group) {
    group_case c;
    auto inst = start_three(c, "grp-admin");
    std::vector<instance*> live{&inst[0], &inst[1], &inst[2]};
    std::size_t samples = 0;
    {
        writer w(test_support::couch_url(), c.dbs, 55);
        std::this_thread::sleep_for(3s);
        w.stop();
        BOOST_REQUIRE_MESSAGE(w.error().empty(), "writer failed: " << w.error());
    }
    wait_all_members(live);
    settle(c, live, samples);
    auto api = [](instance const& i, std::string const& method, std::string const& target) {
        return test_support::couch_request("http://127.0.0.1:" + std::to_string(i.port), method, target);
    };

    // Who runs what (from /status), and each instance's own name.
    std::map<std::string, std::size_t> runner;
    std::vector<std::string> names;
    for (std::size_t i = 0; i < inst.size(); ++i) {
        auto const running = status_of(inst[i].port).at("databases").as_object();
        for (auto const& [db, v] : running) {
            runner[std::string(db)] = i;
        }
        names.emplace_back(boost::json::parse(api(inst[i], "GET", "/databases").body).at("owner").as_string());
    }
    BOOST_REQUIRE(runner.size() == c.dbs.size());
    // /readyz and the metrics say which member this is.
    for (auto const& i : inst) {
        auto const member = std::string(status_of(i.port).at("group").at("member_id").as_string());
        BOOST_REQUIRE(!member.empty());
        BOOST_TEST(api(i, "GET", "/readyz").body.find("member " + member) != std::string::npos);
        BOOST_TEST(api(i, "GET", "/metrics").body.find("couch_bridge_group_member{group=\"" + c.group + "\",member_id=\"" +
                                                       member + "\"} 1") != std::string::npos);
    }
    // Every instance names the same owner for every database.
    for (std::size_t i = 0; i < inst.size(); ++i) {
        auto listed = boost::json::parse(api(inst[i], "GET", "/databases").body).at("databases").as_object();
        for (auto const& db : c.dbs) {
            BOOST_TEST(std::string(listed.at(db).at("owner").as_string()) == names[runner[db]],
                       "instance " << i << " names the owner of " << db);
        }
    }

    // A database owned by instance a, changed through instance b.
    auto const& d = c.dbs[0];
    auto const a = runner[d];
    auto const b = (a + 1) % inst.size();
    auto r = api(inst[b], "POST", "/databases/" + d + "/pause");
    BOOST_TEST(r.status == 200, r.status << " " << r.body);
    auto const deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
        auto dbs = status_of(inst[a].port).at("databases").as_object();
        if (dbs.contains(d) && dbs.at(d).at("state").as_string() == "paused") {
            break;
        }
        BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline, "the owner did not pause " << d);
        std::this_thread::sleep_for(200ms);
    }
    for (auto i : {b, (a + 2) % inst.size()}) {
        BOOST_TEST(!status_of(inst[i].port).at("databases").as_object().contains(d), "a non-owner lists " << d);
    }
    r = api(inst[(a + 2) % inst.size()], "POST", "/databases/" + d + "/resume");
    BOOST_TEST(r.status == 200, r.status << " " << r.body);

    // A rewind through a non-owner: the owner applies it and answers, and
    // publishes the database again from the start.
    auto const& d2 = c.dbs[1];
    auto const a2 = runner[d2];
    auto const b2 = (a2 + 1) % inst.size();
    settle(c, live, samples);
    std::this_thread::sleep_for(2s);
    auto const before = published_by_db(inst[a2].port)[d2];
    BOOST_REQUIRE(before > 0);
    r = api(inst[b2], "POST", "/databases/" + d2 + "/rewind?since=0");
    BOOST_TEST(r.status == 200, r.status << " " << r.body);
    for (auto const until = std::chrono::steady_clock::now() + 60s;;) {
        if (published_by_db(inst[a2].port)[d2] >= 2 * before) {
            break;
        }
        BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < until,
                              "the owner did not publish " << d2 << " again after the rewind");
        std::this_thread::sleep_for(200ms);
    }
    // Bad input is refused by the instance asked, before it reaches the group.
    BOOST_TEST(api(inst[b2], "POST", "/databases/" + d2 + "/rewind?since=nonsense").status == 400);
    settle(c, live, samples);
    report("group test (admin API): pause, resume and rewind through non-owners applied by the owner");
    for (auto* i : live) {
        BOOST_TEST(stop(*i->proc) == 0);
    }
}

// Discovery in a group: every instance runs it, but a database found while
// the group runs starts on its owner only.
BOOST_AUTO_TEST_CASE(databases_discovered_while_running_start_on_their_owner_only) {
    group_case c;
    auto const found_prefix = c.prefix + "-found";
    auto options = [&](std::string const& dir) {
        auto o = c.options(dir);
        o.databases.clear();
        o.extra.insert(o.extra.end(), {"--db-pattern", found_prefix + "-.*", "--discovery-interval", "500"});
        return o;
    };
    auto inst = start_three(c, "grp-disc", options);
    std::vector<instance*> live{&inst[0], &inst[1], &inst[2]};
    wait_all_members(live);
    group_case found = c;
    found.dbs.clear();
    for (int i = 0; i < 8; ++i) {
        found.dbs.push_back(found_prefix + "-" + std::to_string(i));
        test_support::couch_create_db(test_support::couch_url(), found.dbs.back());
    }
    writer w(test_support::couch_url(), found.dbs, 31);
    std::size_t samples = 0;
    auto const took = settle(found, live, samples);
    audit(found, live, w, "discovery in a group, 8 databases created while 3 instances ran: settled_s=" +
                              std::to_string(took) + " ownership_samples=" + std::to_string(samples));
}

BOOST_AUTO_TEST_SUITE_END()
