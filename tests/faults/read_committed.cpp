// The fault lab's read_committed consumer for exactly-once runs: prints every
// record of the topics whose name starts with a prefix as one JSON line
// ({"topic", "partition", "offset", "key", "value", "headers"}), read with
// librdkafka's isolation.level=read_committed (its default), which the
// Python checker's kafka-python 2.0.2 cannot do: it reads uncommitted and
// aborted records alike.
//
//   ckb-read-committed BROKERS PREFIX
#include "tests/support/kafka_consume.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <librdkafka/rdkafka.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace {

std::vector<std::string> topics_with_prefix(std::string const& brokers, std::string const& prefix) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err);
    std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> rk(rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err),
                                                          rd_kafka_destroy);
    if (!rk) {
        throw std::runtime_error(err);
    }
    rd_kafka_metadata_t const* md = nullptr;
    if (auto e = rd_kafka_metadata(rk.get(), 1, nullptr, &md, 60000); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw std::runtime_error(std::string("metadata: ") + rd_kafka_err2str(e));
    }
    std::vector<std::string> out;
    for (int i = 0; i < md->topic_cnt; ++i) {
        std::string name = md->topics[i].topic;
        if (name.rfind(prefix, 0) == 0) {
            out.push_back(name);
        }
    }
    rd_kafka_metadata_destroy(md);
    return out;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: ckb-read-committed BROKERS PREFIX\n";
        return 2;
    }
    try {
        auto topics = topics_with_prefix(argv[1], argv[2]);
        for (auto const& r : test_support::consume_all(argv[1], topics, std::chrono::seconds(300))) {
            boost::json::object headers;
            for (auto const& [k, v] : r.headers) {
                headers[k] = v;
            }
            boost::json::object line{{"topic", r.topic},     {"partition", r.partition}, {"offset", r.offset},
                                     {"key", r.key},         {"value", r.value},         {"headers", headers}};
            std::cout << boost::json::serialize(line) << '\n';
        }
    } catch (std::exception const& e) {
        std::cerr << "ckb-read-committed: " << e.what() << '\n';
        return 1;
    }
    return 0;
}
