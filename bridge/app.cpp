// run_bridge: the bridge process from start to stop. The parts it puts
// together live in bridge/app_*.cpp (see bridge/app_parts.hpp); this file
// keeps their order, which matters.

#include "bridge/app.hpp"

#include "bridge/app_parts.hpp"
#include "bridge/exit_watchdog.hpp"
#include "checkpoint/version.hpp"
#include "common/redact.hpp"
#include "common/version.hpp"
#include "kafka/version.hpp"
#include "metrics/process.hpp"
#include "metrics/registry.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <thread>
#include <vector>

namespace asio = boost::asio;

namespace bridge {

namespace {

// One thread by default: librdkafka and RocksDB have threads of their
// own, and at a real CouchDB's pace a second event-loop thread mostly
// hands rows and delivery reports across threads (docs/BENCHMARKS.md,
// "one event-loop thread": 3.4 -> 1.1 context switches per change).
void run_event_loop(config const& cfg, event_loop& ioc) {
    unsigned const n_threads = cfg.io_threads > 0 ? static_cast<unsigned>(cfg.io_threads)
                                                  : std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < n_threads; ++i) {
        threads.emplace_back([&ioc] { ioc.run(); });
    }
    ioc.run();
    for (auto& t : threads) {
        t.join();
    }
}

} // namespace

std::string checkpoint_source(config const& cfg) {
    if (!cfg.source_name.empty()) {
        return cfg.source_name;
    }
    auto s = common::redact_url(cfg.couch_url);
    while (!s.empty() && s.back() == '/') {
        s.pop_back();
    }
    return s;
}

int run_bridge(config const& cfg) {
    if (cfg.databases.empty() && cfg.db_patterns.empty()) {
        spdlog::warn("no --db given: following only the databases the admin API added (PUT /databases/NAME); "
                     "give --db NAME (repeatable) or COUCH_BRIDGE_DB=a,b");
    }
    // Declared first, so destroyed (disarmed) last: it bounds the
    // destructors of everything below too.
    exit_watchdog watchdog;
    event_loop ioc;
    auto work = asio::make_work_guard(ioc);
    metrics::registry registry;
    metrics::register_process_metrics(registry);
    metrics::register_build_info(registry, {{"version", common::version},
                                            {"librdkafka", kafka::librdkafka_version()},
                                            {"rocksdb", checkpoint::rocksdb_version()}});

    // Everything that can fail at startup fails here, before any feed opens.
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    kafka_side kafka;
    starting_status starting;
    if (!open_kafka_side(cfg, ioc, registry, kafka)) {
        return 2;
    }
    register_routing_metrics(registry, *kafka.routes);

    // The parts below refer to the ones above: declared (and so destroyed)
    // in that order.
    checkpoint_side checkpoints(cfg, registry, kafka);
    fleet_side f;
    if (!build_fleet_side(cfg, ioc, registry, kafka, checkpoints, starting, f)) {
        return 2;
    }
    if (!start_http(kafka)) {
        return 2;
    }
    if (auto code = verify_kafka_cluster(cfg, ioc, signals, kafka, starting)) {
        return *code;
    }
    if (!start_following(cfg, registry, kafka, checkpoints, f)) {
        return 2;
    }

    stop_sequence stop({cfg, ioc, work, signals, watchdog, kafka, checkpoints, f});
    report_catch_up_progress(ioc, *f.databases, stop.stopping());
    stop.wait_for_signal();
    run_event_loop(cfg, ioc);
    return stop.finish();
}

} // namespace bridge
