#include "kafka/group_member.hpp"

#include "kafka/client.hpp"

#include "metrics/registry.hpp"

#include <librdkafka/rdkafka.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

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
    // An assignment (even an empty one) was received: see ~group_member.
    std::atomic<bool> assigned_once{false};
    // steady_clock ticks until which leaving may wait (see leave_by); and
    // whether the consumer closed (left the group) in time.
    std::atomic<std::chrono::steady_clock::rep> leave_by{
        std::chrono::steady_clock::time_point::max().time_since_epoch().count()};
    bool closed = false;
    // steady_clock nanoseconds until which the lease holds (see lease_valid).
    std::atomic<std::int64_t> lease_until{0};
    // Time spent in rebalance callbacks since the loop last looked (only
    // touched by the member's thread): not a pause of the process.
    std::chrono::steady_clock::duration in_callbacks{};
    // steady_clock nanoseconds when the coordinator connection last received
    // anything, from the statistics (0: not known yet). See lease_valid.
    std::atomic<std::int64_t> coordinator_heard{0};
    metrics::counter& rebalance_count;
    metrics::histogram& rebalance_seconds;
    metrics::gauge& partitions_gauge;
    metrics::registry& registry;
    metrics::gauge* member_gauge = nullptr; // the current member id's series

    impl(group_member_config c, group_events e, metrics::registry& r)
        : config(std::move(c)),
          events(std::move(e)),
          rebalance_count(r.add_counter("couch_bridge_group_rebalances_total",
                                        "Rebalances of the bridge group this instance took part in")),
          rebalance_seconds(r.add_histogram("couch_bridge_group_rebalance_seconds",
                                            "Time this instance spent handling one rebalance (starting or "
                                            "releasing databases)",
                                            metrics::exponential_buckets(0.001, 2.0, 16))),
          partitions_gauge(r.add_gauge("couch_bridge_group_partitions", "Assignment partitions this instance owns")),
          registry(r) {}

    // couch_bridge_group_member{group,member_id} is 1 for the member id this
    // instance has now (0 for the ones it had before a rejoin).
    void show_member_locked(std::string const& id) {
        if (id == member) {
            return;
        }
        if (member_gauge != nullptr) {
            member_gauge->set(0);
        }
        member = id;
        member_gauge = &registry.add_gauge("couch_bridge_group_member",
                                           "1 for this instance's member id in the group (0 for earlier ones)",
                                           {{"group", config.group}, {"member_id", id}});
        member_gauge->set(1);
    }

    // Leaves the group: what is owned is revoked (through the callback)
    // first. rd_kafka_consumer_close would block as long as the coordinator
    // does not answer (up to the session timeout, and more while the
    // revoke callback waits); closing through a queue of our own lets the
    // wait end at leave_by.
    void leave() {
        rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
        if (rd_kafka_error_t* e = rd_kafka_consumer_close_queue(rk, q)) {
            spdlog::warn("group {}: cannot leave the group: {}", config.group, rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        } else {
            using clock = std::chrono::steady_clock;
            while (!(closed = rd_kafka_consumer_closed(rk) != 0)) {
                if (clock::now() >= clock::time_point(clock::duration(leave_by.load()))) {
                    spdlog::warn("group {}: leaving the group did not complete before the shutdown deadline (is "
                                 "the coordinator reachable?); the group moves this member's partitions after its "
                                 "session timeout",
                                 config.group);
                    break;
                }
                rd_kafka_queue_poll_callback(q, 100);
            }
        }
        rd_kafka_queue_destroy(q);
    }

    void on_rebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts) {
        auto const started = std::chrono::steady_clock::now();
        if (char* id = rd_kafka_memberid(rk)) {
            std::lock_guard lock(mutex);
            show_member_locked(id);
            rd_kafka_mem_free(rk, id);
        }
        std::vector<std::int32_t> list;
        for (int i = 0; i < parts->cnt; ++i) {
            list.push_back(parts->elems[i].partition);
        }
        std::sort(list.begin(), list.end());
        bool const cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
            assigned_once.store(true);
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
        auto const spent = std::chrono::steady_clock::now() - started;
        in_callbacks += spent;
        rebalance_seconds.observe(std::chrono::duration<double>(spent).count());
    }
};

namespace {

void rebalance_cb(rd_kafka_t*, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
    static_cast<group_member::impl*>(opaque)->on_rebalance(err, parts);
}

std::int64_t steady_ns(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

int stats_cb(rd_kafka_t*, char* json, size_t len, void* opaque) {
    if (auto silence = detail::coordinator_silence(std::string_view(json, len))) {
        auto* self = static_cast<group_member::impl*>(opaque);
        self->coordinator_heard.store(steady_ns(std::chrono::steady_clock::now() - *silence));
    }
    return 0; // librdkafka frees the text
}

} // namespace

group_member::group_member(group_member_config config, group_events events, metrics::registry& registry)
    : impl_(std::make_unique<impl>(std::move(config), std::move(events), registry)) {
    auto const& c = impl_->config;
    // The operator's properties come last and win, as for the producer.
    impl_->rk = detail::make_client(
        RD_KAFKA_CONSUMER, c.bootstrap_servers,
        {{"group.id", c.group},
         {"partition.assignment.strategy", "cooperative-sticky"},
         {"session.timeout.ms", std::to_string(c.session_timeout.count())},
         {"heartbeat.interval.ms", std::to_string(std::max<std::int64_t>(100, c.session_timeout.count() / 5))},
         {"enable.auto.commit", "false"},
         // How long the coordinator has been silent (see lease_valid).
         {"statistics.interval.ms", "500"}},
        c.properties, impl_.get(), &rebalance_cb, &stats_cb);
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
        using clock = std::chrono::steady_clock;
        auto const lease = self->config.session_timeout / 3;
        auto const heartbeat = std::max(std::chrono::milliseconds(100), self->config.session_timeout / 5);
        // Heartbeats answer every heartbeat interval plus a round trip; the
        // coordinator evicts after the whole session timeout without one.
        // Half of it leaves room for slow links (a round trip of over a
        // second), and the eviction is still 2-3 s away when this holds.
        auto const silence_limit = self->config.session_timeout / 2;
        auto last = clock::now();
        auto hold_until = clock::time_point{};
        bool out_of_contact = false;
        while (!self->stop.load()) {
            auto const now = clock::now();
            auto const gap = now - last - std::exchange(self->in_callbacks, clock::duration{});
            auto const heard = self->coordinator_heard.load();
            auto const silence = heard == 0 ? clock::duration{} : now - clock::time_point(std::chrono::nanoseconds(heard));
            if (gap >= lease) {
                // This thread did not run for a long while: the group may
                // have moved the partitions meanwhile. No lease until the
                // heartbeats had the time to find out.
                self->lease_until.store(0);
                hold_until = now + 2 * heartbeat;
                spdlog::warn("group {}: this process did not run for {} ms; holding its databases for {} ms until "
                             "the group confirms or moves them",
                             self->config.group,
                             std::chrono::duration_cast<std::chrono::milliseconds>(gap).count(),
                             std::chrono::duration_cast<std::chrono::milliseconds>(2 * heartbeat).count());
            } else if (silence >= silence_limit) {
                // The coordinator has not answered a heartbeat for half the
                // session timeout: it may evict this member, and give the
                // partitions away, without this member hearing of it.
                self->lease_until.store(0);
                hold_until = now + 2 * heartbeat;
                bool owns_some = false;
                {
                    std::lock_guard lock(self->mutex);
                    owns_some = !self->owned.empty();
                }
                // (A join in progress is silent too; nothing is held then.)
                if (owns_some && !std::exchange(out_of_contact, true)) {
                    spdlog::warn("group {}: nothing heard from the group coordinator for {} ms; holding its "
                                 "databases until it answers again and the group confirms or moves them",
                                 self->config.group,
                                 std::chrono::duration_cast<std::chrono::milliseconds>(silence).count());
                }
            } else if (now >= hold_until) {
                if (std::exchange(out_of_contact, false)) {
                    spdlog::info("group {}: the group coordinator answers again; its databases go on",
                                 self->config.group);
                }
                self->lease_until.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                            (now + lease).time_since_epoch())
                                            .count());
            }
            last = now;
            if (rd_kafka_message_t* m = rd_kafka_consumer_poll(self->rk, 100)) {
                if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                    spdlog::warn("group {}: {}", self->config.group, rd_kafka_message_errstr(m));
                }
                rd_kafka_message_destroy(m);
            }
        }
        self->leave();
    });
}

group_member::~group_member() {
    impl_->stop.store(true);
    impl_->loop.join();
    if (!impl_->assigned_once.load()) {
        // librdkafka before 2.3 asserts when a cooperative-sticky consumer
        // that never received an assignment is destroyed (its assignor state
        // is still null: librdkafka issue 4312, fixed in 2.3.0; Debian 12 has
        // 2.0.2). The member left the group in leave() above; the
        // handle is left to the process' exit rather than aborting it.
        spdlog::debug("group {}: leaving the consumer handle to process exit (no assignment was ever received)",
                      impl_->config.group);
        return;
    }
    // Not closed in time: without the flag, destroy would close (and wait
    // for the coordinator) again.
    rd_kafka_destroy_flags(impl_->rk, impl_->closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

void group_member::leave_by(std::chrono::steady_clock::time_point deadline) {
    impl_->leave_by.store(deadline.time_since_epoch().count());
}

bool group_member::lease_valid() const noexcept {
    auto const now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
    return now < impl_->lease_until.load(std::memory_order_relaxed);
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

namespace detail {

std::optional<std::chrono::microseconds> coordinator_silence(std::string_view stats_json) {
    boost::system::error_code ec;
    auto const doc = boost::json::parse(stats_json, ec);
    if (ec || !doc.is_object()) {
        return std::nullopt;
    }
    auto const* brokers = doc.as_object().if_contains("brokers");
    if (brokers == nullptr || !brokers->is_object()) {
        return std::nullopt;
    }
    for (auto const& [name, b] : brokers->as_object()) {
        // The logical broker the consumer group talks to; its name carries
        // no address. rxidle: microseconds since the last bytes received,
        // -1 before any.
        if (name != "GroupCoordinator" || !b.is_object()) {
            continue;
        }
        auto const* idle = b.as_object().if_contains("rxidle");
        if (idle == nullptr || !idle->is_int64() || idle->as_int64() < 0) {
            return std::nullopt;
        }
        return std::chrono::microseconds(idle->as_int64());
    }
    return std::nullopt;
}

} // namespace detail

} // namespace kafka
