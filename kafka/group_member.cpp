#include "kafka/group_member.hpp"

#include "metrics/registry.hpp"

#include <librdkafka/rdkafka.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

namespace kafka {

struct group_member::impl {
    group_member_config config;
    group_events events;
    rd_kafka_t* rk = nullptr;
    std::atomic<bool> stop{false};
    std::thread loop;
    mutable std::mutex mutex;
    std::set<std::int32_t> owned;
    std::string member;
    std::atomic<std::uint64_t> rebalances{0};
    metrics::counter& rebalance_count;
    metrics::histogram& rebalance_seconds;
    metrics::gauge& partitions_gauge;

    impl(group_member_config c, group_events e, metrics::registry& r)
        : config(std::move(c)),
          events(std::move(e)),
          rebalance_count(r.add_counter("couch_bridge_group_rebalances_total",
                                        "Rebalances of the bridge group this instance took part in")),
          rebalance_seconds(r.add_histogram("couch_bridge_group_rebalance_seconds",
                                            "Time this instance spent handling one rebalance (starting or "
                                            "releasing databases)",
                                            metrics::exponential_buckets(0.001, 2.0, 16))),
          partitions_gauge(r.add_gauge("couch_bridge_group_partitions", "Assignment partitions this instance owns")) {}

    void on_rebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts) {
        auto const started = std::chrono::steady_clock::now();
        if (char* id = rd_kafka_memberid(rk)) {
            std::lock_guard lock(mutex);
            member = id;
            rd_kafka_mem_free(rk, id);
        }
        std::vector<std::int32_t> list;
        for (int i = 0; i < parts->cnt; ++i) {
            list.push_back(parts->elems[i].partition);
        }
        std::sort(list.begin(), list.end());
        bool const cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
            {
                std::lock_guard lock(mutex);
                owned.insert(list.begin(), list.end());
                partitions_gauge.set(static_cast<double>(owned.size()));
            }
            if (!list.empty()) {
                spdlog::info("group {}: assigned {} partition(s) of {}", config.group, list.size(), config.topic);
                events.assigned(list);
            }
            if (cooperative) {
                if (auto* e = rd_kafka_incremental_assign(rk, parts)) {
                    spdlog::error("group {}: incremental assign failed: {}", config.group, rd_kafka_error_string(e));
                    rd_kafka_error_destroy(e);
                }
            } else {
                rd_kafka_assign(rk, parts);
            }
        } else {
            bool const lost = rd_kafka_assignment_lost(rk) != 0;
            if (!list.empty()) {
                spdlog::info("group {}: {} {} partition(s)", config.group, lost ? "lost" : "revoked", list.size());
                events.revoked(list, lost);
            }
            {
                std::lock_guard lock(mutex);
                for (auto p : list) {
                    owned.erase(p);
                }
                partitions_gauge.set(static_cast<double>(owned.size()));
            }
            if (cooperative) {
                if (auto* e = rd_kafka_incremental_unassign(rk, parts)) {
                    rd_kafka_error_destroy(e);
                }
            } else {
                rd_kafka_assign(rk, nullptr);
            }
        }
        rebalances.fetch_add(1);
        rebalance_count.inc();
        rebalance_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
};

namespace {

void rebalance_cb(rd_kafka_t*, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
    static_cast<group_member::impl*>(opaque)->on_rebalance(err, parts);
}

} // namespace

group_member::group_member(group_member_config config, group_events events, metrics::registry& registry)
    : impl_(std::make_unique<impl>(std::move(config), std::move(events), registry)) {
    char errstr[512] = {};
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](std::string const& name, std::string const& value) {
        if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            throw std::invalid_argument("kafka property '" + name + "': " + errstr);
        }
    };
    auto const& c = impl_->config;
    set("bootstrap.servers", c.bootstrap_servers);
    static char const* const producer_only[] = {"linger.ms", "compression.type", "enable.idempotence", "acks",
                                                "partitioner", "transactional.id", "queue.buffering.max.ms",
                                                "queue.buffering.max.messages", "queue.buffering.max.kbytes",
                                                "batch.num.messages", "message.timeout.ms"};
    for (auto const& [name, value] : c.properties) {
        if (std::none_of(std::begin(producer_only), std::end(producer_only),
                         [&](char const* p) { return name == p; })) {
            set(name, value);
        }
    }
    set("group.id", c.group);
    set("partition.assignment.strategy", "cooperative-sticky");
    set("session.timeout.ms", std::to_string(c.session_timeout.count()));
    set("heartbeat.interval.ms", std::to_string(std::max<std::int64_t>(100, c.session_timeout.count() / 5)));
    set("enable.auto.commit", "false");
    rd_kafka_conf_set_opaque(conf, impl_.get());
    rd_kafka_conf_set_rebalance_cb(conf, &rebalance_cb);
    impl_->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (impl_->rk == nullptr) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(std::string("kafka group member configuration refused: ") + errstr);
    }
    rd_kafka_poll_set_consumer(impl_->rk);
    rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, c.topic.c_str(), RD_KAFKA_PARTITION_UA);
    auto err = rd_kafka_subscribe(impl_->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(impl_->rk);
        throw std::runtime_error("cannot join group " + c.group + ": " + rd_kafka_err2str(err));
    }
    impl_->loop = std::thread([self = impl_.get()] {
        while (!self->stop.load()) {
            if (rd_kafka_message_t* m = rd_kafka_consumer_poll(self->rk, 100)) {
                if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                    spdlog::warn("group {}: {}", self->config.group, rd_kafka_message_errstr(m));
                }
                rd_kafka_message_destroy(m);
            }
        }
        // Leaving revokes what is owned (through the callback) first.
        rd_kafka_consumer_close(self->rk);
    });
}

group_member::~group_member() {
    impl_->stop.store(true);
    impl_->loop.join();
    rd_kafka_destroy(impl_->rk);
}

std::string group_member::member_id() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->member;
}

std::vector<std::int32_t> group_member::partitions() const {
    std::lock_guard lock(impl_->mutex);
    return {impl_->owned.begin(), impl_->owned.end()};
}

std::uint64_t group_member::rebalances() const { return impl_->rebalances.load(); }

} // namespace kafka
