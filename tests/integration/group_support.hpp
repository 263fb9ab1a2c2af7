#pragma once

// The group-mode end-to-end cases' world: a group of 24 databases, three
// instances of the real binary, and what they run (from /status).

#include "bridge_process.hpp"
#include "change_audit.hpp"
#include "helpers.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <array>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace integration {
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
inline std::map<std::string, int> owners(std::vector<instance*> const& live) {
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
inline double settle(group_case const& c, std::vector<instance*> const& live, std::size_t& samples) {
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
inline void wait_all_members(std::vector<instance*> const& live) {
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
inline std::array<instance, 3> start_three(group_case const& c, std::string const& name,
                                           std::function<bridge_options(std::string const&)> const& options = {}) {
    std::array<instance, 3> inst;
    for (std::size_t i = 0; i < inst.size(); ++i) {
        inst[i].dir = test_support::make_temp_dir(name + "-" + std::to_string(i));
        inst[i].port = test_support::free_port();
        inst[i].proc = start_bridge(options ? options(inst[i].dir) : c.options(inst[i].dir), inst[i].port);
    }
    return inst;
}

// The end of a case: waits until Kafka holds every change (read_committed:
// in exactly-once mode only what was committed), then stops the instances.
// Exactly-once: read again after the stop (the last transactions committed)
// and require each change once. (Stopping first would count rows the
// instances had not read yet when they stopped as lost.) Reports the
// figures under `what`.
inline void audit(group_case const& c, std::vector<instance*> const& live, writer& w, std::string const& what) {
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
inline std::size_t busiest(std::array<instance, 3> const& inst) {
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

inline std::vector<instance*> all_but(std::array<instance, 3>& inst, std::size_t skip) {
    std::vector<instance*> out;
    for (std::size_t i = 0; i < inst.size(); ++i) {
        if (i != skip) {
            out.push_back(&inst[i]);
        }
    }
    return out;
}

// couch_bridge_records_published_total of the instance on `port`, by database.
inline std::map<std::string, double> published_by_db(unsigned short port) {
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

} // namespace integration
