#pragma once

#include "bridge/config.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <utility>
#include <vector>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

namespace checkpoint {
class flusher;
class kafka_store;
} // namespace checkpoint
namespace kafka {
class group_member;
}
namespace metrics {
class registry;
}

namespace bridge {

class fleet;
class group_transactions;

// The assignment partition of a database: Kafka's own placement of the key
// "<source>/<database>" (Java murmur2, positive, modulo `partitions`), so
// any tool can tell where a database belongs.
std::int32_t database_partition(std::string_view source, std::string_view database, std::int32_t partitions);

// Group mode (--group): this instance's share of the databases.
//
// Every instance joins the consumer group and subscribes to the assignment
// topic; the partitions it is assigned are the databases it runs. On assign
// it reads the checkpoint topic again (the last owner wrote there) and starts
// them; on revoke it stops them, waits (bounded) for their records in flight
// and writes their checkpoints before the partitions go to another member.
//
// Lifetime: start() once the fleet exists; destroy the ownership (which
// leaves the group) before the fleet, the store and the flusher.
class group_ownership {
public:
    group_ownership(std::string source, std::int32_t partitions);
    ~group_ownership();
    group_ownership(group_ownership const&) = delete;
    group_ownership& operator=(group_ownership const&) = delete;

    // Thread-safe: does this instance own `database` now?
    bool owns(std::string const& database) const;
    // Thread-safe, cheap: may the pipelines publish now (the member's lease,
    // see kafka::group_member::lease_valid)? False before start().
    bool may_publish() const noexcept;

    // Joins the group. Throws std::runtime_error when it cannot. With
    // `transactions` (exactly-once), a partition's transactional producer
    // opens on assign before its checkpoints are read, and its last
    // transaction commits on revoke; `flusher` serves at-least-once.
    // `assigned_hook` runs after the databases of newly assigned partitions
    // started (the command channel applies start positions pending for them).
    void start(config const& cfg, std::string const& bootstrap_servers, fleet& databases,
               checkpoint::kafka_store& store, checkpoint::flusher& flusher, metrics::registry& registry,
               group_transactions* transactions = nullptr, std::function<void()> assigned_hook = {});

    // The group's view of who owns what (GET /databases): refresh() asks the
    // group coordinator (blocking, up to 3 s; keeps the last view on
    // failure); owner_of() answers from the last view: the client.id of the
    // member whose partitions include `database`'s ("" when unknown).
    void refresh_owners();
    // Shutdown: from now on no wait of a revoke (records in flight of the
    // released databases) and no step of leaving the group (the destructor)
    // lasts past `deadline`. Thread-safe.
    void stop_by(std::chrono::steady_clock::time_point deadline);
    // Shutdown: the assigned hook is not called any more once this returns
    // (waits for a call under way), so what it refers to may go.
    void drop_assigned_hook();
    std::string owner_of(std::string const& database) const;

    // Exactly-once: partition `p`'s producer was fenced (another member
    // took it over). Its databases stop here until the group assigns it
    // again. Thread-safe.
    void fenced(std::int32_t p);

    // For /status: member id, the partitions, rebalances.
    std::string member_id() const;
    std::vector<std::int32_t> partitions() const;
    std::uint64_t rebalances() const;

private:
    bool wait_released(fleet& databases, std::vector<std::string> const& stopping) const;

    std::string source_;
    std::int32_t partitions_;
    mutable std::mutex mutex_;
    std::set<std::int32_t> owned_;
    fleet* databases_ = nullptr;
    std::string group_, topic_, bootstrap_;
    std::vector<std::pair<std::string, std::string>> properties_;
    std::map<std::int32_t, std::string> owners_; // the last view: partition -> member's client.id
    std::mutex hook_mutex_;
    std::function<void()> assigned_hook_;
    std::unique_ptr<kafka::group_member> member_;
    std::atomic<kafka::group_member*> member_ready_{nullptr}; // member_, once started
    // steady_clock ticks of stop_by's deadline (max: none).
    std::atomic<std::chrono::steady_clock::rep> stop_by_{
        std::chrono::steady_clock::time_point::max().time_since_epoch().count()};
};

// The assignment topic of a configuration: --assignment-topic, else
// "couch-bridge-assign.<group>".
std::string assignment_topic(config const& cfg);

} // namespace bridge
