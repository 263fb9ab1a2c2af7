#pragma once

// Helpers for the kafka tests: run an io_context until a condition holds, and
// read a topic back with a plain librdkafka consumer (independent of the
// producer under test).

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace kafka_test {

// Runs `ioc` on `threads` threads until something calls ioc.stop() (handlers
// do when they saw what they waited for) or `safety_net` elapses. Returns
// false when the safety net fired. The io_context is restarted afterwards so
// it can be run again.
inline bool run_until_stopped(boost::asio::io_context& ioc, int threads,
                              std::chrono::seconds safety_net = std::chrono::seconds(120)) {
    std::atomic<bool> timed_out{false};
    boost::asio::steady_timer timer(ioc, safety_net);
    timer.async_wait([&](boost::system::error_code ec) {
        if (!ec) {
            timed_out = true;
            ioc.stop();
        }
    });
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) {
        pool.emplace_back([&] { ioc.run(); });
    }
    ioc.run();
    for (auto& t : pool) {
        t.join();
    }
    timer.cancel();
    ioc.restart();
    ioc.poll(); // lets the cancelled timer's handler go while `timed_out` lives
    ioc.restart();
    return !timed_out;
}

struct consumed {
    std::int32_t partition = -1;
    std::int64_t offset = -1;
    std::string key;
    std::string value;
    std::vector<std::pair<std::string, std::string>> headers;
};

// Reads `expected` messages of `topic` (partitions 0..partitions-1, from the
// beginning) or until `timeout`; throws std::runtime_error on client errors.
inline std::vector<consumed> consume(std::string const& bootstrap, std::string const& topic, int partitions,
                                     std::size_t expected,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    char errstr[512] = {};
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](char const* k, std::string const& v) {
        if (rd_kafka_conf_set(conf, k, v.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
            throw std::runtime_error(errstr);
        }
    };
    set("bootstrap.servers", bootstrap);
    set("group.id", "ckb-test-reader-" + topic);
    set("enable.auto.commit", "false");
    set("enable.partition.eof", "false");
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (rk == nullptr) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(errstr);
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p) {
        rd_kafka_topic_partition_list_add(parts, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);

    std::vector<consumed> out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.size() < expected && std::chrono::steady_clock::now() < deadline) {
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 200);
        if (m == nullptr) {
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            consumed c;
            c.partition = m->partition;
            c.offset = m->offset;
            if (m->key != nullptr) {
                c.key.assign(static_cast<char const*>(m->key), m->key_len);
            }
            if (m->payload != nullptr) {
                c.value.assign(static_cast<char const*>(m->payload), m->len);
            }
            rd_kafka_headers_t* hdrs = nullptr;
            if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                char const* name = nullptr;
                void const* val = nullptr;
                size_t size = 0;
                for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
                     ++i) {
                    c.headers.emplace_back(name, std::string(static_cast<char const*>(val), size));
                }
            }
            out.push_back(std::move(c));
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

// The value of one sample in the registry's exposition text, e.g.
// sample(text, "couch_bridge_kafka_produced_total{topic=\"t\"}"); -1 if absent.
inline double sample(std::string const& exposition, std::string const& series) {
    std::size_t pos = 0;
    while ((pos = exposition.find(series + " ", pos)) != std::string::npos) {
        if (pos == 0 || exposition[pos - 1] == '\n') {
            return std::stod(exposition.substr(pos + series.size() + 1));
        }
        pos += series.size();
    }
    return -1;
}

} // namespace kafka_test
