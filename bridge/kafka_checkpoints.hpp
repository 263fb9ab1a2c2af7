#pragma once

#include "bridge/config.hpp"

#include <memory>
#include <string>
#include <vector>

namespace checkpoint {
class kafka_store;
class store;
} // namespace checkpoint
namespace kafka {
class producer;
class embedded_cluster;
} // namespace kafka

namespace bridge {

// The transactional.id of --delivery exactly-once: --transactional-id, else
// "couch-kafka-bridge-" + the source name (so two bridges of one source
// fence each other, and bridges of different sources do not).
std::string transactional_id(config const& cfg, std::string const& source);

// Startup of --checkpoint-store kafka, in this order:
//   1. the checkpoint topic is created when missing (compacted, 1 partition;
//      on the embedded cluster through its mock API);
//   2. with a transactional producer: init_transactions, which fences an
//      earlier instance with the same id and aborts its open transaction
//      (so that reading the topic read_committed is not held up by it), and
//      the first begin_transaction;
//   3. the topic is read to its end;
//   4. with --checkpoint-migrate: every position of `local` (RocksDB) that
//      the topic does not know yet is written to it (in a transaction of its
//      own with exactly-once).
// Throws std::runtime_error (or checkpoint::store_error) with an operator
// message. `transactions_begun`: step 2 is done (an earlier attempt got that
// far before it failed); set once it is.
std::unique_ptr<checkpoint::kafka_store> open_kafka_checkpoints(config const& cfg, kafka::producer& producer,
                                                                kafka::embedded_cluster* embedded,
                                                                std::string const& bootstrap_servers,
                                                                checkpoint::store& local, bool& transactions_begun);

// The consumer group whose members mark the bridges that use the checkpoint
// topic (see kafka::presence): `checkpoints set|delete` refuse while it has
// members.
std::string checkpoint_owner_group(config const& cfg);

// `checkpoints list|set|delete` on the Kafka store (--checkpoint-store
// kafka): the same commands and exit codes as on RocksDB; set and delete
// refuse (exit 1) while a bridge of that topic runs.
int run_kafka_checkpoints_command(config const& cfg, std::vector<std::string> const& args);

} // namespace bridge
