#pragma once

// Building the librdkafka clients of this module other than the producer
// (the checkpoint reader, the group member, the presence mark). Internal:
// include only from kafka/*.cpp.

#include "kafka/topic_reader.hpp"

#include <librdkafka/rdkafka.h>

#include <string>
#include <utility>
#include <vector>

namespace kafka::detail {

// Sets one property on `conf`; when librdkafka refuses it, destroys `conf`
// and throws std::invalid_argument with librdkafka's text, which names the
// property (never its value: it may be a secret, sasl.password).
void set_property(rd_kafka_conf_t* conf, std::string const& name, std::string const& value);

// Settings of a new client, applied in order: bootstrap.servers, `settings`
// (what the client itself needs), then `properties` (the operator's, so they
// win), skipping the properties only a producer knows when `type` is a
// consumer (librdkafka would warn about each). Returns the handle (the
// caller destroys it). Throws std::invalid_argument naming a refused
// property (never its value: it may be a secret), std::runtime_error when
// librdkafka refuses the whole configuration.
rd_kafka_t* make_client(rd_kafka_type_t type, std::string const& bootstrap_servers,
                        std::vector<std::pair<std::string, std::string>> const& settings,
                        std::vector<std::pair<std::string, std::string>> const& properties,
                        void* opaque = nullptr,
                        void (*rebalance_cb)(rd_kafka_t*, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t*,
                                             void*) = nullptr,
                        int (*stats_cb)(rd_kafka_t*, char*, size_t, void*) = nullptr);

// librdkafka's log lines into the process' log (spdlog), at the matching
// level. Every client of this module logs through it.
void log_to_spdlog(rd_kafka_t const* rk, int level, char const* fac, char const* buf);

// A consumed message as a stored_record (key, value or tombstone, offset).
stored_record stored_from(rd_kafka_message_t const* m);

} // namespace kafka::detail
