#pragma once

// Startup helpers of the bridge process (bridge/app_*.cpp): flag values
// read from files or JSON, the throw-away checkpoint directory of the embedded
// cluster, and the binding of RocksDB checkpoints to one Kafka cluster.

#include "checkpoint/store.hpp"

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace bridge {

// --selector: a JSON object, normalized; "" when not given. Throws
// std::invalid_argument naming the flag.
std::string selector_text(std::string const& s);

// --doc-ids FILE: a JSON array of strings, or one id per line. Throws
// std::invalid_argument naming the file.
std::vector<std::string> read_doc_ids(std::string const& path);

// A checkpoint directory that lives as long as the process: what the
// embedded cluster gets unless a directory is given, because its records
// vanish at exit and positions it acknowledged must never outlive them.
class throwaway_dir {
public:
    // Throws std::runtime_error when the directory cannot be created.
    throwaway_dir();
    ~throwaway_dir();
    throwaway_dir(throwaway_dir const&) = delete;
    throwaway_dir& operator=(throwaway_dir const&) = delete;
    std::string const& path() const noexcept { return path_; }

private:
    std::string path_;
};

// The flusher's writer for RocksDB: records which Kafka cluster the
// positions belong to before the first of them is written (once), and
// refuses to write them while that is not known yet. `verified`: the id
// already checked against the store ("" when it was not). Thread-safe.
class cluster_bound_writer final : public checkpoint::position_writer {
public:
    using cluster_fn = std::function<std::string(std::chrono::milliseconds)>;
    cluster_bound_writer(checkpoint::store& store, cluster_fn cluster_of, std::string const& verified);

    boost::system::error_code write(std::vector<std::pair<checkpoint::key, checkpoint::position>> const& entries) override;
    std::string last_error_detail() const override;

private:
    checkpoint::store& store_;
    cluster_fn cluster_of_;
    mutable std::mutex mutex_;
    bool recorded_;
    std::string detail_;
};

// Checkpoints are only valid for the Kafka cluster that acknowledged them.
// Compares the cluster the store remembers with `cluster` (the one
// connected now) and acts by --kafka-cluster-change `policy` (refuse,
// restart, keep). Returns false (after logging why) when the bridge must not
// start. Throws std::runtime_error when the store cannot be changed.
bool check_kafka_cluster(checkpoint::store& store, std::string const& cluster, std::string const& policy);

} // namespace bridge
