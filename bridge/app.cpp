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

    couch::client_config client;
    client.url = cfg.couch_url;
    client.user = cfg.couch_user;
    client.password = cfg.couch_password;
    client.auth = cfg.couch_auth == "cookie" ? couch::client_config::auth_mode::cookie
                                             : couch::client_config::auth_mode::basic;
    client.ca_file = cfg.couch_ca_file;
    client.tls_verify = cfg.couch_tls_verify;

    publish_options publishing;
    publishing.payload = parse_payload_mode(cfg.payload);
    publishing.on_unpublishable = parse_unpublishable_policy(cfg.on_unpublishable);
    publishing.dlq_topic = cfg.dlq_topic;
    publishing.include_doc_types = cfg.include_doc_types;
    publishing.exclude_doc_types = cfg.exclude_doc_types;

    auto const source = checkpoint_source(cfg);
    couch::source_options sopts;
    sopts.max_connecting = static_cast<std::size_t>(cfg.couch_max_connecting);
    auto const couch_source = std::make_shared<couch::source>(common::redact_url(cfg.couch_url), sopts, registry);
    couch::feed_options feed_template;
    feed_template.keep_doc_text = publishing.payload != payload_mode::stub;
    feed_template.on_recreate = cfg.on_recreate == "fail" ? couch::feed_options::recreate_policy::fail
                                                          : couch::feed_options::recreate_policy::restart;
    feed_template.heartbeat = cfg.couch_heartbeat;
    feed_template.read_coalesce = cfg.couch_read_coalesce;
    try {
        feed_template.selector = selector_text(cfg.selector);
        feed_template.doc_ids = read_doc_ids(cfg.doc_ids_file);
        feed_template.filter = cfg.filter;
        int const kinds = !feed_template.selector.empty() + !feed_template.doc_ids.empty() + !cfg.filter.empty();
        if (kinds > 1) {
            throw std::invalid_argument("give at most one of --selector, --doc-ids and --filter");
        }
        if (!cfg.filter.empty() && cfg.filter.find('/') == std::string::npos) {
            throw std::invalid_argument("--filter must be ddoc/name, not '" + cfg.filter + "'");
        }
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return 2;
    }
    std::unique_ptr<group_transactions> group_txns; // group mode, exactly-once
    std::unique_ptr<group_ownership> group;
    std::function<bool(std::string const&)> owns;
    std::function<bool()> may_publish;
    std::function<fleet::transaction_unit(std::string const&)> unit_of;
    if (!cfg.group.empty()) {
        group = std::make_unique<group_ownership>(source, cfg.assignment_partitions);
        owns = [g = group.get()](std::string const& db) { return g->owns(db); };
        may_publish = [g = group.get()] { return g->may_publish(); };
        if (exactly_once(cfg)) {
            group_transactions_config gtc;
            gtc.bootstrap_servers = kafka.brokers;
            gtc.properties = kafka_client_properties(cfg);
            gtc.id_prefix = cfg.transactional_id.empty() ? cfg.group : cfg.transactional_id;
            gtc.source = source;
            gtc.partitions = cfg.assignment_partitions;
            gtc.commit_interval = cfg.commit_interval;
            gtc.bridge_version = common::version;
            group_txns = std::make_unique<group_transactions>(
                std::move(gtc), *kafka.kafka_positions, registry,
                [g = group.get()](std::int32_t p, std::string const&) { g->fenced(p); });
            unit_of = [t = group_txns.get()](std::string const& db) { return t->unit_of(db); };
        }
    }
    fleet databases(fleet::dependencies{ioc.get_executor(), client, couch_source, source, cfg.initial_since,
                                        window_limits{cfg.max_in_flight, cfg.max_in_flight_bytes}, feed_template,
                                        pipeline::dependencies{*kafka.producer, *kafka.routes, checkpoints.flusher,
                                                               registry, publishing,
                                                               cfg.deletion_memory ? &checkpoints.memory : nullptr,
                                                               may_publish, kafka.catch_up_producer.get()},
                                        *kafka.store, checkpoints.positions, owns, unit_of,
                                        std::make_shared<couch::client>(ioc.get_executor(), client, couch_source,
                                                                        &registry),
                                        static_cast<std::size_t>(cfg.max_open_feeds), cfg.idle_close});
    checkpoints.running_fleet = &databases;
    if (group_txns) {
        group_txns->attach(databases);
    }
    // Group mode: the admin API of any instance acts for the group.
    std::unique_ptr<group_commands> commands;
    admin_group admin;
    if (group) {
        group_commands_config gcc;
        gcc.bootstrap_servers = kafka.brokers;
        gcc.properties = kafka_client_properties(cfg);
        gcc.topic = command_topic(cfg);
        gcc.instance = instance_name();
        commands = std::make_unique<group_commands>(std::move(gcc), databases, owns, registry);
        admin.commands = commands.get();
        admin.refresh_owners = [g = group.get()] { g->refresh_owners(); };
        admin.owner_of = [g = group.get()](std::string const& db) { return g->owner_of(db); };
    }
    register_admin_api(*kafka.http, databases, cfg.admin_token, admin);
    // Discovery (--db-pattern) reports databases found and gone to the fleet.
    std::unique_ptr<discovery> finder;
    if (!cfg.db_patterns.empty()) {
        try {
            discovery_options dopts;
            dopts.patterns = cfg.db_patterns;
            dopts.exclude_patterns = cfg.exclude_db_patterns;
            dopts.interval = cfg.discovery_interval;
            dopts.heartbeat = cfg.couch_heartbeat;
            dopts.source_name = source;
            finder = std::make_unique<discovery>(
                ioc.get_executor(), client, dopts,
                discovery_hooks{[&databases](std::string const& db, bool live) { databases.found(db, live); },
                                [&databases](std::string const& db) { databases.gone(db); },
                                [&databases](std::string const& db) { databases.updated(db); },
                                [&databases](bool on) { databases.set_change_events(on); }},
                *kafka.store, checkpoints.positions, registry, databases.couch_client());
        } catch (std::exception const& e) {
            spdlog::error("startup failed: {}", e.what());
            return 2;
        }
    }
    register_status_endpoints(*kafka.http, status_sources{cfg, databases, checkpoints.flusher, *couch_source,
                                                          *kafka.producer, group.get(), group_txns.get(), finder.get(),
                                                          [&starting] { return starting.get(); }});
    if (!start_http(kafka)) {
        return 2;
    }
    if (auto code = verify_kafka_cluster(cfg, ioc, signals, kafka, starting)) {
        return *code;
    }
    asio::co_spawn(checkpoints.flusher_executor(ioc), checkpoints.flusher.run(), asio::detached);
    try {
        databases.start(cfg.databases);
        if (group) {
            commands->start(); // the group's admin changes, before any database starts here
            group->start(cfg, kafka.brokers, databases,
                         *kafka.kafka_positions, checkpoints.flusher, registry, group_txns.get(),
                         [c = commands.get()] { c->reassess(); });
        }
        if (finder) {
            finder->start();
        }
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return 2;
    }
    spdlog::info("couch-kafka-bridge {} following {} database(s) of {}; metrics on http://{}:{}/metrics",
                 common::version, databases.statuses().size(), common::redact_url(cfg.couch_url),
                 cfg.http_listen.substr(0, cfg.http_listen.rfind(':')), kafka.http->port());

    // Progress while catching up: rows read, pending, rate, ETA.
    std::atomic<bool> stopping{false};
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            std::unordered_map<std::string, std::uint64_t> last_rows;
            asio::steady_timer t(co_await asio::this_coro::executor);
            constexpr int period_s = 5;
            while (!stopping) {
                t.expires_after(std::chrono::seconds(period_s));
                co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                if (stopping) {
                    break;
                }
                for (auto const& s : databases.statuses()) {
                    auto& prev = last_rows[s.database];
                    auto delta = s.rows_read - prev;
                    prev = s.rows_read;
                    if (s.state != "catching_up" || delta == 0) {
                        continue;
                    }
                    double rate = static_cast<double>(delta) / period_s;
                    if (s.pending && rate > 0) {
                        spdlog::info("db {}: catching up: {} rows read, {} pending, {:.0f} rows/s, ETA {:.0f} s",
                                     s.database, s.rows_read, *s.pending, rate, static_cast<double>(*s.pending) / rate);
                    } else {
                        spdlog::info("db {}: catching up: {} rows read, {:.0f} rows/s", s.database, s.rows_read, rate);
                    }
                }
            }
        },
        asio::detached);

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
        if (group) {
            group->stop_by(deadline + stop_grace);
        }
        watchdog.arm(deadline + 2 * stop_grace);
        asio::co_spawn(
            ioc,
            [&, sig, deadline]() -> asio::awaitable<void> {
                asio::steady_timer t(ioc);
                if (finder) {
                    finder->stop(); // first: it must not start pipelines any more
                    for (int i = 0; i < 250 && !finder->stopped() && std::chrono::steady_clock::now() < deadline;
                         ++i) {
                        t.expires_after(std::chrono::milliseconds(20));
                        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                    }
                }
                databases.stop_all();
                std::size_t in_flight = databases.in_flight();
                spdlog::info("signal {}: stopping; waiting up to {} ms for {} in-flight record(s)", sig,
                             cfg.shutdown_timeout.count(), in_flight);
                for (;;) {
                    in_flight = databases.in_flight();
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
    if (group) {
        group->drop_assigned_hook(); // an assignment during the stop must not reach `commands`
    }
    commands.reset(); // it acts on the fleet for the group
    group.reset();
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
