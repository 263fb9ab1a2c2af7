#include "bridge/app.hpp"

#include "bridge/admin_api.hpp"
#include "bridge/app_parts.hpp"
#include "bridge/discovery.hpp"
#include "bridge/exactly_once.hpp"
#include "bridge/exit_watchdog.hpp"
#include "bridge/kafka_checkpoints.hpp"
#include "bridge/kafka_startup.hpp"
#include "bridge/fleet.hpp"
#include "bridge/group.hpp"
#include "bridge/group_commands.hpp"
#include "bridge/group_transactions.hpp"
#include "bridge/pipeline.hpp"
#include "bridge/routing.hpp"
#include "bridge/startup.hpp"
#include "bridge/status_api.hpp"
#include "checkpoint/deletion_memory.hpp"
#include "checkpoint/flusher.hpp"
#include "checkpoint/kafka_store.hpp"
#include "checkpoint/store.hpp"
#include "checkpoint/watermark.hpp"
#include "checkpoint/version.hpp"
#include "common/redact.hpp"
#include "common/version.hpp"
#include "couch/changes_feed.hpp"
#include "couch/source.hpp"
#include "kafka/producer.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/presence.hpp"
#include "kafka/version.hpp"
#include "metrics/http_server.hpp"
#include "metrics/process.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <unistd.h>

namespace asio = boost::asio;

namespace bridge {

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

    checkpoint_side checkpoints(cfg, ioc, registry, kafka);

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
    if (!start_following(cfg, ioc, registry, kafka, checkpoints, f)) {
        return 2;
    }

    std::atomic<bool> stopping{false};
    report_catch_up_progress(ioc, *f.databases, stopping);

    // Shutdown: stop reading, wait (bounded) for acknowledgements, flush.
    int exit_code = 0;
    auto first_signal_at = std::chrono::steady_clock::time_point{};
    // A second signal exits at once. One that arrives within 500 ms of the
    // first is taken as the same request delivered twice (`timeout`, a shell
    // or a supervisor signalling the whole process group as well as the
    // process), not as an operator insisting.
    std::function<void(boost::system::error_code, int)> on_second_signal =
        [&](boost::system::error_code ec, int sig) {
            if (ec) {
                return;
            }
            if (std::chrono::steady_clock::now() - first_signal_at < std::chrono::milliseconds(500)) {
                signals.async_wait(on_second_signal);
                return;
            }
            // Still safe: checkpoints only ever cover acknowledged records.
            spdlog::warn("signal {} again: exiting at once", sig);
            spdlog::default_logger()->flush();
            ::_exit(130);
        };
    signals.async_wait([&](boost::system::error_code ec, int sig) {
        if (ec) {
            return;
        }
        first_signal_at = std::chrono::steady_clock::now();
        signals.async_wait(on_second_signal);
        stopping = true;
        // --shutdown-timeout bounds the wait for acknowledgements; the last
        // checkpoint write and leaving the group may take stop_grace more,
        // and whatever is left after that is cut short by the watchdog.
        constexpr auto stop_grace = std::chrono::seconds(3);
        auto const deadline = first_signal_at + cfg.shutdown_timeout;
        if (kafka.kafka_positions) {
            kafka.kafka_positions->stop_by(deadline + stop_grace);
        }
        if (f.group) {
            f.group->stop_by(deadline + stop_grace);
        }
        watchdog.arm(deadline + 2 * stop_grace);
        asio::co_spawn(
            ioc,
            [&, sig, deadline]() -> asio::awaitable<void> {
                asio::steady_timer t(ioc);
                if (f.finder) {
                    f.finder->stop(); // first: it must not start pipelines any more
                    for (int i = 0; i < 250 && !f.finder->stopped() && std::chrono::steady_clock::now() < deadline;
                         ++i) {
                        t.expires_after(std::chrono::milliseconds(20));
                        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                    }
                }
                f.databases->stop_all();
                std::size_t in_flight = f.databases->in_flight();
                spdlog::info("signal {}: stopping; waiting up to {} ms for {} in-flight record(s)", sig,
                             cfg.shutdown_timeout.count(), in_flight);
                for (;;) {
                    in_flight = f.databases->in_flight();
                    if (in_flight == 0 || std::chrono::steady_clock::now() >= deadline) {
                        break;
                    }
                    t.expires_after(std::chrono::milliseconds(20));
                    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                }
                if (in_flight > 0) {
                    spdlog::warn("shutdown timeout: {} record(s) still unacknowledged; they will be sent again at the "
                                 "next start",
                                 in_flight);
                    exit_code = 1;
                }
                // Let the pipelines' last delivery reports reach the flusher.
                t.expires_after(std::chrono::milliseconds(10));
                co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                checkpoints.flusher.stop();
                if (auto fec = checkpoints.flusher.flush_now()) {
                    spdlog::error("final checkpoint flush failed: {}", fec.message());
                    exit_code = 1;
                } else {
                    spdlog::info("checkpoints flushed");
                }
                watchdog.set_code(exit_code);
                kafka.http->stop();
                signals.cancel();
                work.reset();
                ioc.stop();
            },
            asio::detached);
    });

    // One thread by default: librdkafka and RocksDB have threads of their
    // own, and at a real CouchDB's pace a second event-loop thread mostly
    // hands rows and delivery reports across threads (docs/BENCHMARKS.md,
    // "one event-loop thread": 3.4 -> 1.1 context switches per change).
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
    // Nothing runs the event loop any more, but coroutines may still wait in
    // it: a pipeline stopped in the middle of a batch (holding its records
    // because the group lease is not valid, or waiting for queue space)
    // holds the producer's batch gate, released by the destructors of its
    // frame. Left to ~io_context, those ran after the producer and the fleet
    // were gone (an abort or a segfault after "stopped (exit 0)"); destroyed
    // here, everything they refer to still exists.
    ioc.shutdown();
    // Leaving the group revokes this member's partitions through the fleet:
    // before the fleet goes.
    if (f.group) {
        f.group->drop_assigned_hook(); // an assignment during the stop must not reach `commands`
    }
    f.commands.reset(); // it acts on the fleet for the group
    f.group.reset();
    if (checkpoints.committer) {
        checkpoints.committer->join(); // the flusher's loop ended with flusher.stop()
    }
    checkpoints.running_fleet = nullptr;
    // The producer goes first: anything it still holds completes into the
    // stopped io_context and is discarded there (never reported as delivered).
    kafka.catch_up_producer.reset();
    kafka.producer.reset();
    kafka.embedded.reset();
    spdlog::info("stopped (exit {})", exit_code);
    return exit_code;
}

} // namespace bridge
