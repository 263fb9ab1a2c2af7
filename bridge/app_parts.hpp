#pragma once

// The parts of the bridge process that run_bridge (bridge/app.cpp) puts
// together, one concern each: the Kafka side (bridge/app_kafka.cpp), where
// checkpoints go (bridge/app_checkpoints.cpp), the fleet and its group
// wiring (bridge/app_fleet.cpp), and the stop (bridge/app_stop.cpp).
// Internal: included only by those files, never by another module.
//
// Each part is a non-movable bundle that the parts after it refer to. Its
// members are declared in the order they are built, so that they are
// destroyed in reverse, and run_bridge declares the parts in the same order:
// what the later parts refer to outlives them.

#include "bridge/admin_api.hpp"
#include "bridge/config.hpp"
#include "bridge/fleet.hpp"
#include "bridge/kafka_startup.hpp"
#include "bridge/routing.hpp"
#include "bridge/startup.hpp"
#include "checkpoint/deletion_memory.hpp"
#include "checkpoint/flusher.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

// kafka_startup.hpp declares checkpoint::store and kafka_store,
// kafka::embedded_cluster, presence and producer, metrics::registry.
namespace couch {
class source;
}
namespace metrics {
class http_server;
}

namespace bridge {

class discovery;
class exit_watchdog;
class group_commands;
class group_ownership;
class group_transactions;
class transaction_writer;

// The event loop of run_bridge, whose pending work can be destroyed
// explicitly (see stop_sequence::finish): execution_context::shutdown is
// what ~io_context does first, made callable earlier.
class event_loop : public boost::asio::io_context {
public:
    using boost::asio::execution_context::shutdown;
};

inline bool exactly_once(config const& cfg) { return cfg.delivery == "exactly-once"; }

// Why the bridge does not follow yet ("" once it does), for /status.
// Thread-safe.
class starting_status {
public:
    void set(std::string why) {
        std::lock_guard lock(mutex_);
        why_ = std::move(why);
    }
    std::string get() const {
        std::lock_guard lock(mutex_);
        return why_;
    }

private:
    mutable std::mutex mutex_;
    std::string why_;
};

// --- bridge/app_kafka.cpp ---------------------------------------------------

// Everything the start needs from Kafka and the checkpoint store, and the
// HTTP server (its address is known once the Kafka start is done).
struct kafka_side {
    kafka_side();
    kafka_side(kafka_side const&) = delete;
    kafka_side& operator=(kafka_side const&) = delete;
    ~kafka_side();

    std::unique_ptr<throwaway_dir> scratch;
    std::unique_ptr<kafka::embedded_cluster> embedded;
    std::string brokers; // the bootstrap servers: --kafka-brokers, or the embedded cluster's
    std::unique_ptr<kafka::producer> producer;
    std::unique_ptr<kafka::producer> catch_up_producer; // the catch-up lane; null when off
    std::unique_ptr<checkpoint::store> store;
    kafka_start started; // with --checkpoint-store kafka: the checkpoint topic's store and the running mark
    std::optional<router> routes;
    std::unique_ptr<metrics::http_server> http;
    std::function<std::string(std::chrono::milliseconds)> cluster_of; // the connected cluster's id ("" unknown)
    std::string cluster;                                                 // verified at startup, if it had to be
    bool must_verify_cluster = false;
};

// Everything that can fail at startup fails here, before any feed opens:
// the flags that do not go together, the routing, the checkpoint store, the
// producers and the Kafka start. Returns false after logging why.
bool open_kafka_side(config const& cfg, event_loop& ioc, metrics::registry& registry, kafka_side& kafka);

// The router's gauges, read at every collection.
void register_routing_metrics(metrics::registry& registry, router const& routes);

// Starts the HTTP server (once every endpoint is registered). Returns false
// after logging why it could not.
bool start_http(kafka_side& kafka);

// When kafka.must_verify_cluster: waits (serving HTTP, until a signal) for
// the cluster id and checks the store's checkpoints against it. Returns the
// exit code when the bridge must not go on.
std::optional<int> verify_kafka_cluster(config const& cfg, event_loop& ioc, boost::asio::signal_set& signals,
                                        kafka_side& kafka, starting_status& starting);

// --- bridge/app_checkpoints.cpp ---------------------------------------------

// The checkpoint writer and its flusher: RocksDB (bound to the Kafka
// cluster), the Kafka topic, or the exactly-once transaction. Each blocks (a
// synced RocksDB batch, the network), and before the positions the flusher
// writes the hard-delete memory (a fifth of the event loop's time at full
// speed, docs/BENCHMARKS.md, issue 16, lever 13): the flusher runs on a
// thread of its own, named ckb-checkpoint.
struct checkpoint_side {
    checkpoint_side(config const& cfg, metrics::registry& registry, kafka_side& kafka);
    ~checkpoint_side();
    checkpoint_side(checkpoint_side const&) = delete;
    checkpoint_side& operator=(checkpoint_side const&) = delete;

    // Where the flusher runs: the committer thread.
    boost::asio::any_io_executor flusher_executor();

    cluster_bound_writer rocksdb_writer;
    // Before every flusher below (they write its buffer first), after the store.
    checkpoint::deletion_memory memory;
    fleet* running_fleet = nullptr; // set once the fleet exists (the transaction hooks need it)
    checkpoint::flusher* flusher_ptr = nullptr;
    std::unique_ptr<transaction_writer> txn_writer;
    checkpoint::positions& positions; // the same RocksDB store, or the Kafka topic
    std::unique_ptr<boost::asio::thread_pool> committer; // the flusher's thread
    checkpoint::flusher flusher;
};

// --- bridge/app_fleet.cpp ---------------------------------------------------

// The fleet of pipelines and, in group mode, the group around it; the
// admin API and discovery that act on it.
struct fleet_side {
    fleet_side();
    fleet_side(fleet_side const&) = delete;
    fleet_side& operator=(fleet_side const&) = delete;
    ~fleet_side();

    couch::client_config client;
    publish_options publishing;
    std::string source; // checkpoint_source(cfg)
    std::shared_ptr<couch::source> couch_source;
    couch::feed_options feed_template;
    std::unique_ptr<group_transactions> group_txns; // group mode, exactly-once
    std::unique_ptr<group_ownership> group;
    std::function<bool(std::string const&)> owns;
    std::function<bool()> may_publish;
    std::function<fleet::transaction_unit(std::string const&)> unit_of;
    std::unique_ptr<fleet> databases;
    // Group mode: the admin API of any instance acts for the group.
    std::unique_ptr<group_commands> commands;
    admin_group admin;
    // Discovery (--db-pattern) reports databases found and gone to the fleet.
    std::unique_ptr<discovery> finder;
};

// Builds the fleet and what surrounds it, registers the admin API, the
// status endpoints. Returns false after logging why the start failed.
bool build_fleet_side(config const& cfg, event_loop& ioc, metrics::registry& registry, kafka_side& kafka,
                      checkpoint_side& checkpoints, starting_status const& starting, fleet_side& f);

// Starts the flusher, the databases given, the group and discovery.
// Returns false after logging why the start failed.
bool start_following(config const& cfg, metrics::registry& registry, kafka_side& kafka,
                     checkpoint_side& checkpoints, fleet_side& f);

// Progress while catching up: rows read, pending, rate, ETA; every 5 s
// until `stopping`.
void report_catch_up_progress(event_loop& ioc, fleet const& databases, std::atomic<bool> const& stopping);

// --- bridge/app_stop.cpp ----------------------------------------------------

// Shutdown: stop reading, wait (bounded) for acknowledgements, flush; then,
// once the event loop has returned, take the parts down in the order they
// depend on each other.
class stop_sequence {
public:
    using work_guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
    struct parts {
        config const& cfg;
        event_loop& ioc;
        work_guard& work;
        boost::asio::signal_set& signals;
        exit_watchdog& watchdog;
        kafka_side& kafka;
        checkpoint_side& checkpoints;
        fleet_side& fleet;
    };
    explicit stop_sequence(parts p) : p_(p) {}
    stop_sequence(stop_sequence const&) = delete;
    stop_sequence& operator=(stop_sequence const&) = delete;

    // Set by the first signal.
    std::atomic<bool> const& stopping() const noexcept { return stopping_; }
    // Waits for SIGINT/SIGTERM, which starts the stop.
    void wait_for_signal();
    // After the event loop returned: the teardown. Returns the exit code.
    int finish();

private:
    void on_second_signal(boost::system::error_code ec, int sig);
    boost::asio::awaitable<void> stop(int sig, std::chrono::steady_clock::time_point deadline);

    parts p_;
    std::atomic<bool> stopping_{false};
    int exit_code_ = 0;
    std::chrono::steady_clock::time_point first_signal_at_{};
};

} // namespace bridge
