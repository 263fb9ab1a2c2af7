// The Kafka side of a bridge start: the checks that fail it early, the
// routing, the checkpoint store, the producers (with the catch-up lane), the
// Kafka start and the HTTP server, and the check of the checkpoints against
// the connected cluster.

#include "bridge/app.hpp"
#include "bridge/app_parts.hpp"
#include "bridge/kafka_checkpoints.hpp"
#include "bridge/kafka_startup.hpp"
#include "checkpoint/kafka_store.hpp"
#include "checkpoint/store.hpp"
#include "common/redact.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/presence.hpp"
#include "kafka/producer.hpp"
#include "metrics/http_server.hpp"
#include "metrics/registry.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <random>
#include <stdexcept>
#include <thread>

namespace bridge {

kafka_side::kafka_side() = default;
kafka_side::~kafka_side() = default;

namespace {

void check_flags(config const& cfg) {
    if (!cfg.group.empty() && cfg.checkpoint_store != "kafka") {
        throw std::invalid_argument("--group needs --checkpoint-store kafka: a database's next owner reads its "
                                    "checkpoint from the topic");
    }
    if (exactly_once(cfg) && cfg.checkpoint_store != "kafka") {
        throw std::invalid_argument("--delivery exactly-once needs --checkpoint-store kafka: the checkpoints are "
                                    "written in the same Kafka transaction as the records");
    }
}

routing_options routing_options_of(config const& cfg) {
    routing_options ropts;
    ropts.default_topic = cfg.default_topic;
    ropts.route_design_docs = cfg.route_design_docs;
    ropts.route_missing_doc_type = cfg.route_missing_doc_type;
    return ropts;
}

void open_store(config const& cfg, kafka_side& k) {
    std::string checkpoint_dir = cfg.checkpoint_dir;
    if (cfg.kafka_brokers == "embedded" && !cfg.checkpoint_dir_given) {
        k.scratch = std::make_unique<throwaway_dir>();
        checkpoint_dir = k.scratch->path();
        spdlog::info("embedded Kafka: checkpoints go to the throw-away directory {} (removed at exit), since "
                     "the embedded cluster's records vanish with the process; give --checkpoint-dir to keep them",
                     checkpoint_dir);
    }
    k.store = checkpoint::store::open(checkpoint_dir);
}

// The embedded cluster if asked for, the producer, and the catch-up lane's
// producer when there is one.
void open_producers(config const& cfg, event_loop& ioc, metrics::registry& registry, kafka_side& k) {
    kafka::producer_config pcfg;
    if (cfg.kafka_brokers == "embedded") {
        k.embedded = std::make_unique<kafka::embedded_cluster>(1);
        pcfg.bootstrap_servers = k.embedded->bootstrap_servers(); // the cluster logs its own address
    } else {
        pcfg.bootstrap_servers = cfg.kafka_brokers;
    }
    k.brokers = pcfg.bootstrap_servers;
    pcfg.properties = kafka_client_properties(cfg);
    if (exactly_once(cfg) && cfg.group.empty()) {
        // In group mode every assignment partition has a transactional
        // producer of its own (bridge/group_transactions.hpp).
        pcfg.transactional_id = transactional_id(cfg, checkpoint_source(cfg));
    }
    bool const catch_up_lane = cfg.kafka_catch_up_linger.count() > 0 && !exactly_once(cfg);
    if (catch_up_lane) {
        // Only following feeds use this producer then: it sends after 1
        // ms rather than the producer's default 5 (latency), unless a
        // --kafka-property says otherwise (applied after this).
        pcfg.properties.insert(pcfg.properties.begin(), {"linger.ms", "1"});
    }
    k.producer = std::make_unique<kafka::producer>(ioc.get_executor(), pcfg, registry);
    if (catch_up_lane) {
        kafka::producer_config lane = pcfg;
        lane.properties = catch_up_lane_properties(cfg);
        lane.ready_metric = "couch_bridge_kafka_catch_up_ready";
        k.catch_up_producer = std::make_unique<kafka::producer>(ioc.get_executor(), std::move(lane), registry);
    }
}

// The topics, with the Kafka store its checkpoints and the running mark;
// then the HTTP server.
void start_kafka(config const& cfg, event_loop& ioc, metrics::registry& registry, kafka_side& k) {
    if (cfg.checkpoint_store == "kafka") {
        // The start waits for the brokers as long as they are out of
        // reach, serving /healthz meanwhile (bridge/kafka_startup.hpp).
        bool transactions_begun = false;
        auto w = wait_for_kafka_start(
            cfg, registry,
            [&] {
                return prepare_kafka(cfg, *k.routes, *k.producer, k.embedded.get(), k.brokers, *k.store,
                                     transactions_begun);
            },
            [&] { return !k.producer->cluster_id(std::chrono::seconds(2)).empty(); });
        k.started = std::move(w.started);
        k.http = std::make_unique<metrics::http_server>(ioc.get_executor(), w.listen, registry);
        auto& skipped = registry.add_counter("couch_bridge_checkpoint_records_skipped_total",
                                             "Records of the checkpoint topic that did not decode (foreign or "
                                             "corrupt), skipped at startup");
        skipped.inc(static_cast<double>(k.started.positions->loaded().skipped));
    } else {
        bool no_transactions = false;
        prepare_kafka(cfg, *k.routes, *k.producer, k.embedded.get(), k.brokers, *k.store, no_transactions);
        k.http = std::make_unique<metrics::http_server>(ioc.get_executor(), cfg.http_listen, registry);
    }
}

// Checkpoints are trusted only for the Kafka cluster that acknowledged
// them. A store that holds positions waits (verify_kafka_cluster) until the
// brokers tell their cluster id, and is checked against it; an empty one
// starts at once and records the id with its first write (an
// acknowledgement implies the metadata that carries the id).
void bind_to_cluster(kafka_side& k) {
    std::string const embedded_suffix =
        k.embedded ? "-" + std::to_string(std::random_device{}()) + std::to_string(std::random_device{}()) : "";
    k.cluster_of = [producer = &k.producer, embedded_suffix,
                    is_embedded = k.embedded != nullptr](std::chrono::milliseconds t) {
        auto id = (*producer)->cluster_id(t);
        // The mock cluster's id is fixed, but every embedded cluster is a
        // new one whose records vanish at exit: make its id unique.
        return id.empty() || !is_embedded ? id : "embedded-" + id + embedded_suffix;
    };
    // The check itself waits for the brokers: it runs once the HTTP
    // server answers (/healthz must not depend on Kafka).
    k.must_verify_cluster = !k.started.positions && !k.store->list().empty();
}

} // namespace

bool open_kafka_side(config const& cfg, event_loop& ioc, metrics::registry& registry, kafka_side& k) {
    try {
        check_flags(cfg);
        k.routes.emplace(router::from_spec(cfg.routing, routing_options_of(cfg)));
        open_store(cfg, k);
        open_producers(cfg, ioc, registry, k);
        start_kafka(cfg, ioc, registry, k);
        bind_to_cluster(k);
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}",
                      common::redact_secret(common::redact_secret(e.what(), cfg.couch_password),
                                            cfg.kafka_sasl_password));
        return false;
    }
    return true;
}

void register_routing_metrics(metrics::registry& registry, router const& routes) {
    auto& sanitized = registry.add_gauge("couch_bridge_routing_sanitized_doc_types",
                                         "Doc types whose prefix topic needed illegal characters replaced");
    auto& overflow = registry.add_gauge("couch_bridge_routing_prefix_overflow_routes",
                                        "Records sent to the default topic because the prefix cache was full");
    registry.on_collect([&routes, &sanitized, &overflow] {
        auto st = routes.stats();
        sanitized.set(static_cast<double>(st.sanitized_doc_types));
        overflow.set(static_cast<double>(st.prefix_overflow_routes));
    });
}

bool start_http(kafka_side& k) {
    try {
        k.http->start();
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return false;
    }
    return true;
}

std::optional<int> verify_kafka_cluster(config const& cfg, event_loop& ioc, boost::asio::signal_set& signals,
                                        kafka_side& k, starting_status& starting) {
    if (!k.must_verify_cluster) {
        return std::nullopt;
    }
    // A store that holds positions waits until the brokers tell their
    // cluster id, and is checked against it (an empty one records the id
    // with its first write: an acknowledgement implies the metadata that
    // carries it). The HTTP server answers meanwhile.
    starting.set("waiting for the Kafka cluster id, to check the checkpoints against it");
    std::atomic<int> startup_signal{0};
    signals.async_wait([&](boost::system::error_code ec, int sig) {
        if (!ec) {
            startup_signal = sig;
        }
    });
    std::thread serving([&ioc] { ioc.run(); });
    auto const wait_started = std::chrono::steady_clock::now();
    for (int attempt = 0; k.cluster.empty() && startup_signal == 0; ++attempt) {
        k.cluster = k.cluster_of(std::chrono::seconds(2));
        if (k.cluster.empty() && attempt % 5 == 4) {
            spdlog::warn("still waiting for the Kafka cluster id from {} ({} s) before trusting the "
                         "checkpoints: are the brokers reachable?",
                         k.embedded ? std::string("the embedded cluster") : cfg.kafka_brokers,
                         std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                          wait_started)
                             .count());
        }
    }
    signals.cancel();
    ioc.stop();
    serving.join();
    ioc.restart();
    bool go_on = startup_signal == 0;
    if (!go_on) {
        spdlog::info("signal {} before startup finished: stopping", startup_signal.load());
    } else {
        spdlog::info("Kafka cluster id {}", k.cluster);
        try {
            go_on = check_kafka_cluster(*k.store, k.cluster, cfg.kafka_cluster_change);
        } catch (std::exception const& e) {
            spdlog::error("startup failed: {}", e.what());
            go_on = false;
        }
    }
    if (!go_on) {
        // Lets the server's sessions end before it goes.
        k.http->stop();
        ioc.run_for(std::chrono::milliseconds(500));
        return startup_signal != 0 ? 0 : 2;
    }
    starting.set({});
    return std::nullopt;
}

} // namespace bridge
