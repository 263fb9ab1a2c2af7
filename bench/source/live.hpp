#pragma once

// What changes while bench-source runs: writes to databases
// (`POST /_bench/write`), the `_db_updates` events they make, the wake-ups of
// the feeds waiting for them, and the cap on open feeds that stands in for a
// CouchDB out of file handles. All of it is safe to use from every thread.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

namespace bench_source {

// Wakes the feeds that wait for news of one database (or of _db_updates).
// A feed subscribes its timer for its whole life; notify() posts a cancel of
// every subscribed timer to that timer's executor (the feed's strand), which
// ends a wait at once instead of at its next tick. A feed looks for news
// after every await and right before each wait, so a notify that lands
// while it is writing is not lost.
class change_signal {
public:
    struct waiter {
        explicit waiter(boost::asio::any_io_executor ex) : timer(std::move(ex)) {}
        boost::asio::steady_timer timer;
    };

    // Unsubscribes when destroyed; its timer is the one to wait on.
    class subscription {
    public:
        subscription(change_signal& s, boost::asio::any_io_executor ex);
        ~subscription();
        subscription(subscription const&) = delete;
        subscription& operator=(subscription const&) = delete;
        boost::asio::steady_timer& timer() { return w_->timer; }

    private:
        change_signal& signal_;
        std::shared_ptr<waiter> w_;
    };

    void notify();

private:
    std::mutex mutex_;
    std::vector<std::shared_ptr<waiter>> waiters_;
};

// One `_db_updates` event (all of them `updated`: the databases exist from
// the start).
struct db_update {
    std::uint64_t seq;
    std::size_t db;
};

// Writes and the _db_updates log.
class live_state {
public:
    explicit live_state(std::size_t databases);

    // Changes written to `db` since startup.
    std::uint64_t writes(std::size_t db) const noexcept { return writes_[db].load(std::memory_order_acquire); }
    // Adds `count` changes to `db` and one `updated` event, then wakes the
    // feeds of `db` and of _db_updates. Returns writes(db) after.
    std::uint64_t write(std::size_t db, std::uint64_t count);

    change_signal& signal_of(std::size_t db) { return signals_[db]; }
    change_signal& updates_signal() { return updates_signal_; }

    // Events with a seq above `since`, oldest first, at most `max`.
    std::vector<db_update> updates_after(std::uint64_t since, std::size_t max) const;
    std::uint64_t last_update_seq() const;

private:
    std::unique_ptr<std::atomic<std::uint64_t>[]> writes_;
    std::deque<change_signal> signals_;
    change_signal updates_signal_;
    mutable std::mutex log_mutex_;
    std::vector<db_update> log_;
};

// The cap on continuous and longpoll `_changes` feeds open at once
// (`--max-open-feeds`): CouchDB keeps a feed's shard files open for as long
// as it runs, and a default one runs out of file handles with a few hundred.
// Beyond the cap a feed is refused (the server answers `500 emfile`).
class feed_gate {
public:
    // cap 0: no cap (feeds are still counted).
    explicit feed_gate(std::size_t cap) : cap_(cap) {}

    // Counts the feed open, or refuses it (counted) when the cap is reached.
    bool try_open();
    void close() { open_.fetch_sub(1, std::memory_order_acq_rel); }

    std::int64_t open() const { return open_.load(); }
    // The most feeds open at once.
    std::int64_t peak() const { return peak_.load(); }
    std::uint64_t refused() const { return refused_.load(); }
    std::size_t cap() const { return cap_; }

private:
    std::size_t cap_;
    std::atomic<std::int64_t> open_{0};
    std::atomic<std::int64_t> peak_{0};
    std::atomic<std::uint64_t> refused_{0};
};

// Raises `peak` to `v` if it is lower.
void raise_peak(std::atomic<std::int64_t>& peak, std::int64_t v);

} // namespace bench_source
