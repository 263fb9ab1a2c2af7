#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
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

using completion = std::function<void(delivery_report const&)>;

struct producer_config {
    // Comma-separated host:port list ("bootstrap.servers").
    std::string bootstrap_servers;
    // librdkafka properties applied after the defaults (so they override
    // them), in order. Any librdkafka producer property is accepted.
    std::vector<std::pair<std::string, std::string>> properties;
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

    // True when `ec` is librdkafka's local queue being full (back-pressure).
    static bool is_queue_full(boost::system::error_code const& ec);

    // Completes (on the awaiting coroutine's executor) once delivery reports
    // have been served after the call, i.e. once space may have been freed.
    // Completes at once when nothing is in flight. Spurious wake-ups are
    // possible (another producer took the space): try again, wait again.
    // Destroying the producer abandons waiting coroutines (never resumed).
    boost::asio::awaitable<void> wait_for_space();

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
    boost::system::error_code create_topics(std::vector<std::string> const& topics, int partitions, int replication,
                                            std::chrono::milliseconds timeout);

    // The subset of `topics` that does not exist on the cluster, asked with a
    // metadata request for all topics (which never auto-creates one). Throws
    // std::runtime_error with librdkafka's reason when the request fails.
    std::vector<std::string> missing_topics(std::vector<std::string> const& topics, std::chrono::milliseconds timeout);

    // The id of the Kafka cluster the producer talks to (the ClusterId of
    // its metadata), waiting up to `timeout` for it. Empty when it is not
    // known by then (brokers unreachable) or the cluster reports none.
    // Blocks the calling thread: call it at startup, not on an io thread.
    std::string cluster_id(std::chrono::milliseconds timeout);

    // Number of times the librdkafka instance was rebuilt after a fatal error.
    std::uint64_t rebuilds() const;

    // Test hook: raises a fatal error in the current librdkafka instance
    // (rd_kafka_test_fatal_error), as an idempotence failure would.
    void trigger_fatal_error_for_test(std::string const& reason);

    struct impl;

private:
    std::shared_ptr<impl> impl_;
};

} // namespace kafka
