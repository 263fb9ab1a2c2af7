#include "kafka/topic_reader.hpp"

#include "kafka/client.hpp"

#include <librdkafka/rdkafka.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <memory>
#include <set>
#include <stdexcept>
#include <string_view>

namespace kafka {

namespace {

struct handle_deleter {
    void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
struct list_deleter {
    void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
struct metadata_deleter {
    void operator()(rd_kafka_metadata_t const* md) const { rd_kafka_metadata_destroy(md); }
};
struct message_deleter {
    void operator()(rd_kafka_message_t* m) const { rd_kafka_message_destroy(m); }
};

std::unique_ptr<rd_kafka_t, handle_deleter> make_consumer(topic_reader_config const& config,
                                                          char const* isolation = "read_committed") {
    // assign() needs no group; librdkafka still wants an id for its state.
    return std::unique_ptr<rd_kafka_t, handle_deleter>(detail::make_client(
        RD_KAFKA_CONSUMER, config.bootstrap_servers,
        {{"isolation.level", isolation},
         {"enable.partition.eof", "true"},
         {"enable.auto.commit", "false"},
         {"auto.offset.reset", "earliest"},
         {"group.id", "couch-kafka-bridge-reader"}},
        config.properties));
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<std::int64_t>(0, left.count()));
}

} // namespace

void read_topic(topic_reader_config const& config, std::string const& topic,
                std::function<void(stored_record&&)> const& each, std::chrono::milliseconds timeout) {
    auto const deadline = std::chrono::steady_clock::now() + timeout;
    auto rk = make_consumer(config);

    // The partitions of the topic, from the metadata (which must show it).
    int partitions = 0;
    {
        rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr);
        rd_kafka_metadata_t const* raw = nullptr;
        auto err = rd_kafka_metadata(rk.get(), 0, rkt, &raw, remaining_ms(deadline));
        rd_kafka_topic_destroy(rkt);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            throw std::runtime_error("cannot read topic '" + topic + "': metadata request failed: " +
                                     rd_kafka_err2str(err));
        }
        std::unique_ptr<rd_kafka_metadata_t const, metadata_deleter> md(raw);
        if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            auto e = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
            throw std::runtime_error("cannot read topic '" + topic + "': " + rd_kafka_err2str(e));
        }
        partitions = md->topics[0].partition_cnt;
    }

    std::unique_ptr<rd_kafka_topic_partition_list_t, list_deleter> assignment(
        rd_kafka_topic_partition_list_new(partitions));
    for (int p = 0; p < partitions; ++p) {
        rd_kafka_topic_partition_list_add(assignment.get(), topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    if (auto err = rd_kafka_assign(rk.get(), assignment.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw std::runtime_error("cannot read topic '" + topic + "': " + rd_kafka_err2str(err));
    }

    // The end: a partition is done when the position reaches its high
    // watermark as it was at the start (the position steps over transaction
    // markers, which are never returned). The watermark is the log's true end,
    // asked of a read_uncommitted handle: a read_committed one would answer
    // the last stable offset, and so would its EOF, both stuck below a
    // transaction still open. Stopping there would hide every record
    // committed after it, by anyone: a new owner would resume from older
    // checkpoints. So a transaction open at the start is waited for (it ends
    // by a commit, an abort, a fencing init_transactions, or the broker's
    // transaction timeout). And while others keep writing an EOF may never
    // come, hence the fixed target.
    std::set<int> open;
    std::vector<std::int64_t> target(static_cast<std::size_t>(partitions), 0);
    {
        auto probe = make_consumer(config, "read_uncommitted");
        for (int p = 0; p < partitions; ++p) {
            std::int64_t lo = 0, hi = 0;
            auto err =
                rd_kafka_query_watermark_offsets(probe.get(), topic.c_str(), p, &lo, &hi, remaining_ms(deadline));
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                throw std::runtime_error("cannot read topic '" + topic + "': watermark query failed: " +
                                         rd_kafka_err2str(err));
            }
            target[static_cast<std::size_t>(p)] = hi;
            if (hi > lo) {
                open.insert(p);
            }
        }
    }
    auto const started = std::chrono::steady_clock::now();
    bool said_waiting = false;
    auto reached = [&](int p) {
        std::unique_ptr<rd_kafka_topic_partition_list_t, list_deleter> pos(rd_kafka_topic_partition_list_new(1));
        rd_kafka_topic_partition_list_add(pos.get(), topic.c_str(), p);
        if (rd_kafka_position(rk.get(), pos.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            return false;
        }
        auto const off = pos->elems[0].offset;
        return off >= 0 && off >= target[static_cast<std::size_t>(p)];
    };
    while (!open.empty()) {
        int const left = remaining_ms(deadline);
        if (left == 0) {
            rd_kafka_assign(rk.get(), nullptr);
            throw std::runtime_error("cannot read topic '" + topic + "' to its end within " +
                                     std::to_string(timeout.count()) + " ms (" + std::to_string(open.size()) +
                                     " partition(s) unfinished): are the brokers reachable, or is a transaction "
                                     "left open there?");
        }
        std::unique_ptr<rd_kafka_message_t, message_deleter> m(rd_kafka_consumer_poll(rk.get(), std::min(left, 100)));
        for (auto it = open.begin(); it != open.end();) {
            it = reached(*it) ? open.erase(it) : std::next(it);
        }
        if (!m) {
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            // Below the target: the last stable offset, held by a transaction
            // still open. Wait for it, and say so once it takes a while.
            if (open.contains(m->partition) && !said_waiting &&
                std::chrono::steady_clock::now() - started > std::chrono::seconds(2)) {
                said_waiting = true;
                spdlog::warn("reading topic {}: partition {} is readable up to offset {} of {}: waiting for a "
                             "transaction still open there to end (a commit, an abort, or the broker's "
                             "transaction timeout)",
                             topic, m->partition, m->offset, target[static_cast<std::size_t>(m->partition)]);
            }
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            // Transport errors are retried by librdkafka; anything about the
            // topic itself is final.
            if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
                rd_kafka_assign(rk.get(), nullptr);
                throw std::runtime_error("cannot read topic '" + topic + "': " + rd_kafka_message_errstr(m.get()));
            }
            spdlog::debug("reading topic {}: {}", topic, rd_kafka_message_errstr(m.get()));
            continue;
        }
        if (m->offset >= target[static_cast<std::size_t>(m->partition)]) {
            continue; // written after the start: not part of this read
        }
        each(detail::stored_from(m.get()));
    }
    rd_kafka_assign(rk.get(), nullptr);
    rd_kafka_consumer_close(rk.get());
}

} // namespace kafka
