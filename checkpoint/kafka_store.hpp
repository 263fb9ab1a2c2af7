#pragma once

#include "checkpoint/store.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kafka {
class producer;
struct record;
} // namespace kafka

namespace checkpoint {

// Encoding of a position as a record of the checkpoint topic. Exposed for
// tests and tools.
//
// Key: the JSON array ["<source>","<database>"] (compaction keeps the latest
// record per key; a null value, a tombstone, forgets the database).
// Value: {"seq_json": "<the seq's JSON text>", "written_unix_ms": N,
// "bridge_version": "...", "shard_uuids": ["..."]}: the seq held as the
// string of its JSON text stays byte-exact; shard_uuids (CouchDB 2/3: the
// uuid prefix of each shard, telling the incarnation) is left out when not
// known.
std::string encode_record_key(key const& k);
// nullopt for a key that is not such an array.
std::optional<key> decode_record_key(std::string_view raw);
std::string encode_record_value(position const& p, std::vector<std::string> const& shard_uuids);
// Throws std::invalid_argument saying what is wrong.
position decode_record_value(std::string_view raw);

struct kafka_store_options {
    std::string topic = "couch-bridge-checkpoints";
    // How long startup may take to read the topic to its end, and a write
    // to be acknowledged. A read waits for a transaction left open in the
    // topic (a crashed exactly-once writer's) until the broker aborts it:
    // librdkafka's transaction.timeout.ms (60 s) plus the broker's 10 s
    // cleanup interval, hence more than 70 s.
    std::chrono::milliseconds timeout{90000};
    // Shard uuids of a seq (for the record value); empty function: none.
    std::function<std::vector<std::string>(std::string_view seq_json)> shard_uuids;
};

// What loading the topic found.
struct load_report {
    std::size_t records = 0;    // records read (positions and tombstones)
    std::size_t tombstones = 0;
    std::size_t skipped = 0;    // corrupt or foreign records, each logged with its offset
};

// Positions kept in a compacted Kafka topic (--checkpoint-store kafka).
//
// open() reads the whole topic (read_committed: records of aborted or open
// transactions are invisible) into memory; get() and list() answer from it.
// write() and erase() produce records through `producer` and wait for their
// acknowledgement (acks=all, idempotent): durable when they return success.
// With exactly-once, the bridge instead produces the records inside its
// transaction (make_record) and calls committed() once that transaction
// committed.
//
// Thread safety: all member functions are thread-safe. write() and erase()
// block up to the timeout: never call them on a thread that the producer's
// delivery reports need (the store's completions run on their own threads).
class kafka_store final : public positions {
public:
    // Reads `topic` (which must exist: see ensure_checkpoint_topic) to its
    // end. Throws store_error (io) naming the topic and the reason when it
    // cannot be read; a corrupt or foreign record is skipped with a warning.
    static std::unique_ptr<kafka_store> open(kafka::producer& producer, std::string const& bootstrap_servers,
                                             std::vector<std::pair<std::string, std::string>> const& properties,
                                             kafka_store_options options);

    std::optional<position> get(key const& k) const override;
    std::vector<std::pair<key, position>> list() const override;
    boost::system::error_code write(std::vector<std::pair<key, position>> const& entries) override;
    boost::system::error_code erase(key const& k) override;
    std::string where() const override { return "checkpoint topic " + options_.topic; }
    std::string last_error_detail() const override;

    // Reads the topic again to its end and replaces what get() and list()
    // answer (group mode: positions another instance wrote). Throws like
    // open(); the old positions stay on failure.
    void reload();

    // Shutdown: no write waits for its acknowledgement past `deadline` (one
    // under way included); later ones fail at once. The records are still
    // in the producer's queue, but the positions stay dirty in the flusher.
    void stop_by(std::chrono::steady_clock::time_point deadline);

    load_report loaded() const;
    std::string const& topic() const noexcept { return options_.topic; }

    // The record that stores `p` for `k` (exactly-once: produced inside the
    // bridge's transaction).
    kafka::record make_record(key const& k, position const& p) const;
    // Tells the store that these entries are durable (their transaction
    // committed), so that get() and list() return them.
    void committed(std::vector<std::pair<key, position>> const& entries);

private:
    kafka_store(kafka::producer& producer, kafka_store_options options);
    // Produces `records` and waits for every acknowledgement.
    boost::system::error_code produce_and_wait(std::vector<kafka::record> const& records);

    // Reads the whole topic into `out` (see open()).
    load_report read_all(std::map<key, position>& out) const;

    kafka::producer& producer_;
    kafka_store_options options_;
    std::string bootstrap_servers_;
    std::vector<std::pair<std::string, std::string>> properties_;
    load_report report_;
    mutable std::mutex mutex_;
    std::map<key, position> positions_;
    std::string last_error_;
    // steady_clock ticks of stop_by's deadline (max: none).
    std::atomic<std::chrono::steady_clock::rep> stop_by_{
        std::chrono::steady_clock::time_point::max().time_since_epoch().count()};
};

// Creates the checkpoint topic when it is missing: 1 partition,
// cleanup.policy=compact, `replication` (-1: the broker's default). Throws
// std::runtime_error with the reason.
void ensure_checkpoint_topic(kafka::producer& producer, std::string const& topic, int replication);

} // namespace checkpoint
