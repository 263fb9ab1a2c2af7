#pragma once

#include <string>
#include <vector>

// librdkafka's C types, forward-declared so that this header stays light.
// Include <librdkafka/rdkafka_mock.h> where the mock API is used.
struct rd_kafka_s;
struct rd_kafka_mock_cluster_s;
using rd_kafka_mock_cluster_t = rd_kafka_mock_cluster_s;

namespace kafka {

// librdkafka's in-process mock Kafka cluster: `brokers` brokers (ids 1..N)
// listening on loopback ports, speaking enough of the protocol for
// producers (idempotent too), consumers and metadata. Used for
// `--kafka-brokers=embedded` and as the fault injector in tests (broker
// down, per-request errors, RTT) through mock().
//
// Caveats: it does not implement the CreateTopics admin API (use
// create_topic()), and it does not deduplicate idempotent producers.
//
// Lifetime: the cluster lives inside its own librdkafka handle, owned here;
// the destructor stops the brokers and frees the handle. Clients connected
// to it should be destroyed first (they would only see disconnects, but their
// outstanding messages would then fail). Not copyable or movable.
// Thread safety: the const accessors and the mock API are thread-safe.
class embedded_cluster {
public:
    // Throws std::runtime_error when librdkafka cannot create the cluster.
    explicit embedded_cluster(int brokers = 1);
    ~embedded_cluster();

    embedded_cluster(embedded_cluster const&) = delete;
    embedded_cluster& operator=(embedded_cluster const&) = delete;

    // "127.0.0.1:port,..." for bootstrap.servers.
    std::string bootstrap_servers() const;

    // The mock handle for rd_kafka_mock_* fault injection; valid for the
    // lifetime of this object.
    rd_kafka_mock_cluster_t* mock() const { return mock_; }

    // Creates a topic (replication factor 1); one that exists already is
    // left as it is. Throws std::runtime_error with librdkafka's reason on
    // failure.
    void create_topic(std::string const& topic, int partitions);

    // create_topic() for each; what startup calls instead of
    // producer::create_topics() when the brokers are the embedded cluster.
    // A topic that exists already is left as it is.
    void create_topics(std::vector<std::string> const& topics, int partitions);

private:
    rd_kafka_s* rk_ = nullptr;
    rd_kafka_mock_cluster_t* mock_ = nullptr;
};

} // namespace kafka
