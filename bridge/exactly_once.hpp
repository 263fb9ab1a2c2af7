#pragma once

#include "checkpoint/store.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>

namespace checkpoint {
class kafka_store;
}
namespace kafka {
class producer;
}
namespace metrics {
class registry;
class counter;
class histogram;
} // namespace metrics

namespace bridge {

// Exactly-once delivery (--delivery exactly-once): the flusher's writer that
// commits the records of every pipeline and their checkpoints in one Kafka
// transaction.
//
// Each flush (every --commit-interval, on the flusher's own thread):
//   prepare  close the producer's batch gate, wait for the batches under way
//            and for every record in flight to be acknowledged, so that the
//            pipelines' watermarks cover exactly what the transaction holds;
//   write    produce the checkpoint records of the databases that advanced
//            into the same transaction and commit it;
//   finish   begin the next transaction and open the gate.
// An abortable failure aborts the transaction, drops the positions and has
// every pipeline read again from its last committed checkpoint (the gate
// stays closed until they all have). A fatal one (fenced by another bridge
// with the same transactional id) calls `on_fatal`, which must end the
// process without writing anything else.
class transaction_writer final : public checkpoint::position_writer {
public:
    struct hooks {
        // Records produced and not yet reported, over all pipelines.
        std::function<std::size_t()> in_flight;
        // Has every pipeline read again from its durable checkpoint; calls
        // `done` (on any thread) once all have taken the rewind. Must not
        // block.
        std::function<void(std::function<void()> done)> rewind_all;
        // Forgets the flusher's dirty positions.
        std::function<void()> discard_dirty;
        // Fenced or broken for good: log and exit nonzero. Does not return.
        std::function<void(std::string const& why)> on_fatal;
    };

    // The producer's transactions must be initialized and the first one
    // begun (see open_kafka_checkpoints).
    transaction_writer(kafka::producer& producer, checkpoint::kafka_store& store, hooks h, metrics::registry& registry,
                       std::chrono::milliseconds commit_timeout);

    void prepare(bool thorough) override;
    boost::system::error_code write(std::vector<std::pair<checkpoint::key, checkpoint::position>> const& entries) override;
    void finish() override;
    bool keep_dirty_on_failure() const override { return false; }
    bool write_when_clean() const override { return true; }
    std::string last_error_detail() const override;

private:
    boost::system::error_code abort(std::string const& why);

    kafka::producer& producer_;
    checkpoint::kafka_store& store_;
    hooks hooks_;
    std::chrono::milliseconds commit_timeout_;
    metrics::counter& committed_;
    metrics::counter& aborted_;
    metrics::counter& empty_;
    metrics::histogram& commit_seconds_;
    mutable std::mutex mutex_;
    std::string last_error_;
    bool aborted_now_ = false; // the gate opens when the rewinds are done
    std::size_t produced_in_txn_ = 0;
};

} // namespace bridge
