#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace metrics {
class registry;
class counter;
class gauge;
} // namespace metrics

namespace couch {

struct source_options {
    // Connection attempts (connect, request, response header) in flight at
    // once against this source, over all its feeds. A busy CouchDB answering
    // `emfile` to hundreds of feeds at once is not hammered by all of them
    // reconnecting together: the rest wait their turn.
    std::size_t max_connecting = 16;
    // The source counts as `degraded` for this long after its last error.
    std::chrono::milliseconds degraded_for{30000};
};

// What the feeds of one CouchDB source share: the gate that caps their
// connection attempts in flight, and the source's own health (CouchDB's
// resource errors concern the whole server, not one database).
//
// Thread safety: every member may be called from any thread.
// Lifetime: feeds hold it through a shared_ptr; it outlives them all.
class source {
public:
    // `name` labels nothing (the metrics are process-wide; one source per
    // process today) but appears in status and logs; it must be free of
    // credentials. `registry` must outlive the source.
    source(std::string name, source_options options, metrics::registry& registry);
    ~source();
    source(source const&) = delete;
    source& operator=(source const&) = delete;

    std::string const& name() const noexcept { return name_; }

    // One waiting feed. Made by the feed on its own executor (strand).
    struct waiter {
        explicit waiter(boost::asio::any_io_executor ex);
        boost::asio::steady_timer timer; // woken by release() or cancel()
        bool granted = false;            // guarded by source::mutex_
        bool cancelled = false;          // guarded by source::mutex_
    };

    // A right to one connection attempt; released when destroyed (or
    // release()d). Empty when the wait was cancelled.
    class permit {
    public:
        permit() = default;
        explicit permit(source* s) : source_(s) {}
        permit(permit&& o) noexcept : source_(std::exchange(o.source_, nullptr)) {}
        permit& operator=(permit&& o) noexcept {
            if (this != &o) {
                release();
                source_ = std::exchange(o.source_, nullptr);
            }
            return *this;
        }
        ~permit() { release(); }
        explicit operator bool() const noexcept { return source_ != nullptr; }
        void release() noexcept;

    private:
        source* source_ = nullptr;
    };

    // Waits (on `w`'s executor) until fewer than max_connecting attempts are
    // in flight. Returns an empty permit when cancel(w) was called before
    // the turn came. Waiters are served in arrival order.
    boost::asio::awaitable<permit> acquire(std::shared_ptr<waiter> w);

    // Ends acquire(w) with an empty permit if it is still waiting. Call from
    // w's executor.
    void cancel(std::shared_ptr<waiter> const& w);

    // Records an error of the server itself (a resource error such as
    // `emfile`, a 5xx, a response written into an open feed, a refused
    // connection). `reason` is a short metric label (couch_bridge_source_errors_total{reason}).
    // `message` must be free of credentials.
    void note_error(std::string_view reason, std::string message);

    struct health {
        std::string state; // "ok", or "degraded" within degraded_for of the last error
        std::map<std::string, std::uint64_t> errors; // by reason, since start
        std::string last_error;
        std::chrono::system_clock::time_point last_error_time{};
        std::size_t connecting = 0; // attempts in flight
        std::size_t waiting = 0;    // feeds waiting for their turn
        std::size_t max_connecting = 0;
    };
    health status() const;

private:
    void release_one() noexcept;

    std::string name_;
    source_options options_;
    metrics::registry& registry_;
    metrics::gauge& connecting_gauge_;
    metrics::gauge& waiting_gauge_;
    metrics::gauge& last_error_gauge_;

    mutable std::mutex mutex_;
    std::size_t connecting_ = 0;
    std::deque<std::shared_ptr<waiter>> queue_;
    std::map<std::string, std::pair<std::uint64_t, metrics::counter*>, std::less<>> errors_;
    std::string last_error_;
    std::chrono::system_clock::time_point last_error_time_{};
    std::chrono::steady_clock::time_point last_error_steady_{};
};

// Classifies a CouchDB error answer (status and body) into the short reason
// used by source::note_error: "emfile", "all_dbs_active", "no_db_shards",
// "unavailable" (503), "http_5xx" (any other 5xx); empty for statuses that
// are not the server's own trouble.
std::string classify_server_error(unsigned status, std::string_view body);

} // namespace couch
