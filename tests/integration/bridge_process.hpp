#pragma once

#include "tests/support/couch_http.hpp"
#include "tests/support/process.hpp"
#include "tests/support/test_env.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace integration {

// The couch-kafka-bridge binary under test (ctest sets CKB_BRIDGE_BINARY).
inline std::string bridge_binary() {
    char const* b = std::getenv("CKB_BRIDGE_BINARY");
    if (!b || !*b) {
        throw std::runtime_error("CKB_BRIDGE_BINARY is not set: run this test through ctest");
    }
    return b;
}

struct bridge_options {
    std::vector<std::string> databases;
    std::string checkpoint_dir;
    std::string brokers;
    std::vector<std::string> extra;
};

// Starts the bridge against the test servers (or the CouchDB at
// `couch_url`); its log goes to <checkpoint_dir>.log.
inline std::unique_ptr<test_support::child_process> start_bridge(bridge_options const& o, unsigned short http_port,
                                                                 std::string const& couch_url = {}) {
    std::vector<std::string> args{"--couch-url", couch_url.empty() ? test_support::couch_url() : couch_url,
                                  "--kafka-brokers", o.brokers,
                                  "--checkpoint-dir", o.checkpoint_dir, "--http-listen",
                                  "127.0.0.1:" + std::to_string(http_port), "--log-level", "debug"};
    // 200 ms unless the test sets its own interval.
    if (std::find(o.extra.begin(), o.extra.end(), "--checkpoint-interval") == o.extra.end()) {
        args.insert(args.end(), {"--checkpoint-interval", "200"});
    }
    for (auto const& db : o.databases) {
        args.push_back("--db");
        args.push_back(db);
    }
    args.insert(args.end(), o.extra.begin(), o.extra.end());
    return std::make_unique<test_support::child_process>(bridge_binary(), args, o.checkpoint_dir + ".log");
}

// Asks the bridge at `base` for /healthz every 100 ms until it answers 200
// or `limit` passes; returns the last answer (status 0: it never listened).
inline test_support::http_result wait_for_health(std::string const& base, std::chrono::seconds limit) {
    test_support::http_result health;
    for (auto const deadline = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < deadline;) {
        try {
            health = test_support::couch_request(base, "GET", "/healthz");
            if (health.status == 200) {
                break;
            }
        } catch (std::exception const&) {
            // not listening (yet)
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return health;
}

} // namespace integration
