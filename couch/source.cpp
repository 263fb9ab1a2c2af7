#include "couch/source.hpp"

#include "metrics/registry.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>

namespace couch {

namespace asio = boost::asio;

source::waiter::waiter(asio::any_io_executor ex) : timer(std::move(ex), std::chrono::steady_clock::time_point::max()) {}

void source::permit::release() noexcept {
    if (source_ != nullptr) {
        std::exchange(source_, nullptr)->release_one();
    }
}

source::source(std::string name, source_options options, metrics::registry& registry)
    : name_(std::move(name)), options_(options), registry_(registry),
      connecting_gauge_(registry.add_gauge("couch_bridge_source_connecting",
                                           "CouchDB connection attempts in flight (capped per source)")),
      waiting_gauge_(registry.add_gauge("couch_bridge_source_waiting",
                                        "Feeds waiting for their turn to connect to CouchDB")),
      last_error_gauge_(registry.add_gauge("couch_bridge_source_last_error_timestamp_seconds",
                                           "Unix time of the last error of the CouchDB server itself")) {
    if (options_.max_connecting == 0) {
        options_.max_connecting = 1;
    }
    // Known reasons exist from the start, so that rate() works from zero.
    for (auto reason : {"emfile", "all_dbs_active", "no_db_shards", "unavailable", "http_5xx", "in_body_response",
                        "error_row", "refused"}) {
        errors_.emplace(reason, std::pair{0u, &registry_.add_counter("couch_bridge_source_errors_total",
                                                                     "Errors of the CouchDB server itself, by reason",
                                                                     {{"reason", reason}})});
    }
}

source::~source() = default;

asio::awaitable<source::permit> source::acquire(std::shared_ptr<waiter> w) {
    {
        std::lock_guard lock(mutex_);
        if (w->cancelled) {
            co_return permit{};
        }
        if (connecting_ < options_.max_connecting && queue_.empty()) {
            ++connecting_;
            connecting_gauge_.set(static_cast<double>(connecting_));
            co_return permit{this};
        }
        queue_.push_back(w);
        waiting_gauge_.set(static_cast<double>(queue_.size()));
    }
    for (;;) {
        co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
        std::lock_guard lock(mutex_);
        if (w->granted) {
            co_return permit{this};
        }
        if (w->cancelled) {
            co_return permit{};
        }
        // A stale wake-up: still queued, wait again.
        w->timer.expires_at(std::chrono::steady_clock::time_point::max());
    }
}

void source::cancel(std::shared_ptr<waiter> const& w) {
    if (!w) {
        return;
    }
    {
        std::lock_guard lock(mutex_);
        w->cancelled = true;
        if (!w->granted) {
            std::erase(queue_, w);
            waiting_gauge_.set(static_cast<double>(queue_.size()));
        }
    }
    w->timer.cancel();
}

void source::release_one() noexcept {
    std::shared_ptr<waiter> next;
    {
        std::lock_guard lock(mutex_);
        if (queue_.empty()) {
            --connecting_;
            connecting_gauge_.set(static_cast<double>(connecting_));
            return;
        }
        // Hand the slot over: connecting_ stays the same.
        next = std::move(queue_.front());
        queue_.pop_front();
        next->granted = true;
        waiting_gauge_.set(static_cast<double>(queue_.size()));
    }
    auto ex = next->timer.get_executor();
    asio::post(ex, [next = std::move(next)] { next->timer.cancel(); });
}

void source::note_error(std::string_view reason, std::string message) {
    std::lock_guard lock(mutex_);
    auto it = errors_.find(reason);
    if (it == errors_.end()) {
        it = errors_
                 .emplace(std::string(reason),
                          std::pair{0u, &registry_.add_counter("couch_bridge_source_errors_total",
                                                               "Errors of the CouchDB server itself, by reason",
                                                               {{"reason", std::string(reason)}})})
                 .first;
    }
    ++it->second.first;
    it->second.second->inc();
    auto const now = std::chrono::steady_clock::now();
    // One log line per burst, not one per feed: hundreds of feeds see the
    // same trouble at once.
    if (last_error_steady_ == std::chrono::steady_clock::time_point{} || now - last_error_steady_ > std::chrono::seconds(5)) {
        spdlog::warn("couch source {}: the server is in trouble ({}): {}", name_, reason, message);
    }
    last_error_ = std::move(message);
    last_error_time_ = std::chrono::system_clock::now();
    last_error_steady_ = now;
    last_error_gauge_.set(std::chrono::duration<double>(last_error_time_.time_since_epoch()).count());
}

source::health source::status() const {
    std::lock_guard lock(mutex_);
    health h;
    bool const recent = last_error_steady_ != std::chrono::steady_clock::time_point{} &&
                        std::chrono::steady_clock::now() - last_error_steady_ < options_.degraded_for;
    h.state = recent ? "degraded" : "ok";
    for (auto const& [reason, v] : errors_) {
        h.errors[reason] = v.first;
    }
    h.last_error = last_error_;
    h.last_error_time = last_error_time_;
    h.connecting = connecting_;
    h.waiting = queue_.size();
    h.max_connecting = options_.max_connecting;
    return h;
}

std::string classify_server_error(unsigned status, std::string_view body) {
    if (status < 500) {
        return {};
    }
    if (body.find("\"emfile\"") != std::string_view::npos || body.find("emfile") != std::string_view::npos) {
        return "emfile";
    }
    if (body.find("all_dbs_active") != std::string_view::npos) {
        return "all_dbs_active";
    }
    if (body.find("No DB shards could be opened") != std::string_view::npos) {
        return "no_db_shards";
    }
    if (status == 503) {
        return "unavailable";
    }
    return "http_5xx";
}

} // namespace couch
