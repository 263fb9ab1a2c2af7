#pragma once

#include "bridge/change_meta.hpp"
#include "bridge/routing.hpp"
#include "checkpoint/deletion_memory.hpp"
#include "checkpoint/flusher.hpp"
#include "checkpoint/store.hpp"
#include "checkpoint/watermark.hpp"
#include "couch/changes_feed.hpp"
#include "couch/client.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace kafka {
class producer;
struct delivery_report;
} // namespace kafka

namespace metrics {
class registry;
class counter;
class gauge;
} // namespace metrics

namespace bridge {

// Limits of one pipeline's in-flight window: while either is reached the
// pipeline stops reading its feed (back-pressure), so memory stays flat when
// Kafka is slow or down.
struct window_limits {
    std::size_t max_records = 20000;
    std::size_t max_bytes = 64u << 20;
};

// What happens to a record Kafka can never take (larger than the limits,
// rejected permanently): dlq sends a small stand-in (the ChangeMeta without
// the document, headers error/database/seq/size) to the dead-letter topic,
// skip counts and logs it, stop keeps rewinding (the database stalls).
enum class unpublishable_policy { dlq, skip, stop };
unpublishable_policy parse_unpublishable_policy(std::string_view s); // throws std::invalid_argument

// How records are made, the same for every pipeline of a process.
struct publish_options {
    payload_mode payload = payload_mode::stub;
    unpublishable_policy on_unpublishable = unpublishable_policy::dlq;
    std::string dlq_topic = "couch-bridge-dlq";
    // Client-side doc_type filters: when include is not empty, only those
    // doc types are published; exclude is applied after it. Filtered rows
    // are skipped (counted) and still advance the checkpoint.
    std::vector<std::string> include_doc_types, exclude_doc_types;
};

// What /status shows for one database. A snapshot, refreshed on the
// pipeline's strand at least once a second.
struct pipeline_status {
    std::string database;
    // The feed's state; "failing" after a delivery failure; "held" in group
    // mode while publishing waits for the group to confirm ownership.
    std::string state;
    std::string last_seq_read; // raw JSON
    std::string checkpoint_seq; // raw JSON of the committed (acknowledged) position
    std::uint64_t rows_read = 0;
    std::uint64_t published = 0;
    std::uint64_t skipped = 0;
    std::uint64_t delivery_failures = 0;
    std::size_t in_flight = 0;
    std::size_t in_flight_bytes = 0;
    std::optional<std::uint64_t> pending;
    std::string last_error;
    std::chrono::system_clock::time_point last_error_time{};
    std::chrono::system_clock::time_point last_row_time{};
    std::uint64_t unpublishable = 0;
    std::string last_unpublishable; // "<doc id> (seq <seq>, <bytes> bytes): <error> -> <action>", empty if none
    bool ready = false; // connected (catching up or following) and not failing
};

// One followed database: feed -> ChangeMeta -> producer, with the watermark
// that moves its checkpoint only over acknowledged (or skipped) rows.
//
// Everything but status() and stop() runs on the pipeline's own strand. The
// producer's delivery reports are posted to that strand. The pipeline must
// outlive its run() coroutine and every delivery report of its records:
// the owner (bridge::app) waits for in_flight() == 0 or flushes the producer
// before destroying it.
class pipeline {
public:
    struct dependencies {
        kafka::producer& producer;
        router const& routes;
        checkpoint::flusher& flusher;
        metrics::registry& registry;
        publish_options options = {};
        // Hard-delete memory (--deletion-memory): null when off. The
        // pipeline registers it with its flusher (flusher::write_first).
        checkpoint::deletion_memory* memory = nullptr;
        // Group mode: false while this instance may not act on its
        // databases (it was paused and the group may have moved them); the
        // pipeline then holds every record until it is true again or the
        // pipeline is stopped. Empty: always true.
        std::function<bool()> may_publish = {};
        // The catch-up lane (--kafka-catch-up-linger-ms): records read while
        // the feed catches up go to this producer, which lingers longer
        // (fewer, larger produce requests); null: everything to `producer`.
        // A switch of lanes waits until the other lane has acknowledged
        // every record of this pipeline, so a key's records stay in order.
        kafka::producer* catch_up = nullptr;
    };

    // `source` is shared by the pipelines of one CouchDB server (null: a private one).
    pipeline(boost::asio::any_io_executor pool, couch::client_config client, couch::feed_options feed,
             checkpoint::key key, std::optional<std::string> checkpoint_seq, window_limits limits, dependencies deps,
             std::shared_ptr<couch::source> source = nullptr);
    // On the source's shared couch::client (the fleet's): one session and
    // one TLS context for every pipeline of the source.
    pipeline(boost::asio::any_io_executor pool, std::shared_ptr<couch::client> client, couch::feed_options feed,
             checkpoint::key key, std::optional<std::string> checkpoint_seq, window_limits limits, dependencies deps);
    ~pipeline();
    pipeline(pipeline const&) = delete;
    pipeline& operator=(pipeline const&) = delete;

    // Runs until stop(). Spawn it on strand().
    boost::asio::awaitable<void> run();

    // Stops reading (thread-safe, idempotent). Records in flight still get
    // their delivery reports and still move the watermark.
    void stop();

    boost::asio::strand<boost::asio::any_io_executor> const& strand() const noexcept { return strand_; }
    std::string const& database() const noexcept { return key_.database; }

    // Exactly-once, after an aborted transaction (thread-safe): on the
    // strand, drops what was read and reads again from the durable
    // checkpoint; then calls `done` there.
    void rewind_to_durable(std::function<void()> done);

    // Thread-safe snapshot.
    pipeline_status status() const;
    // Thread-safe: records produced and not yet acknowledged or failed.
    std::size_t in_flight() const;
    // Thread-safe: after stop() and the end of run(), true once nothing of
    // the pipeline runs or will run any more (its status ticker ended, no
    // record in flight): only then may the owner destroy it.
    bool quiescent() const;

private:
    struct probe;

    boost::asio::awaitable<bool> pin_now_start();
    boost::asio::awaitable<void> publish(std::vector<couch::row> rows, std::uint64_t generation);
    void on_delivery(checkpoint::watermark::ticket ticket, std::uint64_t generation, std::size_t bytes,
                     std::string_view topic, std::chrono::steady_clock::time_point sent,
                     kafka::delivery_report const& report, std::string const& poison_key,
                     std::string const& forget_id);
    void write_memory();
    // The producer for the next batch (see dependencies::catch_up); false
    // when stopped or rewound while it waited for the other lane to drain.
    boost::asio::awaitable<bool> choose_lane(std::uint64_t generation);
    bool filtered_out(change_meta const& meta) const;
    // A record Kafka can never take: acts by policy. Returns true when the
    // row counts as handled (a DLQ record went out, or it was skipped).
    bool unpublishable(couch::row const& row, change_meta const& meta, std::string const& error, std::size_t size,
                       checkpoint::watermark::ticket ticket, std::uint64_t generation);
    void release(checkpoint::watermark::ticket ticket);
    // Leaves the producer's batch gate if this pipeline holds it.
    void release_lease();
    void fail_generation(std::string const& why);
    void advance_checkpoint();
    void refresh_status();
    boost::asio::awaitable<void> status_ticker();
    metrics::counter& published_counter(std::string_view topic);

    boost::asio::strand<boost::asio::any_io_executor> strand_;
    couch::since initial_since_; // where the feed started when there was no checkpoint
    couch::changes_feed feed_;
    checkpoint::key key_;
    window_limits limits_;
    dependencies deps_;
    std::unique_ptr<probe> probe_;

    checkpoint::watermark watermark_;
    // Per ticket: rows still unacknowledged + 1 until its group is handled.
    std::unordered_map<checkpoint::watermark::ticket, std::uint32_t> outstanding_;
    std::optional<std::string> committed_;       // last position handed to the flusher
    std::optional<std::string> start_seq_;       // the checkpoint we started from
    std::uint64_t generation_ = 0;               // bumped at every rewind
    bool rewind_pending_ = false;
    std::chrono::milliseconds retry_delay_{0};
    std::size_t in_flight_records_ = 0;
    std::size_t in_flight_bytes_ = 0;
    boost::asio::steady_timer window_timer_;     // woken by delivery reports
    boost::asio::steady_timer status_timer_;     // the status ticker's; cancelled by stop()
    std::atomic<bool> ticker_done_{false};
    bool stopping_ = false;
    bool lease_held_ = false; // inside the producer's batch gate (see publish)
    couch::feed_state feed_state_ = couch::feed_state::connecting; // as the feed last said
    kafka::producer* lane_ = nullptr; // the producer of the records in flight
    std::string failure_;                        // last delivery failure, cleared by progress
    std::chrono::system_clock::time_point failure_time_{};
    std::uint64_t rows_read_ = 0, published_ = 0, skipped_ = 0, failures_ = 0, unpublishable_ = 0;
    std::string last_unpublishable_;
    // Rows (id + '\n' + rev) whose record a broker refused for good after it
    // was produced: when the rewind reads them again they go by policy.
    std::unordered_map<std::string, std::string> poison_;
    // Live documents of the batch being published, handed to the memory
    // before anything can move the checkpoint past them (see write_memory).
    std::vector<std::pair<std::string, checkpoint::store::remembered>> memo_;
    // Looked up by string_view on every acknowledgement: no allocation.
    struct topic_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_map<std::string, metrics::counter*, topic_hash, std::equal_to<>> published_by_topic_;

    mutable std::mutex status_mutex_;
    pipeline_status status_;
    std::atomic<std::size_t> in_flight_atomic_{0};
    std::atomic<bool> stop_requested_{false};
    std::atomic<std::size_t> pending_posts_{0}; // rewind_to_durable handlers not yet run
};

} // namespace bridge
