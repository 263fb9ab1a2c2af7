#include "bridge/kafka_startup.hpp"

#include "bridge/group.hpp"
#include "bridge/group_commands.hpp"
#include "bridge/kafka_checkpoints.hpp"
#include "bridge/routing.hpp"
#include "checkpoint/kafka_store.hpp"
#include "common/version.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/presence.hpp"
#include "kafka/producer.hpp"
#include "metrics/http_server.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

#include <csignal>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace asio = boost::asio;

namespace bridge {

namespace {

// Creates `topic` with `partitions` when missing (the mock through its own API).
void ensure_topic(kafka::producer& producer, kafka::embedded_cluster* embedded, std::string const& topic,
                  int partitions, config const& cfg,
                  std::vector<std::pair<std::string, std::string>> const& topic_config = {}) {
    if (embedded != nullptr) {
        embedded->create_topic(topic, partitions);
    } else if (!producer.missing_topics({topic}, std::chrono::seconds(30)).empty()) {
        if (auto ec = producer.create_topics({topic}, partitions, cfg.topic_replication, std::chrono::seconds(30),
                                             topic_config)) {
            throw std::runtime_error("cannot create the topic " + topic + ": " + ec.message());
        }
    }
}

} // namespace

kafka_start prepare_kafka(config const& cfg, router const& routes, kafka::producer& producer,
                          kafka::embedded_cluster* embedded, std::string const& bootstrap_servers,
                          checkpoint::store& local, bool& transactions_begun) {
    kafka_start out;
    if (cfg.create_topics) {
        auto topics = routes.known_topics();
        if (cfg.on_unpublishable == "dlq") {
            topics.push_back(cfg.dlq_topic);
        }
        if (embedded != nullptr) {
            // The mock cluster has no CreateTopics API; it creates them directly.
            embedded->create_topics(topics, cfg.topic_partitions);
        } else if (auto ec = producer.create_topics(topics, cfg.topic_partitions, cfg.topic_replication,
                                                    std::chrono::seconds(30))) {
            throw std::runtime_error("cannot create topics: " + ec.message());
        }
        spdlog::info("topics ready: {} topics ({} partitions, replication {})", topics.size(), cfg.topic_partitions,
                     cfg.topic_replication);
    }
    if (cfg.checkpoint_store != "kafka") {
        return out;
    }
    // The positions live in the cluster whose records they cover, so the
    // cluster-id check of the RocksDB store has nothing to do.
    out.positions = open_kafka_checkpoints(cfg, producer, embedded, bootstrap_servers, local, transactions_begun);
    if (!cfg.group.empty()) {
        ensure_topic(producer, embedded, assignment_topic(cfg), cfg.assignment_partitions, cfg);
        ensure_topic(producer, embedded, command_topic(cfg), 1, cfg, {{"cleanup.policy", "compact"}});
    }
    if (embedded == nullptr) {
        out.running_mark = std::make_unique<kafka::presence>(kafka::presence_config{
            bootstrap_servers, kafka_client_properties(cfg), checkpoint_owner_group(cfg), cfg.checkpoint_topic});
    }
    return out;
}

startup_wait_result wait_for_kafka_start(config const& cfg, metrics::registry& registry,
                                         std::function<kafka_start()> const& attempt,
                                         std::function<bool()> const& reachable) {
    asio::io_context ioc;
    metrics::http_server http(ioc.get_executor(), cfg.http_listen, registry);
    auto& waiting = registry.add_gauge("couch_bridge_startup_waiting",
                                       "1 while the start waits for Kafka (the checkpoint topic), 0 after");
    auto& attempts_failed = registry.add_counter("couch_bridge_startup_attempts_failed_total",
                                                 "Start attempts that failed because Kafka was out of reach");
    waiting.set(1);
    std::mutex mutex;
    std::string why = "reading the checkpoint topic " + cfg.checkpoint_topic + " from Kafka";
    auto reason = [&] {
        std::lock_guard lock(mutex);
        return why;
    };
    http.handle("/readyz", [&] {
        return metrics::http_response{503, "text/plain; charset=utf-8", "starting: " + reason() + "\n"};
    });
    http.handle("/status", [&] {
        boost::json::object root;
        root["version"] = common::version;
        root["starting"] = reason();
        root["checkpoint_store"] = cfg.checkpoint_store;
        root["delivery"] = cfg.delivery;
        root["databases"] = boost::json::object();
        // The shape of the bridge's own /status, empty: clients that poll it
        // through a start read the same fields.
        root["kafka"] = {{"ready", false}, {"last_error", nullptr}};
        if (!cfg.group.empty()) {
            root["group"] = {{"name", cfg.group},
                             {"member_id", ""},
                             {"partitions", boost::json::array()},
                             {"rebalances", 0}};
        }
        return metrics::http_response{200, "application/json", boost::json::serialize(root) + "\n"};
    });
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([](boost::system::error_code ec, int sig) {
        if (ec) {
            return;
        }
        // Nothing was written yet; the attempt under way blocks in librdkafka
        // for up to its timeouts, so it is abandoned rather than awaited.
        spdlog::info("signal {} while the start waited for Kafka: stopping", sig);
        spdlog::default_logger()->flush();
        ::_exit(0);
    });
    http.start();
    std::thread serving([&ioc] { ioc.run(); });
    auto finish = [&] {
        signals.cancel();
        http.stop();
        ioc.stop();
        serving.join();
        waiting.set(0);
    };
    startup_wait_result result;
    auto const host = cfg.http_listen.substr(0, cfg.http_listen.rfind(':'));
    result.listen = host + ":" + std::to_string(http.port());
    auto const started = std::chrono::steady_clock::now();
    for (int n = 1;; ++n) {
        try {
            result.started = attempt();
            break;
        } catch (std::exception const& e) {
            if (reachable()) {
                finish();
                throw; // the brokers answer: waiting does not cure this
            }
            attempts_failed.inc();
            auto const waited =
                std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started).count();
            spdlog::warn("start attempt {} failed after {} s: Kafka is out of reach ({}); /healthz answers, "
                         "retrying in 2 s",
                         n, waited, e.what());
            {
                std::lock_guard lock(mutex);
                why = "reading the checkpoint topic " + cfg.checkpoint_topic + " from Kafka: attempt " +
                      std::to_string(n) + " failed (" + e.what() + "), retrying";
            }
            std::this_thread::sleep_for(std::chrono::seconds(2));
        }
    }
    finish();
    result.go_on = true;
    return result;
}

} // namespace bridge
