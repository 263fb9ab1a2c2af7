#include "kafka/presence.hpp"

#include "kafka/client.hpp"

#include <librdkafka/rdkafka.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <stdexcept>
#include <thread>

namespace kafka {


struct presence::impl {
    rd_kafka_t* rk = nullptr;
    std::atomic<bool> stop{false};
    std::thread loop;
};

presence::presence(presence_config config) : impl_(std::make_unique<impl>()) {
    impl_->rk = detail::make_client(RD_KAFKA_CONSUMER, config.bootstrap_servers,
                                    {{"group.id", config.group},
                                     {"enable.auto.commit", "false"},
                                     {"session.timeout.ms", "10000"}},
                                    config.properties);
    rd_kafka_poll_set_consumer(impl_->rk);
    rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, config.topic.c_str(), RD_KAFKA_PARTITION_UA);
    auto err = rd_kafka_subscribe(impl_->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(impl_->rk);
        throw std::runtime_error(std::string("cannot join consumer group ") + config.group + ": " +
                                 rd_kafka_err2str(err));
    }
    impl_->loop = std::thread([self = impl_.get()] {
        bool paused = false;
        while (!self->stop.load()) {
            if (rd_kafka_message_t* m = rd_kafka_consumer_poll(self->rk, 200)) {
                rd_kafka_message_destroy(m);
            }
            if (!paused) {
                rd_kafka_topic_partition_list_t* assigned = nullptr;
                if (rd_kafka_assignment(self->rk, &assigned) == RD_KAFKA_RESP_ERR_NO_ERROR && assigned != nullptr) {
                    if (assigned->cnt > 0) {
                        rd_kafka_pause_partitions(self->rk, assigned);
                        paused = true;
                    }
                    rd_kafka_topic_partition_list_destroy(assigned);
                }
            }
        }
    });
}

presence::~presence() {
    impl_->stop.store(true);
    impl_->loop.join();
    rd_kafka_consumer_close(impl_->rk);
    rd_kafka_destroy(impl_->rk);
}

bool group_has_members(std::string const& bootstrap_servers,
                       std::vector<std::pair<std::string, std::string>> const& properties, std::string const& group,
                       std::chrono::milliseconds timeout) {
    rd_kafka_t* rk = detail::make_client(RD_KAFKA_PRODUCER, bootstrap_servers, {}, properties);
    rd_kafka_group_list const* list = nullptr;
    auto err = rd_kafka_list_groups(rk, group.c_str(), &list, static_cast<int>(timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(rk);
        throw std::runtime_error(std::string("cannot describe consumer group ") + group + ": " + rd_kafka_err2str(err));
    }
    bool members = false;
    for (int i = 0; i < list->group_cnt; ++i) {
        if (list->groups[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && list->groups[i].member_cnt > 0) {
            members = true;
        }
    }
    rd_kafka_group_list_destroy(list);
    rd_kafka_destroy(rk);
    return members;
}

} // namespace kafka
