#pragma once

#include "kafka/completion.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace metrics {
class registry;
}

namespace kafka {

struct header {
    std::string key;
    std::string value;
};

// One message to produce. `key` is hashed by the partitioner (Java-compatible
// murmur2 by default); an empty key is sent as a null key (random partition).
struct record {
    std::string topic;
    std::string key;
    std::string value;
    std::vector<header> headers;
    // Sends a null value (a tombstone: a compacted topic forgets the key);
    // `value` is ignored then.
    bool tombstone = false;
};

// The outcome of one produce, as the broker (or librdkafka) reported it.
struct delivery_report {
    // Empty on success. Otherwise an error of kafka::error_category() (see
    // error.hpp): the message was NOT acknowledged and may or may not have
    // been written (at-least-once: the caller retries from its checkpoint).
    boost::system::error_code ec;
    std::int32_t partition = -1;
    std::int64_t offset = -1;
};

struct producer_config {
    // Comma-separated host:port list ("bootstrap.servers").
    std::string bootstrap_servers;
    // librdkafka properties applied after the defaults (so they override
    // them), in order. Any librdkafka producer property is accepted.
    std::vector<std::pair<std::string, std::string>> properties;
    // Non-empty: a transactional producer (exactly-once) with this
    // transactional.id. Its records reach read_committed consumers only once
    // commit_transaction() succeeds. A fatal error then never rebuilds the
    // instance (a fenced producer must not write again): fatal_error() says
    // why and every later call fails.
    std::string transactional_id;
    // The gauge saying whether this producer reaches the cluster. A second
    // producer of the process (the catch-up lane) names its own, so that
    // neither overwrites the other's.
    std::string ready_metric = "couch_bridge_kafka_ready";
};

// The outcome of a transaction call, by what the caller must do next.
struct txn_status {
    enum class kind {
        ok,
        retriable, // call the same function again (e.g. a commit that timed out)
        abortable, // abort_transaction(), rewind to the last commit, begin again
        fatal,     // fenced or broken for good: stop, never write again
    };
    kind what = kind::ok;
    std::string message; // librdkafka's words; empty when ok
    // Retriable because another transaction call is under way, or was left
    // unfinished by a timeout (librdkafka's _CONFLICT): repeating this call
    // cannot succeed until that one is called again and completes.
    bool conflict = false;
    bool ok() const noexcept { return what == kind::ok; }
};

// The process' one Kafka producer (librdkafka underneath).
//
// Defaults: enable.idempotence=true (acks=all), compression.type=lz4,
// linger.ms=5, partitioner=murmur2_random (the Java client's placement).
//
// Delivery reports are integrated into the event loop: librdkafka signals a
// pipe when its report queue becomes non-empty, a descriptor watcher on
// `ioc_ex` serves the queue, and each report is posted to the executor that
// was given with its message. Nothing polls and nothing blocks the loop.
//
// Connection trouble (a wrong password, an untrusted certificate, a wrong
// security protocol, brokers down) is retried by librdkafka; health() says
// whether the cluster is reachable meanwhile.
//
// A fatal producer error (e.g. an idempotence sequence failure) makes the
// producer rebuild its librdkafka instance: every message outstanding in the
// old instance completes with an error, later produces go to the new one;
// counted in couch_bridge_kafka_producer_rebuilds_total and logged.
//
// Thread safety: every member function may be called from any thread.
// The watcher is outstanding work: io_context::run() does not run out of work
// while the producer exists (stop the context, or destroy the producer).
// Lifetime: destroy the producer before the io_context behind `ioc_ex`;
// completion handlers must not outlive what they capture, as usual.
class producer {
public:
    // Throws std::invalid_argument naming the property for a bad or unknown
    // property, or with librdkafka's reason when the combination is refused.
    // `registry` must outlive the producer.
    producer(boost::asio::any_io_executor ioc_ex, producer_config config, metrics::registry& registry);

    // Purges whatever is still outstanding (their completions are posted with
    // an error, e.g. _PURGE_QUEUE) and destroys the instance; bounded (a few
    // seconds at worst). Call flush() first for a graceful shutdown.
    ~producer();

    producer(producer const&) = delete;
    producer& operator=(producer const&) = delete;

    // Enqueues `r` (never blocks, never waits for the network). On success
    // `done` is later posted to `done_ex` exactly once, with the delivery
    // report. On error `done` is not taken (not called, not stored) and the
    // error says why: is_queue_full() for back-pressure (co_await
    // wait_for_space(), then try again), otherwise an invalid record
    // (e.g. empty topic, message too large) or a producer in a fatal state.
    boost::system::error_code try_produce(record const& r, boost::asio::any_io_executor done_ex, completion done);
    // The same for a completion that runs on a strand of any_io_executor (a
    // pipeline's): kept as the strand itself, which spares the type-erased
    // executor's allocations of the overload above, per record and per
    // report. (A template only so that other strands, which convert to
    // both, still take the overload above.)
    template <typename Strand>
        requires std::same_as<Strand, boost::asio::strand<boost::asio::any_io_executor>>
    boost::system::error_code try_produce(record const& r, Strand const& done_ex, completion done) {
        return try_produce_on_strand(r, done_ex, std::move(done));
    }

    // True when `ec` is librdkafka's local queue being full (back-pressure).
    static bool is_queue_full(boost::system::error_code const& ec);

    // Completes (on the awaiting coroutine's executor) once delivery reports
    // have been served after the call, i.e. once space may have been freed.
    // Completes at once when nothing is in flight. Spurious wake-ups are
    // possible (another producer took the space): try again, wait again.
    // Destroying the producer abandons waiting coroutines (never resumed).
    boost::asio::awaitable<void> wait_for_space();

    // Serves the delivery reports that are ready now on the calling thread
    // (their completions are posted as usual), waiting up to `timeout` for
    // one. For a thread that waits for its own records while the event loop
    // may not run (startup, a blocked loop thread). Thread-safe.
    void serve_reports(std::chrono::milliseconds timeout);

    // Messages accepted by try_produce whose completion has not been posted yet.
    std::size_t in_flight() const;

    // Blocks the calling thread up to `timeout` while outstanding messages are
    // delivered (their completions are posted as usual); returns how many
    // are still outstanding (0 = everything reported). Meant for shutdown;
    // do not call it on an io_context thread that the completions need.
    std::size_t flush(std::chrono::milliseconds timeout);

    // Creates topics through the admin API and waits up to `timeout`. A topic
    // that exists already counts as success. `replication` = -1 takes the
    // broker's default. Returns the first other error (kafka category), or
    // timed out (_TIMED_OUT). librdkafka's mock cluster does not implement
    // CreateTopics: use embedded_cluster::create_topic() there.
    // `topic_config` is applied to each new topic (e.g. cleanup.policy=compact).
    boost::system::error_code create_topics(std::vector<std::string> const& topics, int partitions, int replication,
                                            std::chrono::milliseconds timeout,
                                            std::vector<std::pair<std::string, std::string>> const& topic_config = {});

    // The subset of `topics` that does not exist on the cluster, asked with a
    // metadata request for all topics (which never auto-creates one). Throws
    // std::runtime_error with librdkafka's reason when the request fails.
    std::vector<std::string> missing_topics(std::vector<std::string> const& topics, std::chrono::milliseconds timeout);

    // The id of the Kafka cluster the producer talks to (the ClusterId of
    // its metadata), waiting up to `timeout` for it. Empty when it is not
    // known by then (brokers unreachable) or the cluster reports none.
    // Blocks the calling thread: call it at startup, not on an io thread.
    std::string cluster_id(std::chrono::milliseconds timeout);

    // --- Exactly-once (transactional_id set). These block the calling
    // thread: call them from one thread that no delivery report needs (not
    // an io_context thread of the pipelines). ---

    // Registers the transactional id with the cluster, which fences any
    // earlier producer with the same id and aborts its open transaction.
    txn_status init_transactions(std::chrono::milliseconds timeout);
    txn_status begin_transaction();
    // Flushes every outstanding record, then commits them atomically.
    txn_status commit_transaction(std::chrono::milliseconds timeout);
    txn_status abort_transaction(std::chrono::milliseconds timeout);
    bool transactional() const noexcept;

    // The batch gate of a transactional producer: a batch (records that must
    // land in the same transaction as the checkpoint that covers them) is
    // produced between enter_batch() and leave_batch(). While the gate is
    // closed enter_batch() returns false: co_await wait_for_gate(), which
    // completes when the gate opens again, then call it again. Without
    // transactions the gate is always open.
    bool enter_batch();
    void leave_batch();
    // Completes (on the awaiting coroutine's executor) once the gate is open;
    // spurious wake-ups are possible.
    boost::asio::awaitable<void> wait_for_gate();
    // Closes the gate (batches already entered go on) / opens it and wakes
    // the waiters. batches_open(): entered and not yet left.
    void close_gate();
    void open_gate();
    std::size_t batches_open() const;

    // A fatal error of a transactional producer (fenced by another instance
    // with the same transactional id, ...): librdkafka's words, empty if none.
    std::string fatal_error() const;

    // Number of times the librdkafka instance was rebuilt after a fatal error.
    std::uint64_t rebuilds() const;

    // Whether the producer can reach the cluster, for /readyz and /status.
    struct connection_health {
        // False after an authentication failure, a TLS failure or all brokers
        // down (librdkafka's _AUTHENTICATION, _SSL, _ALL_BROKERS_DOWN) until
        // a broker is seen up again (statistics, every statistics.interval.ms,
        // 5 s by default) or a record is acknowledged. True before the first
        // connection attempt.
        bool ready = true;
        // librdkafka's words for the last connection problem (a wrong
        // security.protocol shows as a disconnect while requesting
        // ApiVersion); empty when none was seen. Never holds a secret.
        std::string last_error;
    };
    // Thread-safe snapshot. Counted as couch_bridge_kafka_connection_errors_total
    // {reason} and shown as the gauge couch_bridge_kafka_ready.
    connection_health health() const;

    // Test hook: raises a fatal error in the current librdkafka instance
    // (rd_kafka_test_fatal_error), as an idempotence failure would.
    void trigger_fatal_error_for_test(std::string const& reason);

    struct impl;

private:
    boost::system::error_code try_produce_on_strand(record const& r,
                                                    boost::asio::strand<boost::asio::any_io_executor> const& done_ex,
                                                    completion done);

    std::shared_ptr<impl> impl_;
};

} // namespace kafka
