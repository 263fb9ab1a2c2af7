#include "bridge/tail.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <librdkafka/rdkafka.h>

#include <memory>
#include <set>

namespace bridge {

namespace {

struct rk_deleter {
    void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};

} // namespace

int run_tail(tail_options const& options, std::ostream& out, std::ostream& err) {
    char errstr[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", options.brokers.c_str(), errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", "couch-kafka-bridge-tail", errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        err << "tail: " << errstr << '\n';
        return 1;
    }
    std::unique_ptr<rd_kafka_t, rk_deleter> rk(rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        err << "tail: " << errstr << '\n';
        return 1;
    }
    // Partitions are assigned explicitly (no group coordination needed) once
    // each topic exists.
    std::set<std::string> assigned;
    auto* assignment = rd_kafka_topic_partition_list_new(8);
    std::size_t printed = 0;
    auto last_progress = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - last_progress < options.timeout) {
        if (assigned.size() < options.topics.size()) {
            bool changed = false;
            for (auto const& topic : options.topics) {
                if (assigned.count(topic)) {
                    continue;
                }
                rd_kafka_topic_t* t = rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr);
                const rd_kafka_metadata_t* md = nullptr;
                if (rd_kafka_metadata(rk.get(), 0, t, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
                    md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0) {
                    for (int p = 0; p < md->topics[0].partition_cnt; ++p) {
                        rd_kafka_topic_partition_list_add(assignment, topic.c_str(), p)->offset =
                            RD_KAFKA_OFFSET_BEGINNING;
                    }
                    assigned.insert(topic);
                    changed = true;
                }
                if (md) {
                    rd_kafka_metadata_destroy(md);
                }
                rd_kafka_topic_destroy(t);
            }
            if (changed) {
                rd_kafka_assign(rk.get(), assignment);
            }
        }
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 200);
        if (!m) {
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            err << "tail: " << rd_kafka_message_errstr(m) << '\n';
            rd_kafka_message_destroy(m);
            continue;
        }
        boost::json::object line;
        line["topic"] = rd_kafka_topic_name(m->rkt);
        line["partition"] = m->partition;
        line["offset"] = m->offset;
        line["key"] = m->key ? std::string(static_cast<char const*>(m->key), m->key_len) : std::string();
        boost::json::object headers;
        rd_kafka_headers_t* hdrs = nullptr;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            const char* name = nullptr;
            const void* val = nullptr;
            size_t size = 0;
            for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
                headers[name] = std::string(static_cast<char const*>(val), size);
            }
        }
        line["headers"] = std::move(headers);
        std::string value(static_cast<char const*>(m->payload), m->len);
        boost::system::error_code ec;
        auto parsed = boost::json::parse(value, ec);
        line["value"] = ec ? boost::json::value(value) : parsed;
        rd_kafka_message_destroy(m);
        out << boost::json::serialize(line) << '\n' << std::flush;
        last_progress = std::chrono::steady_clock::now();
        if (options.max_records != 0 && ++printed >= options.max_records) {
            break;
        }
    }
    rd_kafka_topic_partition_list_destroy(assignment);
    rd_kafka_consumer_close(rk.get());
    if (options.max_records != 0 && printed < options.max_records) {
        err << "tail: " << printed << " of " << options.max_records << " records within the timeout\n";
        return 1;
    }
    return 0;
}

} // namespace bridge
