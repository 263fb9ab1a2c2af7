#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace test_support {

struct consumed_record {
    std::string topic;
    std::int32_t partition = -1;
    std::int64_t offset = -1;
    std::string key;
    std::string value;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string header(std::string const& name) const;
};

// Reads every record that `topics` hold right now (offset 0 up to each
// partition's high watermark at the time of the call) with a plain
// librdkafka consumer. A topic that does not exist contributes nothing.
// Throws std::runtime_error if the records cannot be read within `timeout`.
std::vector<consumed_record> consume_all(std::string const& brokers, std::vector<std::string> const& topics,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Number of partitions of `topic` (0 if it does not exist).
int partition_count(std::string const& brokers, std::string const& topic);

} // namespace test_support
