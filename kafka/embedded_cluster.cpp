#include "kafka/embedded_cluster.hpp"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <spdlog/spdlog.h>

#include <stdexcept>

namespace kafka {

namespace {

// The hosting handle has no bootstrap servers by design, so librdkafka's
// configuration warnings about it are noise: its lines go to debug.
void quiet_log_cb(rd_kafka_t const* rk, int level, char const* fac, char const* buf) {
    spdlog::log(level <= 3 ? spdlog::level::err : spdlog::level::debug, "kafka: {} [{}] {}", rd_kafka_name(rk), fac, buf);
}

} // namespace

embedded_cluster::embedded_cluster(int brokers) {
    if (brokers < 1) {
        throw std::invalid_argument("embedded kafka cluster: broker count must be at least 1, got " +
                                    std::to_string(brokers));
    }
    char errstr[512] = {};
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    // The handle only hosts the cluster; it never produces. Naming it makes its
    // log lines recognisable.
    if (rd_kafka_conf_set(conf, "client.id", "ckb-embedded-cluster", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(std::string("embedded kafka cluster: ") + errstr);
    }
    rd_kafka_conf_set_log_cb(conf, &quiet_log_cb);
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk_ == nullptr) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(std::string("embedded kafka cluster: cannot create its librdkafka handle: ") + errstr);
    }
    mock_ = rd_kafka_mock_cluster_new(rk_, brokers);
    if (mock_ == nullptr) {
        rd_kafka_destroy(rk_);
        throw std::runtime_error("embedded kafka cluster: rd_kafka_mock_cluster_new failed");
    }
    spdlog::info("embedded kafka cluster: {} broker(s) at {}", brokers, bootstrap_servers());
}

embedded_cluster::~embedded_cluster() {
    rd_kafka_mock_cluster_destroy(mock_);
    rd_kafka_destroy(rk_);
}

std::string embedded_cluster::bootstrap_servers() const { return rd_kafka_mock_cluster_bootstraps(mock_); }

void embedded_cluster::create_topic(std::string const& topic, int partitions) {
    auto err = rd_kafka_mock_topic_create(mock_, topic.c_str(), partitions, 1);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        throw std::runtime_error("embedded kafka cluster: cannot create topic '" + topic + "': " +
                                 rd_kafka_err2str(err));
    }
}

void embedded_cluster::create_topics(std::vector<std::string> const& topics, int partitions) {
    for (auto const& t : topics) {
        create_topic(t, partitions);
    }
}

} // namespace kafka
