// Group mode through the operator's side: the admin API of any instance acts
// for the group, and databases discovered while the group runs start on
// their owner only. Same suite (group_mode) as group_test.cpp.
#include "group_support.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <map>

using namespace integration;

BOOST_AUTO_TEST_SUITE(group_mode)

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
