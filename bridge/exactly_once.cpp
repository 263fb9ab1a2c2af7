#include "bridge/exactly_once.hpp"

#include "checkpoint/kafka_store.hpp"
#include "kafka/producer.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/system_executor.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>

namespace bridge {

namespace {

using namespace std::chrono_literals;

} // namespace

transaction_writer::transaction_writer(kafka::producer& producer, checkpoint::kafka_store& store, hooks h,
                                       metrics::registry& registry, std::chrono::milliseconds commit_timeout)
    : producer_(producer),
      store_(store),
      hooks_(std::move(h)),
      commit_timeout_(commit_timeout),
      committed_(registry.add_counter("couch_bridge_transactions_total",
                                      "Kafka transactions ended (exactly-once), by result", {{"result", "committed"}})),
      aborted_(registry.add_counter("couch_bridge_transactions_total",
                                    "Kafka transactions ended (exactly-once), by result", {{"result", "aborted"}})),
      empty_(registry.add_counter("couch_bridge_transactions_total",
                                  "Kafka transactions ended (exactly-once), by result", {{"result", "empty"}})),
      commit_seconds_(registry.add_histogram("couch_bridge_transaction_commit_seconds",
                                             "Time to commit one Kafka transaction (flush of its records included)",
                                             metrics::exponential_buckets(0.001, 2.0, 16))) {}

void transaction_writer::prepare(bool thorough) {
    producer_.close_gate();
    if (!thorough) {
        // flush_now() may run on an event-loop thread: waiting here for the
        // loop would never end. The positions taken are still covered by
        // the transaction (they only move over acknowledged records).
        return;
    }
    auto const deadline = std::chrono::steady_clock::now() + commit_timeout_;
    auto pause = std::chrono::microseconds(100);
    while (producer_.batches_open() > 0 || hooks_.in_flight() > 0) {
        if (std::chrono::steady_clock::now() >= deadline) {
            spdlog::warn("exactly-once: {} batch(es) and {} record(s) still under way after {} ms; committing what "
                         "is acknowledged",
                         producer_.batches_open(), hooks_.in_flight(), commit_timeout_.count());
            break;
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(5000));
    }
}

boost::system::error_code transaction_writer::write(
    std::vector<std::pair<checkpoint::key, checkpoint::position>> const& entries) {
    auto const started = std::chrono::steady_clock::now();
    for (auto const& [k, p] : entries) {
        auto rec = store_.make_record(k, p);
        for (;;) {
            auto ec = producer_.try_produce(rec, boost::asio::system_executor(), [](kafka::delivery_report const&) {
                // The commit below reports the outcome of the whole transaction.
            });
            if (!ec) {
                break;
            }
            if (!kafka::producer::is_queue_full(ec)) {
                return abort("cannot produce the checkpoint of " + k.database + ": " + ec.message());
            }
            std::this_thread::sleep_for(1ms);
        }
    }
    for (auto pause = 100ms;; pause = std::min(2 * pause, 5000ms)) {
        auto st = producer_.commit_transaction(commit_timeout_);
        if (st.ok()) {
            break;
        }
        if (st.conflict) {
            // An abort_transaction() that timed out (group mode: the abort of
            // a lost partition's transaction while Kafka was away) is still
            // under way: this transaction can only end aborted, and no
            // commit can run until that abort is called again and completes.
            return abort("an abort of this transaction is under way (" + st.message + ")");
        }
        if (st.what == kafka::txn_status::kind::retriable) {
            // A timeout returns after commit_timeout_; anything else that
            // returns at once must not make this loop spin.
            spdlog::warn("exactly-once: commit not done yet ({}); trying again", st.message);
            std::this_thread::sleep_for(pause);
            continue;
        }
        if (st.what == kafka::txn_status::kind::abortable) {
            return abort("the transaction cannot commit: " + st.message);
        }
        hooks_.on_fatal(st.message);
        return checkpoint::make_error_code(checkpoint::store_errc::io);
    }
    commit_seconds_.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    (entries.empty() ? empty_ : committed_).inc();
    store_.committed(entries);
    std::lock_guard lock(mutex_);
    last_error_.clear();
    return {};
}

boost::system::error_code transaction_writer::abort(std::string const& why) {
    aborted_.inc();
    spdlog::error("exactly-once: aborting the transaction: {}; every database reads again from its last committed "
                  "checkpoint",
                  why);
    for (;;) {
        auto st = producer_.abort_transaction(commit_timeout_);
        if (st.ok()) {
            break;
        }
        if (st.what == kafka::txn_status::kind::fatal) {
            hooks_.on_fatal(st.message);
            break;
        }
        spdlog::warn("exactly-once: abort not done yet ({}); trying again", st.message);
        std::this_thread::sleep_for(100ms);
    }
    {
        std::lock_guard lock(mutex_);
        last_error_ = why;
        aborted_now_ = true;
    }
    return checkpoint::make_error_code(checkpoint::store_errc::io);
}

void transaction_writer::finish() {
    if (auto fatal = producer_.fatal_error(); !fatal.empty()) {
        hooks_.on_fatal(fatal);
        return;
    }
    bool aborted = false;
    {
        std::lock_guard lock(mutex_);
        aborted = std::exchange(aborted_now_, false);
    }
    for (int attempt = 1;; ++attempt) {
        auto st = producer_.begin_transaction();
        if (st.ok()) {
            break;
        }
        if (st.what == kafka::txn_status::kind::fatal || attempt >= 100) {
            hooks_.on_fatal("cannot begin a transaction: " + st.message);
            return;
        }
        std::this_thread::sleep_for(100ms);
    }
    if (!aborted) {
        producer_.open_gate();
        return;
    }
    // The gate opens once every pipeline has taken its rewind: no record
    // read before the abort may go into the next transaction.
    hooks_.rewind_all([this] {
        hooks_.discard_dirty();
        producer_.open_gate();
    });
}

std::string transaction_writer::last_error_detail() const {
    std::lock_guard lock(mutex_);
    return last_error_;
}

} // namespace bridge
