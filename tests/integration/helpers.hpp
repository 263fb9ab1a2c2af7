#pragma once

// Helpers of the end-to-end tests that run the real binary: what reached
// Kafka, the bridge's log and /status, the checkpoints command.

#include "bridge_process.hpp"

#include "tests/support/couch_http.hpp"
#include "tests/support/kafka_consume.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace integration {

using namespace std::chrono_literals;
namespace json = boost::json;

inline std::vector<std::string> const commcare_topics{"case", "form", "domain", "commcare-user", "web-user", "group",
                                               "synclog-sql", "app", "location", "meta"};

// Document ids of `db`'s records in `brokers`' commcare topics.
inline std::multiset<std::string> ids_in_kafka(std::string const& brokers, std::string const& db) {
    std::multiset<std::string> out;
    for (auto& r : test_support::consume_all(brokers, commcare_topics)) {
        if (r.header("database") == db) {
            out.insert(r.key);
        }
    }
    return out;
}

// Waits until every id in `want` is in Kafka (or 90 s); returns what is there.
inline std::multiset<std::string> wait_for_ids(std::string const& brokers, std::string const& db,
                                        std::set<std::string> const& want) {
    auto const deadline = std::chrono::steady_clock::now() + 90s;
    std::multiset<std::string> got;
    for (;;) {
        got = ids_in_kafka(brokers, db);
        bool all = true;
        for (auto const& id : want) {
            all = all && got.count(id) > 0;
        }
        if (all || std::chrono::steady_clock::now() > deadline) {
            return got;
        }
        std::this_thread::sleep_for(300ms);
    }
}

inline void put_case(std::string const& db, std::string const& id) {
    test_support::couch_put_doc(test_support::couch_url(), db, id,
                                {{"doc_type", "CommCareCase"}, {"domain", "demo"}, {"type", "patient"}});
}

// The bridge's /metrics text, empty while it does not answer.
inline std::string metrics_of(unsigned short port) {
    try {
        return test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/metrics").body;
    } catch (std::exception const&) {
        return {};
    }
}

// The value of a metric line ("name{labels} value"), -1 when absent.
inline double metric_value(std::string const& text, std::string const& series) {
    auto const at = text.find("\n" + series + " ");
    if (at == std::string::npos) {
        return -1;
    }
    return std::stod(text.substr(at + series.size() + 2));
}

inline std::string read_log(std::string const& path) {
    try {
        return test_support::read_file(path);
    } catch (std::exception const&) {
        return {};
    }
}

// Waits until the log at `path` contains `what` (or `timeout`).
inline bool wait_for_log(std::string const& path, std::string const& what, std::chrono::seconds timeout = 90s) {
    auto const deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (read_log(path).find(what) != std::string::npos) {
            return true;
        }
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

// /status of the bridge on `port`, or null.
inline json::value status_of(unsigned short port) {
    try {
        auto r = test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/status");
        return r.status == 200 ? json::parse(r.body) : json::value();
    } catch (std::exception const&) {
        return {};
    }
}

// GET /databases of the bridge on `port` (empty until it answers).
inline json::object databases_of(unsigned short port) {
    try {
        auto r = test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/databases");
        if (r.status == 200) {
            return json::parse(r.body).at("databases").as_object();
        }
    } catch (std::exception const&) {
        // not listening yet
    }
    return {};
}

// Waits until the database's checkpoint covers `published` records.
inline bool wait_for_checkpoint(unsigned short port, std::string const& db, std::uint64_t published) {
    auto const deadline = std::chrono::steady_clock::now() + 90s;
    while (std::chrono::steady_clock::now() < deadline) {
        auto s = status_of(port);
        if (s.is_object()) {
            auto const* d = s.at("databases").as_object().if_contains(db);
            if (d != nullptr && d->at("published").to_number<std::uint64_t>() >= published &&
                !d->at("checkpoint_seq").as_string().empty() && d->at("in_flight").to_number<std::uint64_t>() == 0) {
                return true;
            }
        }
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

inline std::string checkpoints_list(std::string const& dir) {
    static int n = 0;
    auto const out = dir + ".list" + std::to_string(++n); // the log file appends: one per call
    test_support::child_process list(integration::bridge_binary(), {"--checkpoint-dir", dir, "checkpoints", "list"},
                                     out);
    BOOST_REQUIRE(list.wait_for_exit(30s).value_or(-1) == 0);
    return test_support::read_file(out);
}

inline int stop(test_support::child_process& p) {
    p.signal(SIGTERM);
    return p.wait_for_exit(90s).value_or(-1);
}

} // namespace integration
