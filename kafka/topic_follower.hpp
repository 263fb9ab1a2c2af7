#pragma once

#include "kafka/topic_reader.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace kafka {

// Follows partition 0 of a topic from its beginning, on a thread of its own,
// for as long as the object lives: `each` gets every record in offset order,
// and `caught_up` is called once, after the records that were there at
// start() (the high watermark then) have all been given to `each`. No
// consumer group is joined and no offset is committed. Read uncommitted
// (the topic's writers are not transactional).
//
// Broker trouble after start() is retried by librdkafka and logged; records
// are never skipped. Both callbacks run on the follower's thread.
class topic_follower {
public:
    topic_follower(topic_reader_config config, std::string topic, std::function<void(stored_record&&)> each,
                   std::function<void()> caught_up);
    ~topic_follower(); // stops the thread (bounded by one poll, 100 ms)
    topic_follower(topic_follower const&) = delete;
    topic_follower& operator=(topic_follower const&) = delete;

    // Assigns the partition and starts the thread. Throws std::runtime_error
    // (naming the topic and librdkafka's reason) when the topic's high
    // watermark cannot be read within `timeout`.
    void start(std::chrono::milliseconds timeout);

    struct impl;

private:
    std::unique_ptr<impl> impl_;
};

} // namespace kafka
