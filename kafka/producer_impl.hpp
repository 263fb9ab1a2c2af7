#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>

// The producer's private state, shared by producer.cpp (producing, delivery
// reports, rebuilds, admin) and transactions.cpp (exactly-once). Not part of
// the module's interface: include only from kafka/*.cpp.

#include "kafka/producer.hpp"

#include "metrics/registry.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>

#include <librdkafka/rdkafka.h>

#include <array>
#include <atomic>
#include <memory>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <variant>
#include <vector>

namespace kafka {

namespace detail {

using clock = std::chrono::steady_clock;

// Where a report's completion is posted: a strand is kept as itself (see
// producer::try_produce), anything else type-erased.
using report_executor =
    std::variant<boost::asio::any_io_executor, boost::asio::strand<boost::asio::any_io_executor>>;

// What one message carries through librdkafka as its opaque: owned by
// librdkafka from a successful produce until its delivery report, where the
// delivery callback takes it back.
struct ticket {
    report_executor ex;
    completion done;
    clock::time_point enqueued;
};

// Tickets come from and go back to a small cache of the calling thread (a
// record's ticket is usually freed on the thread that made the next one), so
// that the steady state allocates none. recycle() empties the ticket first.
std::unique_ptr<ticket> make_ticket();
void recycle(std::unique_ptr<ticket> t) noexcept;

// A librdkafka timeout argument: milliseconds, clamped to [0, INT_MAX].
inline int to_timeout_ms(std::chrono::milliseconds t) {
    return static_cast<int>(std::clamp<std::int64_t>(t.count(), 0, std::numeric_limits<int>::max()));
}

} // namespace detail

struct producer::impl : std::enable_shared_from_this<impl> {
    impl(boost::asio::any_io_executor ex, producer_config config, metrics::registry& registry);
    ~impl();

    rd_kafka_t* create_handle();
    void start();
    void arm();
    void drain_pipe();
    void kick();
    // Serves the current instance's report queue without blocking.
    void serve();
    void after_serving();
    void rebuild();
    void retire(rd_kafka_t* old);
    void shutdown();
    void wake_waiters();

    // try_produce() with the ticket made.
    boost::system::error_code produce(record const& r, std::unique_ptr<detail::ticket> t);
    void on_delivery(rd_kafka_message_t const* msg);
    void on_error(rd_kafka_t* rk, int err, char const* reason);
    void on_stats(char const* json, std::size_t len);
    void set_ready(bool ready);
    metrics::counter& produced_counter(std::string const& topic);
    metrics::counter& error_counter(std::string const& reason);

    boost::asio::any_io_executor ioc_ex_;
    producer_config config_;

    // Probe.
    metrics::registry& registry_;
    metrics::counter& queue_full_;
    metrics::gauge& in_flight_gauge_;
    metrics::counter& rebuilds_;
    metrics::histogram& latency_;
    metrics::gauge& ready_gauge_;
    std::mutex probe_mutex_;
    std::map<std::string, metrics::counter*, std::less<>> produced_by_topic_;
    std::map<std::string, metrics::counter*, std::less<>> errors_by_reason_;

    // librdkafka writes one byte into the pipe when its report queue becomes
    // non-empty; the read end is watched by the event loop.
    int pipe_write_ = -1;
    boost::asio::posix::stream_descriptor watcher_;
    std::array<char, 64> wake_buf_{};

    // Held shared while the instance is used (produce, poll, admin), exclusive
    // only to swap it: a rebuild never destroys an instance under a caller.
    std::shared_mutex rk_mutex_;
    rd_kafka_t* rk_ = nullptr;
    // The same pointer, readable from librdkafka callbacks (which run while
    // rk_mutex_ is held shared, so they must not lock it again).
    std::atomic<rd_kafka_t*> current_{nullptr};
    std::mutex rebuild_mutex_;
    std::atomic<bool> fatal_{false};
    std::atomic<bool> stopping_{false};

    std::atomic<std::size_t> in_flight_{0};
    std::atomic<std::uint64_t> served_{0};
    std::atomic<std::uint64_t> rebuild_count_{0};

    std::mutex waiters_mutex_;
    struct waiter {
        boost::asio::any_io_executor ex;
        boost::asio::any_completion_handler<void()> handler;
    };
    std::vector<waiter> waiters_;

    // Exactly-once (see producer::enter_batch): guarded by waiters_mutex_.
    bool gate_closed_ = false;
    std::size_t batches_open_ = 0;
    mutable std::mutex txn_mutex_;
    std::string txn_fatal_; // guarded by txn_mutex_

    // Connection health (see producer::health()).
    std::atomic<bool> ready_{true};
    mutable std::mutex health_mutex_;
    std::string last_connection_error_;
    std::map<std::string, metrics::counter*, std::less<>> connection_errors_;
};


} // namespace kafka
