#include "bridge/pipeline.hpp"

#include "bridge/change_meta.hpp"
#include "bridge/pipeline_probe.hpp"
#include "kafka/error.hpp"
#include "kafka/producer.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

namespace asio = boost::asio;

namespace bridge {

pipeline::pipeline(asio::any_io_executor pool, couch::client_config client, couch::feed_options feed,
                   checkpoint::key key, std::optional<std::string> checkpoint_seq, window_limits limits,
                   dependencies deps, std::shared_ptr<couch::source> source)
    : pipeline(pool, std::make_shared<couch::client>(pool, std::move(client), std::move(source), &deps.registry),
               std::move(feed), std::move(key), std::move(checkpoint_seq), limits, deps) {}

pipeline::pipeline(asio::any_io_executor pool, std::shared_ptr<couch::client> client, couch::feed_options feed,
                   checkpoint::key key, std::optional<std::string> checkpoint_seq, window_limits limits,
                   dependencies deps)
    : strand_(asio::make_strand(pool)),
      initial_since_(feed.since),
      feed_(strand_, std::move(client), std::move(feed), deps.registry),
      key_(std::move(key)),
      limits_(limits),
      deps_(deps),
      probe_(std::make_unique<probe>(deps.registry, key_.database)),
      committed_(checkpoint_seq),
      start_seq_(std::move(checkpoint_seq)),
      window_timer_(strand_),
      status_timer_(strand_) {
    if (deps_.memory != nullptr) {
        deps_.flusher.write_first(*deps_.memory);
    }
    status_.database = key_.database;
    status_.state = "connecting";
    if (committed_) {
        status_.checkpoint_seq = *committed_;
    }
    // A state change shows in status() at once, not at the next tick: the
    // fleet gives a caught-up feed's place to a waiting database as soon as
    // it sees it `following` (fleet_idle.cpp). Both run on the strand.
    feed_.on_state_change([this](couch::feed_state st) {
        feed_state_ = st;
        refresh_status();
    });
    lane_ = &deps_.producer;
}

pipeline::~pipeline() { feed_.on_state_change({}); }

void pipeline::stop() {
    if (stop_requested_.exchange(true)) {
        return;
    }
    asio::post(strand_, [this] {
        stopping_ = true;
        feed_.stop();
        window_timer_.cancel();
        status_timer_.cancel();
    });
}

std::size_t pipeline::in_flight() const { return in_flight_atomic_.load(std::memory_order_relaxed); }

metrics::counter& pipeline::published_counter(std::string_view topic) {
    auto it = published_by_topic_.find(topic);
    if (it != published_by_topic_.end()) {
        return *it->second;
    }
    auto& c = deps_.registry.add_counter("couch_bridge_records_published_total",
                                         "Records acknowledged by Kafka, by database and topic",
                                         {{"database", key_.database}, {"topic", std::string(topic)}});
    published_by_topic_.emplace(std::string(topic), &c);
    return c;
}

// A database without a checkpoint that starts from `now`: learn what "now"
// is and write it durably before any row is handed out, so that neither a
// crash nor a stop (with or without rows in between) can make the next start
// resolve a later "now" and skip what was written meanwhile. False when
// stopped first.
asio::awaitable<bool> pipeline::pin_now_start() {
    std::optional<couch::seq> start;
    try {
        start = co_await feed_.resolve_now();
    } catch (boost::system::system_error const& e) {
        if (stopping_ || e.code() == asio::error::operation_aborted) {
            co_return false;
        }
        throw;
    }
    if (!start) {
        co_return !stopping_;
    }
    committed_ = start->raw_json();
    deps_.flusher.update(key_, *committed_);
    auto delay = std::chrono::milliseconds(500);
    for (;;) {
        // One synchronous durable write (an fsync) for this database, once in
        // its life: the only time a pipeline waits for the store.
        auto const ec = deps_.flusher.flush_now();
        if (!ec) {
            break;
        }
        spdlog::error("db {}: cannot store the start position {} (since=now): {}; not reading until it is stored",
                      key_.database, *committed_, ec.message());
        failure_ = "cannot store the start position: " + ec.message();
        failure_time_ = std::chrono::system_clock::now();
        asio::steady_timer t(strand_, delay);
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        if (stopping_) {
            co_return false;
        }
        delay = std::min(delay * 2, std::chrono::milliseconds(30000));
    }
    spdlog::info("db {}: since=now resolved to {}; stored durably before reading on", key_.database, *committed_);
    co_return !stopping_;
}

asio::awaitable<void> pipeline::run() {
    asio::co_spawn(strand_, status_ticker(), [this](std::exception_ptr) {
        ticker_done_.store(true); // see quiescent(): the owner may destroy the pipeline after this
    });
    std::mt19937 jitter{std::random_device{}()};
    if (!committed_ && initial_since_.where == couch::since::kind::now) {
        if (!co_await pin_now_start()) {
            refresh_status();
            co_return;
        }
    }
    while (!stopping_) {
        if (rewind_pending_) {
            // A delivery failed: wait, then read again from the last position
            // that Kafka acknowledged. Everything after it is sent again
            // (at-least-once), nothing is skipped.
            rewind_pending_ = false;
            auto delay = retry_delay_;
            std::uniform_int_distribution<long> spread(0, delay.count() / 4 + 1);
            delay += std::chrono::milliseconds(spread(jitter));
            spdlog::warn("db {}: rewinding to checkpoint {} in {} ms after a delivery failure: {}", key_.database,
                         committed_ ? *committed_ : std::string("(start)"), delay.count(), failure_);
            asio::steady_timer t(strand_, delay);
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
            if (stopping_) {
                break;
            }
            release_lease(); // the open group is abandoned with its generation
            watermark_.reset();
            outstanding_.clear();
            if (committed_) {
                feed_.rewind(couch::since::from(couch::seq::from_raw_json(*committed_)));
            } else {
                // Nothing acknowledged yet. A `now` start that has resolved
                // was checkpointed below, so committed_ is set then; here
                // "now" never resolved, hence no row was read either.
                feed_.rewind(initial_since_);
            }
            probe_->rewinds.inc();
        }

        // Back-pressure: do not read while the window is full.
        if (in_flight_records_ >= limits_.max_records || in_flight_bytes_ >= limits_.max_bytes) {
            probe_->backpressure.inc();
            while (!stopping_ && !rewind_pending_ &&
                   (in_flight_records_ >= limits_.max_records || in_flight_bytes_ >= limits_.max_bytes)) {
                window_timer_.expires_after(std::chrono::seconds(1));
                co_await window_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            continue;
        }

        auto generation = generation_;
        std::vector<couch::row> rows;
        try {
            rows = co_await feed_.next();
        } catch (boost::system::system_error const& e) {
            if (stopping_ || e.code() == asio::error::operation_aborted) {
                break;
            }
            throw;
        }
        if (stopping_) {
            break;
        }
        if (generation != generation_ || rewind_pending_) {
            // Rows read before a rewind decision are dropped: they are read
            // again from the checkpoint.
            continue;
        }
        co_await publish(std::move(rows), generation);
    }
    release_lease();
    refresh_status();
}

void pipeline::release_lease() {
    if (lease_held_) {
        lease_held_ = false;
        deps_.producer.leave_batch();
    }
}

// Before anything can move the checkpoint past a published document (an
// acknowledgement handled while publish() waits, or the end of publish()),
// what it was goes to the memory. The memory only buffers it; the flusher
// writes the buffer to the store before the positions that cover it
// (flusher::write_first). A failure is counted and logged there (or here,
// when a full buffer is written at once): the memory is a cache, and the
// tombstone of that document would go to the default topic.
void pipeline::write_memory() {
    if (memo_.empty() || deps_.memory == nullptr) {
        memo_.clear();
        return;
    }
    if (auto ec = deps_.memory->remember(key_, std::move(memo_))) {
        spdlog::warn("db {}: cannot write the hard-delete memory: {}", key_.database, ec.message());
    }
    memo_.clear();
}

bool pipeline::filtered_out(change_meta const& meta) const {
    auto const& o = deps_.options;
    if (o.include_doc_types.empty() && o.exclude_doc_types.empty()) {
        return false;
    }
    std::string_view const type = meta.document_type ? std::string_view(*meta.document_type) : std::string_view();
    auto const in = [type](std::vector<std::string> const& v) { return std::find(v.begin(), v.end(), type) != v.end(); };
    return (!o.include_doc_types.empty() && !in(o.include_doc_types)) || in(o.exclude_doc_types);
}

bool pipeline::unpublishable(couch::row const& row, change_meta const& meta, std::string const& error,
                             std::size_t size, checkpoint::watermark::ticket ticket, std::uint64_t generation) {
    auto const& o = deps_.options;
    std::string const action = o.on_unpublishable == unpublishable_policy::dlq ? "dlq" : "skip";
    std::string const reason = error.find("too large") != std::string::npos ||
                                       error.find("Message size") != std::string::npos ||
                                       error.find("MSG_SIZE") != std::string::npos
                                   ? "too_large"
                                   : "rejected";
    ++unpublishable_;
    last_unpublishable_ =
        row.id + " (seq " + row.seq.raw_json() + ", " + std::to_string(size) + " bytes): " + error + " -> " + action;
    deps_.registry
        .add_counter("couch_bridge_unpublishable_total",
                     "Records Kafka can never take, by reason and what was done (dlq, skip)",
                     {{"database", key_.database}, {"reason", reason}, {"action", action}})
        .inc();
    spdlog::warn("db {}: a record can never be published: {}", key_.database, last_unpublishable_);
    if (o.on_unpublishable == unpublishable_policy::skip) {
        ++skipped_;
        return true;
    }
    kafka::record d;
    d.topic = o.dlq_topic;
    d.key = row.id;
    serialize(meta, d.value); // the stub, never the document
    d.headers = {{"error", error}, {"database", key_.database}, {"seq", row.seq.raw_json()},
                 {"size", std::to_string(size)}};
    auto const bytes = d.value.size() + d.key.size();
    auto const sent = std::chrono::steady_clock::now();
    std::string_view const topic = o.dlq_topic;
    auto ec = deps_.producer.try_produce(d, strand_, [this, ticket, generation, bytes, topic, sent](kafka::delivery_report const& r) {
        on_delivery(ticket, generation, bytes, topic, sent, r, {}, {});
    });
    if (ec) {
        probe_->produce_errors.inc();
        fail_generation("cannot produce to the dead-letter topic " + o.dlq_topic + ": " + ec.message());
        return false;
    }
    ++outstanding_[ticket];
    ++in_flight_records_;
    in_flight_bytes_ += bytes;
    in_flight_atomic_.store(in_flight_records_, std::memory_order_relaxed);
    return true;
}

unpublishable_policy parse_unpublishable_policy(std::string_view s) {
    if (s == "dlq") {
        return unpublishable_policy::dlq;
    }
    if (s == "skip") {
        return unpublishable_policy::skip;
    }
    if (s == "stop") {
        return unpublishable_policy::stop;
    }
    throw std::invalid_argument("on-unpublishable must be dlq, skip or stop, not '" + std::string(s) + "'");
}

} // namespace bridge
