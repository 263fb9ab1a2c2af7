#include "bridge/group.hpp"

#include "bridge/fleet.hpp"
#include "bridge/group_transactions.hpp"
#include "checkpoint/flusher.hpp"
#include "checkpoint/kafka_store.hpp"
#include "kafka/group_member.hpp"
#include "kafka/group_members.hpp"
#include "kafka/murmur2.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

namespace bridge {

std::int32_t database_partition(std::string_view source, std::string_view database, std::int32_t partitions) {
    std::string k;
    k.reserve(source.size() + 1 + database.size());
    k.append(source).append("/").append(database);
    return kafka::java_partition_for_key(k, partitions);
}

std::string assignment_topic(config const& cfg) {
    return cfg.assignment_topic.empty() ? "couch-bridge-assign." + cfg.group : cfg.assignment_topic;
}

group_ownership::group_ownership(std::string source, std::int32_t partitions)
    : source_(std::move(source)), partitions_(partitions) {}

// The wait of a revoke for the records in flight of the released databases:
// up to 30 s, and never past the stop deadline.
bool group_ownership::wait_released(fleet& databases, std::vector<std::string> const& stopping) const {
    using clock = std::chrono::steady_clock;
    auto const until = clock::now() + std::chrono::seconds(30);
    for (;;) {
        // Read at each look: a stop may begin while this waits.
        auto const end = std::min(until, clock::time_point(clock::duration(stop_by_.load())));
        if (databases.wait_stopped(stopping, std::chrono::milliseconds(0))) {
            return true;
        }
        if (clock::now() >= end) {
            spdlog::warn("group: {} database(s) still had records in flight {}; releasing them anyway (the next "
                         "owner may publish those records again)",
                         stopping.size(), end == until ? "after 30 s" : "at the shutdown deadline");
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

group_ownership::~group_ownership() {
    member_ready_.store(nullptr);
    member_.reset(); // leaves the group: what is owned is revoked first
}

bool group_ownership::owns(std::string const& database) const {
    auto const p = database_partition(source_, database, partitions_);
    std::lock_guard lock(mutex_);
    return owned_.contains(p);
}

void group_ownership::start(config const& cfg, std::string const& bootstrap_servers, fleet& databases,
                            checkpoint::kafka_store& store, checkpoint::flusher& flusher,
                            metrics::registry& registry, group_transactions* transactions,
                            std::function<void()> assigned_hook) {
    databases_ = &databases;
    group_ = cfg.group;
    topic_ = assignment_topic(cfg);
    bootstrap_ = bootstrap_servers;
    properties_ = kafka_client_properties(cfg);
    kafka::group_events events;
    assigned_hook_ = std::move(assigned_hook);
    events.assigned = [this, &databases, &store, transactions](std::vector<std::int32_t> const& parts) {
        if (transactions != nullptr) {
            // Fences the last owners first: what they left open is aborted
            // before their checkpoints are read.
            try {
                transactions->open(parts);
            } catch (std::exception const& e) {
                spdlog::error("group: {}; their databases do not start here until the next rebalance", e.what());
            }
        }
        // The positions the last owner wrote: read before starting anything.
        for (int attempt = 1;; ++attempt) {
            try {
                store.reload();
                break;
            } catch (std::exception const& e) {
                if (attempt >= 5) {
                    spdlog::error("group: cannot read the checkpoint topic again ({}); starting from the positions "
                                  "known, which may repeat records",
                                  e.what());
                    break;
                }
                std::this_thread::sleep_for(std::chrono::seconds(1));
            }
        }
        {
            std::lock_guard lock(mutex_);
            owned_.insert(parts.begin(), parts.end());
        }
        databases.reassess();
        std::lock_guard hook_lock(hook_mutex_);
        if (assigned_hook_) {
            assigned_hook_();
        }
    };
    events.revoked = [this, &databases, &flusher, transactions](std::vector<std::int32_t> const& parts, bool lost) {
        {
            std::lock_guard lock(mutex_);
            for (auto p : parts) {
                owned_.erase(p);
            }
        }
        auto stopping = databases.reassess();
        bool stopped = true;
        if (lost) {
            // The group took them away (the session expired): another member
            // may run them already, from the last checkpoint written. An
            // acknowledgement arriving here now changes nothing for it, so
            // nothing waits for one (the coordinator may well be unreachable,
            // and the records with it). Their pipelines end on their own.
            stopped = databases.wait_stopped(stopping, std::chrono::milliseconds(0));
            if (!stopped) {
                spdlog::info("group: {} lost database(s) still stopping; not waiting for their records in flight "
                             "(the next owner publishes them again from the last checkpoint)",
                             stopping.size());
            }
        } else {
            stopped = wait_released(databases, stopping);
        }
        if (transactions != nullptr) {
            // Commits what the released databases did (unless lost: then the
            // next owner's init_transactions aborts it).
            transactions->close(parts, lost, !stopped);
        } else if (!lost) {
            // The next owner starts where these checkpoints say.
            if (auto ec = flusher.flush_now()) {
                spdlog::warn("group: checkpoints of the released databases not written ({}); the next owner may "
                             "publish some records again",
                             ec.message());
            }
        }
    };
    kafka::group_member_config gc;
    gc.bootstrap_servers = bootstrap_servers;
    gc.properties = kafka_client_properties(cfg);
    // Every member names this one the way /databases does.
    gc.properties.emplace_back("client.id", instance_name());
    gc.group = cfg.group;
    gc.topic = assignment_topic(cfg);
    gc.session_timeout = cfg.group_session_timeout;
    member_ = std::make_unique<kafka::group_member>(std::move(gc), std::move(events), registry);
    member_ready_.store(member_.get(), std::memory_order_release);
    member_->leave_by(std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(stop_by_.load())));
    spdlog::info("group {}: joining through {} ({} partitions)", cfg.group, assignment_topic(cfg), partitions_);
}

void group_ownership::fenced(std::int32_t p) {
    {
        std::lock_guard lock(mutex_);
        if (owned_.erase(p) == 0) {
            return;
        }
    }
    if (databases_ != nullptr) {
        databases_->reassess();
    }
}

bool group_ownership::may_publish() const noexcept {
    auto const* m = member_ready_.load(std::memory_order_acquire);
    return m != nullptr && m->lease_valid();
}

void group_ownership::stop_by(std::chrono::steady_clock::time_point deadline) {
    stop_by_.store(deadline.time_since_epoch().count());
    if (auto* m = member_ready_.load(std::memory_order_acquire)) {
        m->leave_by(deadline);
    }
}

void group_ownership::drop_assigned_hook() {
    std::lock_guard lock(hook_mutex_);
    assigned_hook_ = nullptr;
}

void group_ownership::refresh_owners() {
    try {
        auto members = kafka::describe_group_members(bootstrap_, properties_, group_, std::chrono::seconds(3));
        std::map<std::int32_t, std::string> view;
        for (auto const& m : members) {
            if (auto it = m.assignment.find(topic_); it != m.assignment.end()) {
                for (auto p : it->second) {
                    view[p] = m.client_id.empty() ? m.member_id : m.client_id;
                }
            }
        }
        std::lock_guard lock(mutex_);
        owners_ = std::move(view);
    } catch (std::exception const& e) {
        spdlog::warn("group: cannot describe the group's members ({}); /databases shows the last view", e.what());
    }
}

std::string group_ownership::owner_of(std::string const& database) const {
    auto const p = database_partition(source_, database, partitions_);
    std::lock_guard lock(mutex_);
    auto it = owners_.find(p);
    return it == owners_.end() ? std::string() : it->second;
}

std::string group_ownership::member_id() const { return member_ ? member_->member_id() : std::string(); }

std::vector<std::int32_t> group_ownership::partitions() const {
    std::lock_guard lock(mutex_);
    return {owned_.begin(), owned_.end()};
}

std::uint64_t group_ownership::rebalances() const { return member_ ? member_->rebalances() : 0; }

} // namespace bridge
