// The producer's administrative calls: topics and the cluster's identity.
// They share the producer's librdkafka instance (a second client would cost
// another set of connections) but none of its delivery machinery.
#include "kafka/producer.hpp"
#include "kafka/producer_impl.hpp"

#include "kafka/error.hpp"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <stdexcept>

namespace kafka {

using detail::to_timeout_ms;

namespace {
// rd_kafka_clusterid's string is freed with rd_kafka_mem_free.
void rd_kafka_mem_free_id(char* p) { rd_kafka_mem_free(nullptr, p); }
} // namespace

std::string producer::cluster_id(std::chrono::milliseconds timeout) {
    std::shared_lock lock(impl_->rk_mutex_);
    if (impl_->rk_ == nullptr) {
        return {};
    }
    std::unique_ptr<char, decltype(&rd_kafka_mem_free_id)> id(rd_kafka_clusterid(impl_->rk_, to_timeout_ms(timeout)),
                                                              &rd_kafka_mem_free_id);
    return id ? std::string(id.get()) : std::string();
}

boost::system::error_code producer::create_topics(std::vector<std::string> const& topics, int partitions,
                                                  int replication, std::chrono::milliseconds timeout,
                                                  std::vector<std::pair<std::string, std::string>> const& topic_config) {
    if (topics.empty()) {
        return {};
    }
    char errstr[512] = {};
    std::vector<rd_kafka_NewTopic_t*> new_topics;
    auto free_topics = [&] { rd_kafka_NewTopic_destroy_array(new_topics.data(), new_topics.size()); };
    for (auto const& name : topics) {
        auto* nt = rd_kafka_NewTopic_new(name.c_str(), partitions, replication, errstr, sizeof errstr);
        if (nt == nullptr) {
            spdlog::error("kafka: cannot create topic '{}': {}", name, errstr);
            free_topics();
            return make_error_code(RD_KAFKA_RESP_ERR__INVALID_ARG);
        }
        new_topics.push_back(nt);
        for (auto const& [name_, value] : topic_config) {
            rd_kafka_NewTopic_set_config(nt, name_.c_str(), value.c_str());
        }
    }
    std::shared_lock lock(impl_->rk_mutex_);
    if (impl_->rk_ == nullptr) {
        free_topics();
        return make_error_code(RD_KAFKA_RESP_ERR__DESTROY);
    }
    rd_kafka_t* rk = impl_->rk_;
    rd_kafka_AdminOptions_t* opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, to_timeout_ms(timeout), errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_operation_timeout(opts, to_timeout_ms(timeout), errstr, sizeof errstr);
    rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, new_topics.data(), new_topics.size(), opts, q);
    // The request times out on its own; the slack only covers librdkafka
    // getting the result event to us.
    rd_kafka_event_t* ev = rd_kafka_queue_poll(q, to_timeout_ms(timeout) + 5000);
    boost::system::error_code result;
    if (ev == nullptr) {
        spdlog::error("kafka: topic creation timed out");
        result = make_error_code(RD_KAFKA_RESP_ERR__TIMED_OUT);
    } else if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        spdlog::error("kafka: topic creation failed: {}", rd_kafka_event_error_string(ev));
        result = make_error_code(rd_kafka_event_error(ev));
    } else {
        size_t n = 0;
        auto const* res = rd_kafka_event_CreateTopics_result(ev);
        rd_kafka_topic_result_t const** results = rd_kafka_CreateTopics_result_topics(res, &n);
        for (size_t i = 0; i < n; ++i) {
            auto err = rd_kafka_topic_result_error(results[i]);
            char const* name = rd_kafka_topic_result_name(results[i]);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                spdlog::info("kafka: created topic '{}' ({} partitions)", name, partitions);
            } else if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                spdlog::info("kafka: topic '{}' exists already", name);
            } else {
                char const* why = rd_kafka_topic_result_error_string(results[i]);
                spdlog::error("kafka: cannot create topic '{}': {}", name, why != nullptr ? why : rd_kafka_err2str(err));
                if (!result) {
                    result = make_error_code(err);
                }
            }
        }
    }
    if (ev != nullptr) {
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(opts);
    free_topics();
    return result;
}

std::vector<std::string> producer::missing_topics(std::vector<std::string> const& topics,
                                                  std::chrono::milliseconds timeout) {
    std::set<std::string, std::less<>> existing;
    {
        std::shared_lock lock(impl_->rk_mutex_);
        if (impl_->rk_ == nullptr) {
            throw std::runtime_error("kafka metadata request: producer is shut down");
        }
        rd_kafka_metadata_t const* md = nullptr;
        // all_topics=1: listing topics never triggers auto-creation, unlike
        // asking for the named ones.
        auto err = rd_kafka_metadata(impl_->rk_, 1, nullptr, &md, to_timeout_ms(timeout));
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            throw std::runtime_error(std::string("kafka metadata request failed: ") + rd_kafka_err2str(err));
        }
        for (int i = 0; i < md->topic_cnt; ++i) {
            if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                existing.emplace(md->topics[i].topic);
            }
        }
        rd_kafka_metadata_destroy(md);
    }
    std::vector<std::string> missing;
    for (auto const& t : topics) {
        if (!existing.contains(t)) {
            missing.push_back(t);
        }
    }
    return missing;
}

} // namespace kafka
