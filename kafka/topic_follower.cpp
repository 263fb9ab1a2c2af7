#include "kafka/topic_follower.hpp"

#include "kafka/client.hpp"

#include <librdkafka/rdkafka.h>

#include <spdlog/spdlog.h>

#include <stdexcept>

namespace kafka {

struct topic_follower::impl {
    topic_reader_config config;
    std::string topic;
    std::function<void(stored_record&&)> each;
    std::function<void()> caught_up;
    rd_kafka_t* rk = nullptr;
    std::atomic<bool> stop{false};
    std::thread loop;
};

topic_follower::topic_follower(topic_reader_config config, std::string topic,
                               std::function<void(stored_record&&)> each, std::function<void()> caught_up)
    : impl_(std::make_unique<impl>()) {
    impl_->config = std::move(config);
    impl_->topic = std::move(topic);
    impl_->each = std::move(each);
    impl_->caught_up = std::move(caught_up);
}

topic_follower::~topic_follower() {
    impl_->stop.store(true);
    if (impl_->loop.joinable()) {
        impl_->loop.join();
    }
    if (impl_->rk != nullptr) {
        rd_kafka_assign(impl_->rk, nullptr);
        rd_kafka_destroy(impl_->rk);
    }
}

void topic_follower::start(std::chrono::milliseconds timeout) {
    auto& s = *impl_;
    s.rk = detail::make_client(RD_KAFKA_CONSUMER, s.config.bootstrap_servers,
                               {{"enable.auto.commit", "false"},
                                {"enable.partition.eof", "true"},
                                {"auto.offset.reset", "earliest"},
                                {"group.id", "couch-kafka-bridge-follower"}},
                               s.config.properties);
    // A topic created a moment ago may not be known to every broker yet.
    std::int64_t lo = 0, hi = 0;
    auto const deadline = std::chrono::steady_clock::now() + timeout;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (;;) {
        err = rd_kafka_query_watermark_offsets(s.rk, s.topic.c_str(), 0, &lo, &hi, 5000);
        bool const unknown_yet =
            err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION || err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
            err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
            err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION || err == RD_KAFKA_RESP_ERR__TIMED_OUT;
        if (!unknown_yet || std::chrono::steady_clock::now() >= deadline) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw std::runtime_error("cannot follow topic '" + s.topic + "': " + rd_kafka_err2str(err));
    }
    auto* parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, s.topic.c_str(), 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    err = rd_kafka_assign(s.rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw std::runtime_error("cannot follow topic '" + s.topic + "': " + rd_kafka_err2str(err));
    }
    s.loop = std::thread([&s, target = hi, lo] {
        bool done = target <= lo;
        if (done) {
            s.caught_up();
        }
        std::string last_error;
        while (!s.stop.load()) {
            rd_kafka_message_t* m = rd_kafka_consumer_poll(s.rk, 100);
            if (m == nullptr) {
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                rd_kafka_message_destroy(m);
                if (!done) {
                    done = true;
                    s.caught_up();
                }
                continue;
            }
            if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                {
                    std::string why = rd_kafka_message_errstr(m);
                    if (why != last_error) {
                        spdlog::warn("following {}: {} (retrying)", s.topic, why);
                        last_error = why;
                    }
                }
                rd_kafka_message_destroy(m);
                continue;
            }
            last_error.clear();
            auto r = detail::stored_from(m);
            auto const next = m->offset + 1;
            rd_kafka_message_destroy(m);
            s.each(std::move(r));
            if (!done && next >= target) {
                done = true;
                s.caught_up();
            }
        }
    });
}

} // namespace kafka
