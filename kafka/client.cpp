#include "kafka/client.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string_view>

namespace kafka::detail {

namespace {

bool producer_only(std::string_view name) {
    static constexpr std::array<std::string_view, 16> names{
        "acks", "request.required.acks", "enable.idempotence", "compression.type", "compression.codec",
        "linger.ms", "queue.buffering.max.ms", "queue.buffering.max.messages", "queue.buffering.max.kbytes",
        "batch.num.messages", "batch.size", "partitioner", "transactional.id", "transaction.timeout.ms",
        "message.timeout.ms", "retries"};
    return std::find(names.begin(), names.end(), name) != names.end();
}

} // namespace

void set_property(rd_kafka_conf_t* conf, std::string const& name, std::string const& value) {
    char errstr[512] = {};
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        throw std::invalid_argument("kafka property '" + name + "': " + errstr);
    }
}

rd_kafka_t* make_client(rd_kafka_type_t type, std::string const& bootstrap_servers,
                        std::vector<std::pair<std::string, std::string>> const& settings,
                        std::vector<std::pair<std::string, std::string>> const& properties, void* opaque,
                        void (*rebalance_cb)(rd_kafka_t*, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t*,
                                             void*),
                        int (*stats_cb)(rd_kafka_t*, char*, size_t, void*)) {
    char errstr[512] = {};
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](std::string const& name, std::string const& value) { set_property(conf, name, value); };
    set("bootstrap.servers", bootstrap_servers);
    for (auto const& [name, value] : settings) {
        set(name, value);
    }
    for (auto const& [name, value] : properties) {
        if (type == RD_KAFKA_PRODUCER || !producer_only(name)) {
            set(name, value);
        }
    }
    if (opaque != nullptr) {
        rd_kafka_conf_set_opaque(conf, opaque);
    }
    if (rebalance_cb != nullptr) {
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    }
    if (stats_cb != nullptr) {
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
    }
    rd_kafka_conf_set_log_cb(conf, &log_to_spdlog);
    rd_kafka_t* rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    if (rk == nullptr) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(std::string("kafka client configuration refused: ") + errstr);
    }
    return rk;
}

void log_to_spdlog(rd_kafka_t const* rk, int level, char const* fac, char const* buf) {
    // syslog levels, as librdkafka uses them.
    auto lvl = level <= 2   ? spdlog::level::critical
               : level == 3 ? spdlog::level::err
               : level == 4 ? spdlog::level::warn
               : level <= 6 ? spdlog::level::info
                            : spdlog::level::debug;
    spdlog::log(lvl, "kafka: {} [{}] {}", rd_kafka_name(rk), fac, buf);
}

stored_record stored_from(rd_kafka_message_t const* m) {
    stored_record r;
    r.partition = m->partition;
    r.offset = m->offset;
    if (m->key != nullptr) {
        r.key.assign(static_cast<char const*>(m->key), m->key_len);
    }
    if (m->payload != nullptr) {
        r.value.emplace(static_cast<char const*>(m->payload), m->len);
    }
    return r;
}

} // namespace kafka::detail
