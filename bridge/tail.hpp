#pragma once

#include "couch/changes_feed.hpp" // client_config

#include <chrono>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace bridge {

struct tail_options {
    std::string brokers;
    std::vector<std::string> topics;
    // librdkafka properties applied after the tail's own (security settings).
    std::vector<std::pair<std::string, std::string>> properties;
    std::size_t max_records = 0;                 // 0: until the timeout
    std::chrono::milliseconds timeout{10000};     // stop after this long without a new record
    // When set, each record is resolved to its document through the store it
    // names (data_source_type "couch", database data_source_name, on this
    // CouchDB), in batches of up to fetch_batch ids per _bulk_get.
    std::optional<couch::client_config> fetch_docs;
    std::size_t fetch_batch = 100;
};

// `couch-kafka-bridge tail`: prints the records of `topics` from the
// beginning, one JSON object per line ({"topic","partition","offset","key",
// "headers","value"}), the way an operator checks what the bridge publishes.
// Topics that do not exist yet are waited for until the timeout.
//
// With fetch_docs, each line also has "document": {"status":"found","doc":{..}}
// (the current revision), {"status":"deleted"} (with the tombstone as "doc"
// when the server sent one), {"status":"missing"}, {"status":"error","error":..}
// (the store could not be read: unreachable, credentials, no such database),
// or {"status":"no_store","reason":..} (the value is not a ChangeMeta of a
// couch store). Records are printed in the order read, a batch at a time.
//
// Returns the process exit code: 0 when at least one record was printed or
// max_records is 0; 1 on a Kafka error, fewer than max_records within the
// timeout, or any document that could not be fetched (status "error").
int run_tail(tail_options const& options, std::ostream& out, std::ostream& err);

} // namespace bridge
