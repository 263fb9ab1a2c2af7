#include "bench/source/live.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>

namespace bench_source {

change_signal::subscription::subscription(change_signal& s, boost::asio::any_io_executor ex)
    : signal_(s), w_(std::make_shared<waiter>(std::move(ex)))
{
    std::lock_guard const lock(signal_.mutex_);
    signal_.waiters_.push_back(w_);
}

change_signal::subscription::~subscription()
{
    std::lock_guard const lock(signal_.mutex_);
    std::erase(signal_.waiters_, w_);
}

void change_signal::notify()
{
    std::lock_guard const lock(mutex_);
    for (auto const& w : waiters_) {
        // The timer belongs to its feed's strand: cancel it there. The
        // shared_ptr keeps it alive if the feed ends meanwhile.
        boost::asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
    }
}

live_state::live_state(std::size_t databases)
    : writes_(std::make_unique<std::atomic<std::uint64_t>[]>(databases)), signals_(databases)
{
}

std::uint64_t live_state::write(std::size_t db, std::uint64_t count)
{
    auto const after = writes_[db].fetch_add(count, std::memory_order_acq_rel) + count;
    {
        std::lock_guard const lock(log_mutex_);
        log_.push_back({log_.size() + 1, db});
    }
    signals_[db].notify();
    updates_signal_.notify();
    return after;
}

std::vector<db_update> live_state::updates_after(std::uint64_t since, std::size_t max) const
{
    std::lock_guard const lock(log_mutex_);
    // Seqs are 1..size(): event n is at index n - 1.
    auto const from = std::min<std::uint64_t>(since, log_.size());
    auto const to = std::min<std::uint64_t>(log_.size(), from + max);
    return {log_.begin() + static_cast<std::ptrdiff_t>(from), log_.begin() + static_cast<std::ptrdiff_t>(to)};
}

std::uint64_t live_state::last_update_seq() const
{
    std::lock_guard const lock(log_mutex_);
    return log_.size();
}

void raise_peak(std::atomic<std::int64_t>& peak, std::int64_t v)
{
    auto cur = peak.load();
    while (cur < v && !peak.compare_exchange_weak(cur, v)) {
    }
}

bool feed_gate::try_open()
{
    auto cur = open_.load();
    do {
        if (cap_ > 0 && cur >= static_cast<std::int64_t>(cap_)) {
            refused_.fetch_add(1);
            return false;
        }
    } while (!open_.compare_exchange_weak(cur, cur + 1));
    raise_peak(peak_, cur + 1);
    return true;
}

} // namespace bench_source
