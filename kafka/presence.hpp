#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kafka {

struct presence_config {
    std::string bootstrap_servers;
    std::vector<std::pair<std::string, std::string>> properties; // client properties (security, ...)
    std::string group;  // the consumer group that marks "a bridge runs"
    std::string topic;  // an existing topic to subscribe to (nothing is read from it)
};

// Marks a running process in Kafka: a consumer that joins `group` and stays
// a member while the object lives (a thread of its own serves the group
// protocol; records of `topic` are never consumed: the partitions are paused
// as soon as they are assigned). Another process asks group_has_members().
// Used so that `checkpoints set|delete` on the Kafka checkpoint store refuse
// while a bridge of that store runs, as the RocksDB store's lock does.
//
// Construction never blocks on the network; a broker that cannot be reached
// only delays the membership. Destruction leaves the group (bounded).
class presence {
public:
    explicit presence(presence_config config);
    ~presence();
    presence(presence const&) = delete;
    presence& operator=(presence const&) = delete;

    struct impl;

private:
    std::unique_ptr<impl> impl_;
};

// Whether `group` has members now (DescribeGroups through ListGroups).
// Throws std::runtime_error with librdkafka's reason when the brokers cannot
// say within `timeout`.
bool group_has_members(std::string const& bootstrap_servers,
                       std::vector<std::pair<std::string, std::string>> const& properties, std::string const& group,
                       std::chrono::milliseconds timeout);

} // namespace kafka
