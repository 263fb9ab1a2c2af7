#pragma once

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

namespace bridge {

struct tail_options {
    std::string brokers;
    std::vector<std::string> topics;
    std::size_t max_records = 0;                 // 0: until the timeout
    std::chrono::milliseconds timeout{10000};     // stop after this long without a new record
};

// `couch-kafka-bridge tail`: prints the records of `topics` from the
// beginning, one JSON object per line ({"topic","partition","offset","key",
// "headers","value"}), the way an operator checks what the bridge publishes.
// Topics that do not exist yet are waited for until the timeout. Returns the
// process exit code (0 when at least one record was printed or max_records is
// 0, 1 on a Kafka error).
int run_tail(tail_options const& options, std::ostream& out, std::ostream& err);

} // namespace bridge
