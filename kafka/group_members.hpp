#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kafka {

// topic -> partitions, as a consumer group member was assigned them.
using member_assignment = std::map<std::string, std::vector<std::int32_t>>;

// One member of a consumer group, as the group coordinator describes it.
struct group_member_view {
    std::string member_id;
    std::string client_id; // the member's client.id
    std::string host;      // the address the coordinator sees it from ("/10.0.0.7")
    member_assignment assignment;
};

// Decodes the assignment bytes of a member of a "consumer" group (the
// ConsumerProtocol Assignment: version, [topic, [partition]], user data).
// nullopt when the bytes are not that (truncated, negative counts, trailing
// garbage is tolerated only as user data).
std::optional<member_assignment> parse_consumer_assignment(std::string_view bytes);

// The members of `group` with their assignments (DescribeGroups through
// ListGroups). A member whose assignment does not decode is listed with
// none. Throws std::runtime_error with librdkafka's reason when the brokers
// cannot say within `timeout`. Blocks the calling thread.
std::vector<group_member_view> describe_group_members(
    std::string const& bootstrap_servers, std::vector<std::pair<std::string, std::string>> const& properties,
    std::string const& group, std::chrono::milliseconds timeout);

} // namespace kafka
