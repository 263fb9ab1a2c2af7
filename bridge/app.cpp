#include "bridge/app.hpp"

#include "bridge/pipeline.hpp"
#include "bridge/routing.hpp"
#include "checkpoint/flusher.hpp"
#include "checkpoint/store.hpp"
#include "checkpoint/watermark.hpp"
#include "checkpoint/version.hpp"
#include "common/redact.hpp"
#include "common/version.hpp"
#include "couch/changes_feed.hpp"
#include "kafka/producer.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/version.hpp"
#include "metrics/http_server.hpp"
#include "metrics/process.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <memory>
#include <thread>
#include <unistd.h>

namespace asio = boost::asio;

namespace bridge {

namespace {

std::string iso_time(std::chrono::system_clock::time_point t) {
    if (t == std::chrono::system_clock::time_point{}) {
        return {};
    }
    return format_timestamp(t);
}

boost::json::value status_json(std::vector<std::unique_ptr<pipeline>> const& pipelines) {
    boost::json::object dbs;
    for (auto const& p : pipelines) {
        auto s = p->status();
        boost::json::object o;
        o["state"] = s.state;
        o["ready"] = s.ready;
        o["last_seq_read"] = s.last_seq_read;
        o["checkpoint_seq"] = s.checkpoint_seq;
        o["rows_read"] = s.rows_read;
        o["published"] = s.published;
        o["skipped"] = s.skipped;
        o["delivery_failures"] = s.delivery_failures;
        o["in_flight"] = s.in_flight;
        o["in_flight_bytes"] = s.in_flight_bytes;
        if (s.pending) {
            o["pending"] = *s.pending;
        } else {
            o["pending"] = nullptr;
        }
        o["last_error"] = s.last_error.empty() ? boost::json::value(nullptr) : boost::json::value(s.last_error);
        o["last_error_time"] = s.last_error_time == std::chrono::system_clock::time_point{}
                                   ? boost::json::value(nullptr)
                                   : boost::json::value(iso_time(s.last_error_time));
        o["last_row_time"] = s.last_row_time == std::chrono::system_clock::time_point{}
                                 ? boost::json::value(nullptr)
                                 : boost::json::value(iso_time(s.last_row_time));
        dbs[s.database] = std::move(o);
    }
    return dbs;
}

couch::since parse_since(std::string const& s) {
    return s == "now" ? couch::since::now() : couch::since::beginning();
}

} // namespace

std::string checkpoint_source(config const& cfg) {
    if (!cfg.source_name.empty()) {
        return cfg.source_name;
    }
    auto s = common::redact_url(cfg.couch_url);
    while (!s.empty() && s.back() == '/') {
        s.pop_back();
    }
    return s;
}

int run_bridge(config const& cfg) {
    if (cfg.databases.empty()) {
        spdlog::error("no database to follow: give --db NAME (repeatable) or COUCH_BRIDGE_DB=a,b");
        return 2;
    }
    asio::io_context ioc;
    auto work = asio::make_work_guard(ioc);
    metrics::registry registry;
    metrics::register_process_metrics(registry);
    metrics::register_build_info(registry, {{"version", common::version},
                                            {"librdkafka", kafka::librdkafka_version()},
                                            {"rocksdb", checkpoint::rocksdb_version()}});

    // Everything that can fail at startup fails here, before any feed opens.
    std::unique_ptr<kafka::embedded_cluster> embedded;
    std::unique_ptr<kafka::producer> producer;
    std::unique_ptr<checkpoint::store> store;
    std::optional<router> routes;
    std::unique_ptr<metrics::http_server> http;
    try {
        routing_options ropts;
        ropts.default_topic = cfg.default_topic;
        ropts.route_design_docs = cfg.route_design_docs;
        ropts.route_missing_doc_type = cfg.route_missing_doc_type;
        routes.emplace(router::from_spec(cfg.routing, ropts));

        store = checkpoint::store::open(cfg.checkpoint_dir);

        kafka::producer_config pcfg;
        if (cfg.kafka_brokers == "embedded") {
            embedded = std::make_unique<kafka::embedded_cluster>(1);
            pcfg.bootstrap_servers = embedded->bootstrap_servers(); // the cluster logs its own address
        } else {
            pcfg.bootstrap_servers = cfg.kafka_brokers;
        }
        for (auto const& p : cfg.kafka_properties) {
            auto eq = p.find('=');
            pcfg.properties.emplace_back(p.substr(0, eq), p.substr(eq + 1));
        }
        producer = std::make_unique<kafka::producer>(ioc.get_executor(), pcfg, registry);
        if (cfg.create_topics) {
            auto topics = routes->known_topics();
            if (embedded) {
                // The mock cluster has no CreateTopics API; it creates them directly.
                embedded->create_topics(topics, cfg.topic_partitions);
            } else if (auto ec = producer->create_topics(topics, cfg.topic_partitions, cfg.topic_replication,
                                                         std::chrono::seconds(30))) {
                throw std::runtime_error("cannot create topics: " + ec.message());
            }
            spdlog::info("topics ready: {} topics ({} partitions, replication {})", topics.size(),
                         cfg.topic_partitions, cfg.topic_replication);
        }

        http = std::make_unique<metrics::http_server>(ioc.get_executor(), cfg.http_listen, registry);
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", common::redact_secret(e.what(), cfg.couch_password));
        return 2;
    }

    {
        auto& sanitized = registry.add_gauge("couch_bridge_routing_sanitized_doc_types",
                                             "Doc types whose prefix topic needed illegal characters replaced");
        auto& overflow = registry.add_gauge("couch_bridge_routing_prefix_overflow_routes",
                                            "Records sent to the default topic because the prefix cache was full");
        registry.on_collect([&routes, &sanitized, &overflow] {
            auto st = routes->stats();
            sanitized.set(static_cast<double>(st.sanitized_doc_types));
            overflow.set(static_cast<double>(st.prefix_overflow_routes));
        });
    }

    checkpoint::flusher flusher(ioc.get_executor(), *store, cfg.checkpoint_interval, registry, common::version);

    couch::client_config client;
    client.url = cfg.couch_url;
    client.user = cfg.couch_user;
    client.password = cfg.couch_password;
    client.auth = cfg.couch_auth == "cookie" ? couch::client_config::auth_mode::cookie
                                             : couch::client_config::auth_mode::basic;
    client.ca_file = cfg.couch_ca_file;
    client.tls_verify = cfg.couch_tls_verify;

    auto const source = checkpoint_source(cfg);
    std::vector<std::unique_ptr<pipeline>> pipelines;
    try {
        for (auto const& db : cfg.databases) {
            checkpoint::key key{source, db};
            auto pos = store->get(key);
            couch::feed_options fo;
            fo.database = db;
            fo.heartbeat = cfg.couch_heartbeat;
            std::optional<std::string> start;
            if (pos) {
                fo.since = couch::since::from(couch::seq::from_raw_json(pos->seq_json));
                start = pos->seq_json;
                flusher.restore(key, *pos);
                spdlog::info("db {}: resuming from checkpoint {}", db, pos->seq_json);
            } else {
                fo.since = parse_since(cfg.initial_since);
                spdlog::info("db {}: no checkpoint, starting from since={}", db, cfg.initial_since);
            }
            pipelines.push_back(std::make_unique<pipeline>(
                ioc.get_executor(), client, std::move(fo), key, start,
                window_limits{cfg.max_in_flight, cfg.max_in_flight_bytes},
                pipeline::dependencies{*producer, *routes, flusher, registry}));
        }
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return 2;
    }

    http->handle("/healthz", [] { return metrics::http_response{200, "text/plain; charset=utf-8", "ok\n"}; });
    http->handle("/readyz", [&pipelines, &flusher] {
        std::string not_ready;
        for (auto const& p : pipelines) {
            auto s = p->status();
            if (!s.ready) {
                not_ready += s.database + ": " + s.state + (s.last_error.empty() ? "" : " (" + s.last_error + ")") + "\n";
            }
        }
        auto h = flusher.status();
        if (h.consecutive_failures > 0) {
            not_ready += "checkpoints: " + h.last_error + "\n";
        }
        if (not_ready.empty()) {
            return metrics::http_response{200, "text/plain; charset=utf-8", "ready\n"};
        }
        return metrics::http_response{503, "text/plain; charset=utf-8", not_ready};
    });
    http->handle("/status", [&pipelines, &flusher] {
        boost::json::object root;
        root["version"] = common::version;
        root["databases"] = status_json(pipelines);
        auto h = flusher.status();
        boost::json::object ck;
        ck["consecutive_failures"] = h.consecutive_failures;
        ck["last_error"] = h.last_error.empty() ? boost::json::value(nullptr) : boost::json::value(h.last_error);
        ck["last_success_time"] = iso_time(h.last_success_time);
        root["checkpoints"] = std::move(ck);
        return metrics::http_response{200, "application/json", boost::json::serialize(root) + "\n"};
    });
    try {
        http->start();
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return 2;
    }
    spdlog::info("couch-kafka-bridge {} following {} database(s) of {}; metrics on http://{}:{}/metrics",
                 common::version, pipelines.size(), common::redact_url(cfg.couch_url),
                 cfg.http_listen.substr(0, cfg.http_listen.rfind(':')), http->port());

    asio::co_spawn(ioc, flusher.run(), asio::detached);
    for (auto& p : pipelines) {
        auto* raw = p.get();
        asio::co_spawn(raw->strand(), raw->run(), [raw](std::exception_ptr e) {
            if (!e) {
                return;
            }
            try {
                std::rethrow_exception(e);
            } catch (std::exception const& ex) {
                spdlog::critical("db {}: pipeline stopped by an unexpected error: {}", raw->database(), ex.what());
            }
        });
    }

    // Progress while catching up: rows read, pending, rate, ETA.
    std::atomic<bool> stopping{false};
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            std::unordered_map<std::string, std::uint64_t> last_rows;
            asio::steady_timer t(co_await asio::this_coro::executor);
            constexpr int period_s = 5;
            while (!stopping) {
                t.expires_after(std::chrono::seconds(period_s));
                co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                if (stopping) {
                    break;
                }
                for (auto const& p : pipelines) {
                    auto s = p->status();
                    auto& prev = last_rows[s.database];
                    auto delta = s.rows_read - prev;
                    prev = s.rows_read;
                    if (s.state != "catching_up" || delta == 0) {
                        continue;
                    }
                    double rate = static_cast<double>(delta) / period_s;
                    if (s.pending && rate > 0) {
                        spdlog::info("db {}: catching up: {} rows read, {} pending, {:.0f} rows/s, ETA {:.0f} s",
                                     s.database, s.rows_read, *s.pending, rate, static_cast<double>(*s.pending) / rate);
                    } else {
                        spdlog::info("db {}: catching up: {} rows read, {:.0f} rows/s", s.database, s.rows_read, rate);
                    }
                }
            }
        },
        asio::detached);

    // Shutdown: stop reading, wait (bounded) for acknowledgements, flush.
    int exit_code = 0;
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    auto first_signal_at = std::chrono::steady_clock::time_point{};
    // A second signal exits at once. One that arrives within 500 ms of the
    // first is taken as the same request delivered twice (`timeout`, a shell
    // or a supervisor signalling the whole process group as well as the
    // process), not as an operator insisting.
    std::function<void(boost::system::error_code, int)> on_second_signal =
        [&](boost::system::error_code ec, int sig) {
            if (ec) {
                return;
            }
            if (std::chrono::steady_clock::now() - first_signal_at < std::chrono::milliseconds(500)) {
                signals.async_wait(on_second_signal);
                return;
            }
            // Still safe: checkpoints only ever cover acknowledged records.
            spdlog::warn("signal {} again: exiting at once", sig);
            spdlog::default_logger()->flush();
            ::_exit(130);
        };
    signals.async_wait([&](boost::system::error_code ec, int sig) {
        if (ec) {
            return;
        }
        first_signal_at = std::chrono::steady_clock::now();
        signals.async_wait(on_second_signal);
        stopping = true;
        asio::co_spawn(
            ioc,
            [&, sig]() -> asio::awaitable<void> {
                std::size_t in_flight = 0;
                for (auto& p : pipelines) {
                    p->stop();
                    in_flight += p->in_flight();
                }
                spdlog::info("signal {}: stopping; waiting up to {} ms for {} in-flight record(s)", sig,
                             cfg.shutdown_timeout.count(), in_flight);
                auto deadline = std::chrono::steady_clock::now() + cfg.shutdown_timeout;
                asio::steady_timer t(ioc);
                for (;;) {
                    in_flight = 0;
                    for (auto& p : pipelines) {
                        in_flight += p->in_flight();
                    }
                    if (in_flight == 0 || std::chrono::steady_clock::now() >= deadline) {
                        break;
                    }
                    t.expires_after(std::chrono::milliseconds(20));
                    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                }
                if (in_flight > 0) {
                    spdlog::warn("shutdown timeout: {} record(s) still unacknowledged; they will be sent again at the "
                                 "next start",
                                 in_flight);
                    exit_code = 1;
                }
                // Let the pipelines' last delivery reports reach the flusher.
                t.expires_after(std::chrono::milliseconds(10));
                co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                flusher.stop();
                if (auto fec = flusher.flush_now()) {
                    spdlog::error("final checkpoint flush failed: {}", fec.message());
                    exit_code = 1;
                } else {
                    spdlog::info("checkpoints flushed");
                }
                http->stop();
                signals.cancel();
                work.reset();
                ioc.stop();
            },
            asio::detached);
    });

    unsigned const n_threads = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < n_threads; ++i) {
        threads.emplace_back([&ioc] { ioc.run(); });
    }
    ioc.run();
    for (auto& t : threads) {
        t.join();
    }
    // The producer goes first: anything it still holds completes into the
    // stopped io_context and is discarded there (never reported as delivered).
    producer.reset();
    embedded.reset();
    spdlog::info("stopped (exit {})", exit_code);
    return exit_code;
}

} // namespace bridge
