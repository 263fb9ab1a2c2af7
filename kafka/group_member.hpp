#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace metrics {
class registry;
}

namespace kafka {

struct group_member_config {
    std::string bootstrap_servers;
    std::vector<std::pair<std::string, std::string>> properties; // client properties (security, ...)
    std::string group;  // the consumer group (group.id)
    std::string topic;  // the control topic whose partitions are handed out; it holds no data
    std::chrono::milliseconds session_timeout{10000};
};

// What a member is told when the group moves partitions. Both run on the
// member's own thread, inside the rebalance: the group waits for them, so a
// revoked partition is released only once `revoked` returned (bounded by the
// rebalance timeout). `lost` is true when the partitions were taken away
// without a revoke (the session expired): someone else may own them already.
struct group_events {
    std::function<void(std::vector<std::int32_t> const&)> assigned;
    std::function<void(std::vector<std::int32_t> const& partitions, bool lost)> revoked;
};

// Membership of a Kafka consumer group, used for its protocol only
// (membership, failure detection, assignment), the way Kafka Connect uses it:
// the partitions of `topic` are units of ownership, never read. The
// cooperative-sticky assignor moves only the partitions that must move.
//
// A thread of its own polls the consumer (heartbeats and rebalances).
// Construction subscribes and returns at once; destruction leaves the group
// (the current partitions are revoked through `revoked` first).
class group_member {
public:
    // Throws std::runtime_error (bad configuration, subscribe refused).
    group_member(group_member_config config, group_events events, metrics::registry& registry);
    ~group_member();
    group_member(group_member const&) = delete;
    group_member& operator=(group_member const&) = delete;

    // Whether this member may act on its partitions now (thread-safe,
    // cheap). A lease renewed by the member's thread while it runs without
    // gaps: a process that was paused (SIGSTOP, a VM freeze, a long stall)
    // past a third of the session timeout finds its lease expired when it
    // resumes, and gets it back only after two heartbeat intervals went by
    // without the group taking its partitions away (had it, `revoked` with
    // lost=true has run by then). So a paused member does not act on
    // partitions that may have moved while it did not run.
    //
    // The same holds when the process runs but hears nothing from the group
    // coordinator (a broker down, a network partition, a link that drops or
    // stalls): heartbeats answer every fifth of the session timeout, so a
    // coordinator connection that received nothing for half of it
    // (librdkafka's statistics, twice a second) ends the lease, and contact
    // regained gives it back after two heartbeat intervals. The coordinator
    // evicts a member only after the whole session timeout: by then this one
    // has stopped acting.
    bool lease_valid() const noexcept;

    // Shutdown: leaving the group (destruction) waits for the coordinator
    // until `deadline` at the most; past it the member is dropped without
    // the coordinator's answer (the group then moves its partitions after
    // the session timeout). Thread-safe; call before destruction.
    void leave_by(std::chrono::steady_clock::time_point deadline);

    // Thread-safe snapshots.
    std::string member_id() const;
    std::vector<std::int32_t> partitions() const;
    std::uint64_t rebalances() const;

    struct impl;

private:
    std::unique_ptr<impl> impl_;
};

namespace detail {

// From one librdkafka statistics text: how long ago the client's connection
// to its group coordinator last received anything ("rxidle" of the logical
// "GroupCoordinator" broker), growing while it is down. Empty when the text
// names no coordinator yet, or is not statistics.
std::optional<std::chrono::microseconds> coordinator_silence(std::string_view stats_json);

} // namespace detail

} // namespace kafka
