#pragma once

#include "bridge/fleet.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace checkpoint {
class kafka_store;
}
namespace metrics {
class registry;
}

namespace bridge {

struct group_transactions_config {
    std::string bootstrap_servers;
    std::vector<std::pair<std::string, std::string>> properties; // librdkafka producer properties
    // transactional.id of partition P: "<id_prefix>-<P>".
    std::string id_prefix;
    std::string source;          // the checkpoint source (a database's partition is computed from it)
    std::int32_t partitions = 0; // of the assignment topic
    std::chrono::milliseconds commit_interval{1000};
    std::chrono::milliseconds commit_timeout{60000};
    std::string bridge_version;
};

// Exactly-once in group mode: one transactional producer per assignment
// partition this instance owns, with transactional.id "<prefix>-<partition>"
// (the fencing model of Kafka Streams' per-task producers). The records of
// a partition's databases and their checkpoints are committed in that
// producer's transactions, by a flusher of its own.
//
// A partition's next owner opens its unit with init_transactions, which
// aborts whatever the last owner left open and fences that producer: a
// zombie (an instance paused past the session timeout) can no longer commit
// anything for the partitions that moved, even before it notices.
//
// Call open() on assign (before the checkpoints are read, so that the last
// owner's open transaction is resolved first) and close() on revoke (after
// the partition's databases stopped). Thread safety: every member may be
// called from any thread; open() and close() block (network).
class group_transactions {
public:
    // `on_fenced(partition, why)`: the partition's producer failed for good
    // (another instance took the partition over): stop its databases. Runs
    // on a committer thread, at most once per opened unit.
    group_transactions(group_transactions_config cfg, checkpoint::kafka_store& store, metrics::registry& registry,
                       std::function<void(std::int32_t, std::string const&)> on_fenced);
    ~group_transactions();
    group_transactions(group_transactions const&) = delete;
    group_transactions& operator=(group_transactions const&) = delete;

    // The fleet the transactions' hooks act on (in-flight records, rewinds
    // after an abort). Call once, before the first open().
    void attach(fleet& databases);

    // Opens the unit of each partition not open yet (or fenced): a new
    // producer, init_transactions (retried; throws std::runtime_error when
    // it keeps failing) and the first transaction. Blocks.
    void open(std::vector<std::int32_t> const& parts);
    // Closes the units of `parts`: unless `lost`, their last positions are
    // committed first; a lost partition's transaction is aborted (the next
    // owner would abort it anyway). `in_use`: some of their databases have
    // not stopped yet (a lost partition's are not waited for); the
    // transaction is aborted and the unit kept (not destroyed) until this
    // object is.
    void close(std::vector<std::int32_t> const& parts, bool lost, bool in_use = false);
    // Commits every open unit now (shutdown). Returns the first error.
    boost::system::error_code flush_all();

    // The unit of `db`'s partition; nulls when it is not open here or fenced.
    fleet::transaction_unit unit_of(std::string const& db) const;
    // transactional.id of partition `p`.
    std::string transactional_id(std::int32_t p) const;
    // Units open now (for /status).
    std::vector<std::int32_t> open_partitions() const;

private:
    struct unit;
    std::unique_ptr<unit> make_unit(std::int32_t p);
    void retire(std::unique_ptr<unit> u, bool commit, bool keep = false);
    // Waits (bounded) until the unit's flusher loop ended, then destroys it.
    void end(std::unique_ptr<unit> u);

    group_transactions_config cfg_;
    checkpoint::kafka_store& store_;
    metrics::registry& registry_;
    std::function<void(std::int32_t, std::string const&)> on_fenced_;
    fleet* fleet_ = nullptr;
    struct executors;
    std::unique_ptr<executors> exec_;
    mutable std::mutex mutex_;
    std::map<std::int32_t, std::unique_ptr<unit>> units_;
    std::vector<std::unique_ptr<unit>> kept_; // closed while still in use
};

} // namespace bridge
