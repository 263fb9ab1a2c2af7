#include "tests/support/kafka_consume.hpp"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>

namespace test_support {

namespace {

struct rk_deleter {
    void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using rk_ptr = std::unique_ptr<rd_kafka_t, rk_deleter>;

rk_ptr make_consumer(std::string const& brokers) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char err[512];
    auto set = [&](char const* k, char const* v) {
        if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            throw std::runtime_error(err);
        }
    };
    set("bootstrap.servers", brokers.c_str());
    set("group.id", "ckb-test-reader");
    set("enable.auto.commit", "false");
    // The end of a partition is its EOF: under read_committed (librdkafka's
    // default) that is the last stable offset, and a transaction's commit
    // marker takes an offset no record is returned for.
    set("enable.partition.eof", "true");
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(err);
    }
    return rk_ptr(rk);
}

int partitions_of(rd_kafka_t* rk, std::string const& topic) {
    rd_kafka_topic_t* t = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    const rd_kafka_metadata_t* md = nullptr;
    auto err = rd_kafka_metadata(rk, 0, t, &md, 10000);
    int n = 0;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        n = md->topics[0].partition_cnt;
    }
    if (md) {
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(t);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw std::runtime_error(std::string("metadata request failed: ") + rd_kafka_err2str(err));
    }
    return n;
}

} // namespace

std::string consumed_record::header(std::string const& name) const {
    for (auto const& [k, v] : headers) {
        if (k == name) {
            return v;
        }
    }
    return {};
}

int partition_count(std::string const& brokers, std::string const& topic) {
    auto rk = make_consumer(brokers);
    return partitions_of(rk.get(), topic);
}

std::vector<consumed_record> consume_all(std::string const& brokers, std::vector<std::string> const& topics,
                                         std::chrono::milliseconds timeout) {
    auto rk = make_consumer(brokers);
    auto* assignment = rd_kafka_topic_partition_list_new(16);
    std::map<std::pair<std::string, int>, std::int64_t> high;
    for (auto const& topic : topics) {
        int n = partitions_of(rk.get(), topic);
        for (int p = 0; p < n; ++p) {
            std::int64_t lo = 0;
            std::int64_t hi = 0;
            auto err = rd_kafka_query_watermark_offsets(rk.get(), topic.c_str(), p, &lo, &hi, 10000);
            // A topic auto-created a moment ago may not have its leader yet:
            // retriable, so retry for a while before giving up.
            for (int retry = 0; retry < 50 && (err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
                                               err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                                               err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
                 ++retry) {
                std::this_thread::sleep_for(std::chrono::milliseconds(200));
                err = rd_kafka_query_watermark_offsets(rk.get(), topic.c_str(), p, &lo, &hi, 10000);
            }
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                rd_kafka_topic_partition_list_destroy(assignment);
                throw std::runtime_error(std::string("watermark query failed: ") + rd_kafka_err2str(err));
            }
            if (hi > lo) {
                high[{topic, p}] = hi;
                rd_kafka_topic_partition_list_add(assignment, topic.c_str(), p)->offset = lo;
            }
        }
    }
    std::vector<consumed_record> out;
    if (high.empty()) {
        rd_kafka_topic_partition_list_destroy(assignment);
        return out;
    }
    rd_kafka_assign(rk.get(), assignment);
    rd_kafka_topic_partition_list_destroy(assignment);
    std::map<std::pair<std::string, int>, std::int64_t> next;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    auto done = [&] {
        for (auto const& [tp, hi] : high) {
            auto it = next.find(tp);
            if (it == next.end() || it->second < hi) {
                return false;
            }
        }
        return true;
    };
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) {
            throw std::runtime_error("timed out reading the topics back");
        }
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 200);
        if (!m) {
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            auto tp = std::make_pair(std::string(rd_kafka_topic_name(m->rkt)), static_cast<int>(m->partition));
            if (auto h = high.find(tp); h != high.end()) {
                next[tp] = std::max(next[tp], h->second);
            }
        } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            consumed_record r;
            r.topic = rd_kafka_topic_name(m->rkt);
            r.partition = m->partition;
            r.offset = m->offset;
            if (m->key) {
                r.key.assign(static_cast<char const*>(m->key), m->key_len);
            }
            if (m->payload) {
                r.value.assign(static_cast<char const*>(m->payload), m->len);
            }
            rd_kafka_headers_t* hdrs = nullptr;
            if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                const char* name = nullptr;
                const void* val = nullptr;
                size_t size = 0;
                for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
                     ++i) {
                    r.headers.emplace_back(name, std::string(static_cast<char const*>(val), size));
                }
            }
            next[{r.topic, r.partition}] = std::max(next[{r.topic, r.partition}], r.offset + 1);
            out.push_back(std::move(r));
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk.get());
    return out;
}

} // namespace test_support
