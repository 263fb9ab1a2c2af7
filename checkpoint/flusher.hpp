#pragma once

#include "checkpoint/store.hpp"

#include "metrics/registry.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace checkpoint {

class deletion_memory;

// Wall clock used for written_unix_ms and ages; injectable for tests.
using clock_fn = std::function<std::chrono::system_clock::time_point()>;

// The one checkpoint writer of a process. Pipelines hand it their latest
// watermark (update(), cheap, any thread); every interval it writes all
// positions that changed since the last successful write in ONE durable
// batch, so durable writes per second stay constant whatever the throughput
// or the number of databases.
//
// A failed write keeps the positions dirty (so the durable checkpoint does
// not advance), is logged, counted and shown in status(), and is retried on
// the next tick with the then-latest positions.
//
// Lifetime: `writer` and `registry` must outlive the flusher; the flusher
// must outlive run() (stop() then wait for run() to finish).
class flusher {
public:
    // `writer` is normally the checkpoint::store. `now` defaults to
    // std::chrono::system_clock::now.
    flusher(boost::asio::any_io_executor ex, position_writer& writer, std::chrono::milliseconds interval,
            metrics::registry& registry, std::string bridge_version, clock_fn now = {});
    ~flusher();
    flusher(flusher const&) = delete;
    flusher& operator=(flusher const&) = delete;

    // Marks `k` dirty with `seq_json` (latest wins). Thread-safe; a mutex and
    // a map insert, no I/O. The seq must come from a watermark (its row and
    // all before it are acknowledged).
    void update(key const& k, std::string seq_json);

    // The periodic loop: every interval, write all dirty entries in one
    // batch. Returns after stop(). Call (and co_spawn / co_await) once. Does not flush on exit: call flush_now()
    // once the pipelines have made their last update(). The loop runs on an
    // internal strand, whatever executor the caller co_spawns it on.
    // Note: the durable write (an fsync) runs on an io thread once per
    // interval; that is the one blocking call of the bridge, bounded in rate.
    boost::asio::awaitable<void> run();

    // Ends run() at its next wake-up (promptly: the timer is cancelled).
    // Thread-safe; idempotent.
    void stop();

    // Writes all dirty entries now, synchronously (shutdown, tests).
    // Thread-safe; serialized with the periodic flush so that an older batch
    // can never land after a newer one. Returns the write error, if any (the
    // entries then stay dirty).
    boost::system::error_code flush_now();

    // Tells the flusher what is already durable for `k` (the position read
    // from the store at startup), so that durable_seq() and the age metric
    // are right before the first write. Does not write or mark dirty.
    // Thread-safe.
    void restore(key const& k, position const& p);

    // The last seq durably written for `k` by this flusher (or restored);
    // nullopt if none.
    std::optional<std::string> durable_seq(key const& k) const;

    // Entries waiting for the next write.
    std::size_t dirty_count() const;

    // Every flush first writes what `m` buffered, after taking the dirty
    // positions and before writing them: a durable position never covers a
    // document whose memory is not in the store. Thread-safe, idempotent
    // (pipelines register the memory they use); `m` must outlive the flusher.
    void write_first(deletion_memory& m);

    // Forgets every dirty entry (exactly-once, after an abort: they belonged
    // to records that were aborted). Thread-safe.
    void discard_dirty();

    struct health {
        std::string last_error; // empty if no write ever failed
        std::chrono::system_clock::time_point last_error_time;
        std::chrono::system_clock::time_point last_success_time;
        std::uint64_t consecutive_failures = 0;
    };
    // For /status and /readyz. Thread-safe.
    health status() const;

private:
    struct durable_entry {
        std::string seq_json;
        std::chrono::system_clock::time_point written;
        metrics::gauge* age = nullptr;
    };

    boost::asio::awaitable<void> loop();
    boost::system::error_code flush_once(bool thorough);
    void refresh_ages_locked(std::chrono::system_clock::time_point now);
    durable_entry& durable_entry_locked(key const& k);

    boost::asio::strand<boost::asio::any_io_executor> strand_;
    // Shared with the cancel handler stop() posts, which may run after the
    // flusher is gone if run() had already ended.
    std::shared_ptr<boost::asio::steady_timer> timer_;
    position_writer& writer_;
    std::chrono::milliseconds interval_;
    metrics::registry& registry_;
    std::string bridge_version_;
    clock_fn now_;

    metrics::counter& writes_total_;
    metrics::counter& write_errors_total_;
    metrics::histogram& write_duration_;
    metrics::gauge& dirty_entries_;

    std::atomic<bool> stopped_{false};
    std::mutex flush_mutex_; // held across one whole flush (snapshot + write + bookkeeping)
    mutable std::mutex mutex_; // guards the members below; never held during the write
    std::map<key, std::string> dirty_;
    std::map<key, durable_entry> durable_;
    std::vector<deletion_memory*> memories_;
    health health_;
};

} // namespace checkpoint
