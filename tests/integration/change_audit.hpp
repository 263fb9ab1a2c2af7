#pragma once

// What the crash tests share: a writer that keeps changing CouchDB
// databases, and the audit that compares what CouchDB's _changes shows with
// what Kafka holds (read_committed, librdkafka's default).

#include "tests/support/couch_http.hpp"
#include "tests/support/kafka_consume.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace integration {

inline std::vector<std::string> const doc_types{"CommCareCase", "XFormInstance", "CommCareUser"};

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
    // Stops writing once the write under way is done (returns then), until
    // resume().
    void pause() {
        paused_ = true;
        while (!idle_) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    void resume() { paused_ = false; }
    std::uint64_t writes() const { return writes_; }
    std::string const& error() const { return error_; }

private:
    void loop() {
        std::map<std::pair<std::string, std::string>, std::string> live; // (db,id) -> rev
        std::uint64_t n = 0;
        try {
            while (!stop_) {
                idle_ = false; // before paused_ is read: pause() waits for this write
                if (paused_) {
                    idle_ = true;
                    std::this_thread::sleep_for(std::chrono::milliseconds(2));
                    continue;
                }
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
        idle_ = true; // stopped, or failed: nothing more is written
    }

    std::string couch_;
    std::vector<std::string> dbs_;
    std::mt19937 rng_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> paused_{false};
    std::atomic<bool> idle_{false}; // no write under way, none until resume()
    std::atomic<std::uint64_t> writes_{0};
    std::string error_;
};

using change_key = std::tuple<std::string, std::string, std::string>; // db, id, rev

// What CouchDB's _changes shows: the current rev of every document.
inline std::set<change_key> couch_changes(std::string const& couch, std::vector<std::string> const& dbs) {
    std::set<change_key> out;
    for (auto const& db : dbs) {
        auto r = test_support::couch_request(couch, "GET", "/" + db + "/_changes");
        BOOST_REQUIRE_MESSAGE(r.status == 200, "GET " << db << "/_changes -> " << r.status);
        auto parsed = boost::json::parse(r.body);
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

inline kafka_view kafka_records(std::vector<std::string> const& topics) {
    kafka_view v;
    for (auto const& r : test_support::consume_all(test_support::kafka_brokers(), topics, std::chrono::seconds(120))) {
        v.unique.emplace(r.header("database"), r.key, r.header("rev"));
        ++v.total;
    }
    return v;
}

inline std::size_t missing(std::set<change_key> const& expected, kafka_view const& got) {
    std::size_t n = 0;
    for (auto const& k : expected) {
        n += got.unique.count(k) ? 0 : 1;
    }
    return n;
}

// Waits until Kafka holds every expected change (or the deadline passes);
// returns what Kafka holds then.
inline kafka_view wait_complete(std::set<change_key> const& expected, std::vector<std::string> const& topics) {
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

inline void report(std::string const& line) {
    std::cout << line << std::endl;
    if (char const* s = std::getenv("CKB_TEST_STATE_DIR")) {
        std::ofstream(std::string(s) + "/crash-test-figures.txt", std::ios::app) << line << '\n';
    }
}

} // namespace integration
