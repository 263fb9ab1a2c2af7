// The producer's tickets (see detail::ticket): a per-thread cache, so that
// producing a record does not allocate its ticket once the cache is warm.
#include "kafka/producer_impl.hpp"

#include <vector>

namespace kafka::detail {

namespace {

// Enough for the tickets freed between two produce bursts of a thread; the
// rest goes back to the heap.
constexpr std::size_t max_cached_tickets = 1024;

// Set once the thread's cache is destroyed (thread exit): tickets freed
// later (handlers destroyed during the exit) go straight to the heap.
// Trivially destructible, so it stays readable until the thread is gone.
thread_local bool cache_closed = false;

struct ticket_cache {
    std::vector<std::unique_ptr<ticket>> free;
    ticket_cache() { free.reserve(max_cached_tickets); }
    ~ticket_cache() { cache_closed = true; }
};

ticket_cache& cache() {
    thread_local ticket_cache c;
    return c;
}

} // namespace

std::unique_ptr<ticket> make_ticket() {
    if (!cache_closed) {
        auto& free = cache().free;
        if (!free.empty()) {
            auto t = std::move(free.back());
            free.pop_back();
            return t;
        }
    }
    return std::make_unique<ticket>();
}

void recycle(std::unique_ptr<ticket> t) noexcept {
    // Whatever the handler captured is released now, not when the ticket is
    // reused.
    t->done.reset();
    t->ex = boost::asio::any_io_executor();
    if (cache_closed) {
        return;
    }
    auto& free = cache().free;
    if (free.size() < max_cached_tickets) {
        try {
            free.push_back(std::move(t));
        } catch (...) { // std::bad_alloc growing the cache: let the ticket go
        }
    }
}

} // namespace kafka::detail
