// kafka::producer's librdkafka handle over its life: created with the
// callbacks that lead into producer::impl, its errors and readiness, and
// rebuilt (the old one retired, its messages' reports handed back) after a
// fatal error, or shut down.
#include "kafka/producer.hpp"
#include "kafka/producer_impl.hpp"

#include "kafka/client.hpp"
#include "kafka/error.hpp"
#include "metrics/registry.hpp"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <stdexcept>
#include <string>

namespace kafka {

namespace {

using detail::clock;

// How long retiring a librdkafka instance may take to hand back the purged
// messages' reports. Purged messages come back at once; this only bounds a
// misbehaving library.
constexpr auto retire_budget = std::chrono::seconds(5);

void delivery_cb(rd_kafka_t*, rd_kafka_message_t const* msg, void* opaque) {
    static_cast<producer::impl*>(opaque)->on_delivery(msg);
}

void error_cb(rd_kafka_t* rk, int err, char const* reason, void* opaque) {
    static_cast<producer::impl*>(opaque)->on_error(rk, err, reason);
}

int stats_cb(rd_kafka_t*, char* json, size_t len, void* opaque) {
    static_cast<producer::impl*>(opaque)->on_stats(json, len);
    return 0; // librdkafka frees the text
}

} // namespace

rd_kafka_t* producer::impl::create_handle() {
    char errstr[512] = {};
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](std::string const& name, std::string const& value) { detail::set_property(conf, name, value); };
    set("enable.idempotence", "true");
    set("acks", "all");
    set("compression.type", "lz4");
    set("linger.ms", "5");
    set("partitioner", "murmur2_random");
    // Broker states for health(): a broker seen up clears a connection error.
    set("statistics.interval.ms", "5000");
    if (!config_.bootstrap_servers.empty()) {
        set("bootstrap.servers", config_.bootstrap_servers);
    }
    for (auto const& [name, value] : config_.properties) {
        set(name, value);
    }
    if (!config_.transactional_id.empty()) {
        set("transactional.id", config_.transactional_id);
    }
    rd_kafka_conf_set_opaque(conf, this);
    rd_kafka_conf_set_dr_msg_cb(conf, &delivery_cb);
    rd_kafka_conf_set_error_cb(conf, &error_cb);
    rd_kafka_conf_set_stats_cb(conf, &stats_cb);
    rd_kafka_conf_set_log_cb(conf, &detail::log_to_spdlog);
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == nullptr) {
        rd_kafka_conf_destroy(conf);
        throw std::invalid_argument(std::string("kafka producer configuration refused: ") + errstr);
    }
    // Delivery reports and errors go to the main queue; have it signal the
    // pipe instead of being polled.
    static char const wakeup = 'k';
    rd_kafka_queue_t* q = rd_kafka_queue_get_main(rk);
    rd_kafka_queue_io_event_enable(q, pipe_write_, &wakeup, 1);
    rd_kafka_queue_destroy(q);
    return rk;
}

void producer::impl::on_error(rd_kafka_t* rk, int err, char const* reason) {
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal_reason[512] = {};
        auto orig = rd_kafka_fatal_error(rk, fatal_reason, sizeof fatal_reason);
        error_counter("fatal").inc();
        if (!config_.transactional_id.empty()) {
            // A transactional producer is never rebuilt: after a fence a new
            // instance would write beside the instance that took over.
            spdlog::error("kafka producer {}: fatal error {}: {}", rd_kafka_name(rk), rd_kafka_err2name(orig),
                          fatal_reason);
            std::lock_guard lock(txn_mutex_);
            if (txn_fatal_.empty()) {
                txn_fatal_ = std::string(rd_kafka_err2name(orig)) + ": " + fatal_reason;
            }
            return;
        }
        spdlog::error("kafka producer {}: fatal error {}: {}; rebuilding the producer", rd_kafka_name(rk),
                      rd_kafka_err2name(orig), fatal_reason);
        if (rk == current_.load()) {
            fatal_ = true;
        }
        return;
    }
    // Everything else (broker down, all brokers down, auth trouble) is
    // retried by librdkafka itself; messages fail through their reports once
    // message.timeout.ms runs out. Connection trouble is counted and makes
    // the producer not ready until a broker is seen up again.
    auto const code = static_cast<rd_kafka_resp_err_t>(err);
    bool const breaks_readiness = code == RD_KAFKA_RESP_ERR__AUTHENTICATION || code == RD_KAFKA_RESP_ERR__SSL ||
                                  code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
    if (breaks_readiness || code == RD_KAFKA_RESP_ERR__TRANSPORT || code == RD_KAFKA_RESP_ERR__RESOLVE) {
        {
            std::lock_guard lock(health_mutex_);
            auto it = connection_errors_.find(rd_kafka_err2name(code));
            if (it == connection_errors_.end()) {
                auto& c = registry_.add_counter("couch_bridge_kafka_connection_errors_total",
                                                "Kafka connection problems reported by librdkafka, by error name "
                                                "(_AUTHENTICATION, _SSL, _TRANSPORT, _ALL_BROKERS_DOWN, _RESOLVE)",
                                                {{"reason", rd_kafka_err2name(code)}});
                it = connection_errors_.emplace(rd_kafka_err2name(code), &c).first;
            }
            it->second->inc();
            // "1/1 brokers are down" says less than the failure before it.
            if (code != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || last_connection_error_.empty()) {
                last_connection_error_ = std::string(rd_kafka_err2name(code)) + ": " + reason;
            }
        }
        if (breaks_readiness) {
            set_ready(false);
        }
    }
    // Connection failures are logged by librdkafka itself (FAIL lines).
    auto level = err == RD_KAFKA_RESP_ERR__TRANSPORT ? spdlog::level::debug : spdlog::level::warn;
    spdlog::log(level, "kafka producer {}: {}: {}", rd_kafka_name(rk),
                rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)), reason);
}

void producer::impl::set_ready(bool ready) {
    if (ready_.exchange(ready) != ready) {
        ready_gauge_.set(ready ? 1.0 : 0.0);
        if (ready) {
            spdlog::info("kafka producer: a broker is reachable again");
        } else {
            std::lock_guard lock(health_mutex_);
            spdlog::error("kafka producer: cannot reach the cluster: {}", last_connection_error_);
        }
    }
}

void producer::impl::on_stats(char const* json, std::size_t len) {
    // Only broker objects carry a "state" member, and "UP" is librdkafka's
    // name for a connected, authenticated broker.
    if (!ready_.load() && std::string_view(json, len).find("\"state\":\"UP\"") != std::string_view::npos) {
        set_ready(true);
    }
}

void producer::impl::rebuild() {
    std::lock_guard guard(rebuild_mutex_);
    if (!fatal_.exchange(false) || stopping_) {
        return;
    }
    rd_kafka_t* fresh = nullptr;
    try {
        fresh = create_handle();
    } catch (std::exception const& e) {
        // The configuration worked before, so this is resource trouble; stay
        // on the failed instance (produces keep failing loudly) and retry at
        // the next served event.
        spdlog::error("kafka producer: rebuild after fatal error failed: {}", e.what());
        fatal_ = true;
        return;
    }
    rd_kafka_t* old = nullptr;
    {
        std::unique_lock lock(rk_mutex_);
        old = rk_;
        rk_ = fresh;
        current_ = fresh;
    }
    kick();
    retire(old);
    rebuilds_.inc();
    rebuild_count_.fetch_add(1);
    spdlog::warn("kafka producer: rebuilt as {} after a fatal error ({} messages still in flight)", rd_kafka_name(fresh),
                 in_flight_.load());
}

void producer::impl::retire(rd_kafka_t* old) {
    // Stop the old instance signalling; from here on it is polled directly.
    rd_kafka_queue_t* q = rd_kafka_queue_get_main(old);
    rd_kafka_queue_io_event_enable(q, -1, nullptr, 0);
    rd_kafka_queue_destroy(q);
    // Every message still inside fails with _PURGE_QUEUE / _PURGE_INFLIGHT
    // (never reported as delivered), and its report is served here.
    rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    auto deadline = clock::now() + retire_budget;
    while (rd_kafka_outq_len(old) > 0 && clock::now() < deadline) {
        rd_kafka_poll(old, 50);
    }
    rd_kafka_poll(old, 0);
    if (auto left = rd_kafka_outq_len(old); left > 0) {
        spdlog::error("kafka producer {}: {} messages/requests still queued when destroyed", rd_kafka_name(old), left);
    }
    rd_kafka_destroy(old);
}

void producer::impl::shutdown() {
    stopping_ = true;
    rd_kafka_t* old = nullptr;
    {
        std::lock_guard guard(rebuild_mutex_);
        std::unique_lock lock(rk_mutex_);
        old = rk_;
        rk_ = nullptr;
        current_ = nullptr;
    }
    if (old != nullptr) {
        retire(old);
    }
}

} // namespace kafka
