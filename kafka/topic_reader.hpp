#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kafka {

// One record read back from a topic. A tombstone (a null value) has no
// value; an empty value is not a tombstone.
struct stored_record {
    std::int32_t partition = 0;
    std::int64_t offset = 0;
    std::string key;
    std::optional<std::string> value;
};

struct topic_reader_config {
    // Comma-separated host:port list ("bootstrap.servers").
    std::string bootstrap_servers;
    // Client properties (security, SASL, ...). Properties that only a
    // producer knows are dropped, so the same list as the producer's works.
    std::vector<std::pair<std::string, std::string>> properties;
};

// Reads every partition of `topic` from its beginning to its end as it was
// when the read started, with isolation.level=read_committed: records of
// aborted transactions are not returned. A transaction still open at the
// start is waited for (until it ends, or `timeout`), never skipped: the
// records committed after it, by anyone, are part of the read. `each` is
// called in offset order per partition. No consumer group is joined and no
// offset is committed.
//
// Throws std::runtime_error naming the topic and librdkafka's reason when
// the topic does not exist, the brokers cannot be reached, or the end is not
// reached within `timeout`.
void read_topic(topic_reader_config const& config, std::string const& topic,
                std::function<void(stored_record&&)> const& each, std::chrono::milliseconds timeout);

} // namespace kafka
