#include "bridge/app.hpp"

#include "bridge/admin_api.hpp"
#include "bridge/discovery.hpp"
#include "bridge/exactly_once.hpp"
#include "bridge/kafka_checkpoints.hpp"
#include "bridge/fleet.hpp"
#include "bridge/group.hpp"
#include "bridge/pipeline.hpp"
#include "bridge/routing.hpp"
#include "checkpoint/flusher.hpp"
#include "checkpoint/kafka_store.hpp"
#include "checkpoint/store.hpp"
#include "checkpoint/watermark.hpp"
#include "checkpoint/version.hpp"
#include "common/redact.hpp"
#include "common/version.hpp"
#include "couch/changes_feed.hpp"
#include "couch/source.hpp"
#include "kafka/producer.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/presence.hpp"
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
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
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

boost::json::value status_json(std::vector<pipeline_status> const& statuses) {
    boost::json::object dbs;
    for (auto const& s : statuses) {
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
        o["unpublishable"] = s.unpublishable;
        o["last_unpublishable"] =
            s.last_unpublishable.empty() ? boost::json::value(nullptr) : boost::json::value(s.last_unpublishable);
        dbs[s.database] = std::move(o);
    }
    return dbs;
}


boost::json::value source_json(couch::source const& src) {
    auto h = src.status();
    boost::json::object o;
    o["name"] = src.name();
    o["state"] = h.state;
    boost::json::object errors;
    for (auto const& [reason, n] : h.errors) {
        errors[reason] = n;
    }
    o["errors"] = std::move(errors);
    o["last_error"] = h.last_error.empty() ? boost::json::value(nullptr) : boost::json::value(h.last_error);
    o["last_error_time"] = h.last_error_time == std::chrono::system_clock::time_point{}
                               ? boost::json::value(nullptr)
                               : boost::json::value(iso_time(h.last_error_time));
    o["connecting"] = h.connecting;
    o["waiting"] = h.waiting;
    o["max_connecting"] = h.max_connecting;
    return o;
}

// --selector: a JSON object, normalized; "" when not given. Throws
// std::invalid_argument naming the flag.
std::string selector_text(std::string const& s) {
    if (s.empty()) {
        return {};
    }
    boost::system::error_code ec;
    auto v = boost::json::parse(s, ec);
    if (ec || !v.is_object()) {
        throw std::invalid_argument("--selector must be a JSON object (a Mango selector), e.g. "
                                    "'{\"doc_type\":\"CommCareCase\"}'");
    }
    return boost::json::serialize(v);
}

// --doc-ids FILE: a JSON array of strings, or one id per line. Throws
// std::invalid_argument naming the file.
std::vector<std::string> read_doc_ids(std::string const& path) {
    std::vector<std::string> ids;
    if (path.empty()) {
        return ids;
    }
    std::ifstream in(path);
    if (!in) {
        throw std::invalid_argument("--doc-ids: cannot read " + path + ": " + std::strerror(errno));
    }
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto const first = text.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && text[first] == '[') {
        boost::system::error_code ec;
        auto v = boost::json::parse(text, ec);
        if (ec || !v.is_array()) {
            throw std::invalid_argument("--doc-ids: " + path + " starts like a JSON array but is not one");
        }
        for (auto const& x : v.as_array()) {
            if (!x.is_string()) {
                throw std::invalid_argument("--doc-ids: " + path + ": every id must be a string");
            }
            ids.emplace_back(x.as_string());
        }
    } else {
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
                line.pop_back();
            }
            if (!line.empty()) {
                ids.push_back(line);
            }
        }
    }
    if (ids.empty()) {
        throw std::invalid_argument("--doc-ids: " + path + " holds no document id");
    }
    return ids;
}

// A checkpoint directory that lives as long as the process: what the
// embedded cluster gets unless a directory is given, because its records
// vanish at exit and positions it acknowledged must never outlive them.
class throwaway_dir {
public:
    throwaway_dir() {
        auto base = std::filesystem::temp_directory_path() / "couch-kafka-bridge-checkpoints-XXXXXX";
        std::string templ = base.string();
        if (::mkdtemp(templ.data()) == nullptr) {
            throw std::runtime_error("cannot create a throw-away checkpoint directory under " +
                                     base.parent_path().string() + ": " + std::strerror(errno));
        }
        path_ = templ;
    }
    ~throwaway_dir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    throwaway_dir(throwaway_dir const&) = delete;
    throwaway_dir& operator=(throwaway_dir const&) = delete;
    std::string const& path() const noexcept { return path_; }

private:
    std::string path_;
};

// The flusher's writer: records which Kafka cluster the positions belong to
// before the first of them is written (once), and refuses to write them
// while that is not known yet.
class cluster_bound_writer final : public checkpoint::position_writer {
public:
    cluster_bound_writer(checkpoint::store& store, std::function<std::string(std::chrono::milliseconds)> cluster_of,
                         std::string verified)
        : store_(store), cluster_of_(std::move(cluster_of)), recorded_(!verified.empty()) {}

    boost::system::error_code write(std::vector<std::pair<checkpoint::key, checkpoint::position>> const& entries) override {
        std::lock_guard lock(mutex_);
        if (!recorded_) {
            auto const id = cluster_of_(std::chrono::milliseconds(0));
            if (id.empty()) {
                detail_ = "the Kafka cluster id is not known yet (are the brokers reachable?); checkpoints are "
                          "written once it is";
                return checkpoint::make_error_code(checkpoint::store_errc::io);
            }
            if (auto ec = store_.put_meta("kafka_cluster_id", id)) {
                detail_.clear();
                return ec;
            }
            spdlog::info("Kafka cluster id {} recorded with the checkpoints", id);
            recorded_ = true;
        }
        detail_.clear();
        return store_.write(entries);
    }

    std::string last_error_detail() const override {
        std::lock_guard lock(mutex_);
        return detail_.empty() ? store_.last_error_detail() : detail_;
    }

private:
    checkpoint::store& store_;
    std::function<std::string(std::chrono::milliseconds)> cluster_of_;
    mutable std::mutex mutex_;
    bool recorded_;
    std::string detail_;
};

// Checkpoints are only valid for the Kafka cluster that acknowledged them.
// Compares the cluster the store remembers with the one connected now and
// acts by policy. Returns false (after logging why) when the bridge must not
// start.
bool check_kafka_cluster(checkpoint::store& store, std::string const& cluster, std::string const& policy) {
    auto const stored = store.get_meta("kafka_cluster_id");
    if (stored && *stored == cluster) {
        return true;
    }
    auto const positions = store.list();
    if (stored && !positions.empty()) {
        if (policy == "refuse") {
            spdlog::error("the checkpoints in {} were acknowledged by Kafka cluster {}, but the brokers given are "
                          "cluster {}: the records they cover are not in this cluster. Refusing to start. Choose: "
                          "--kafka-cluster-change=restart publishes every database from the start again into this "
                          "cluster; --kafka-cluster-change=keep trusts the positions (only if the topics were "
                          "mirrored from {} to {})",
                          store.dir(), *stored, cluster, *stored, cluster);
            return false;
        }
        if (policy == "restart") {
            for (auto const& [k, pos] : positions) {
                if (auto ec = store.erase(k)) {
                    throw std::runtime_error("cannot drop the checkpoint of " + k.database + ": " + ec.message());
                }
            }
            spdlog::warn("Kafka cluster changed from {} to {} (--kafka-cluster-change=restart): dropped {} "
                         "checkpoint(s); every database starts again as if new",
                         *stored, cluster, positions.size());
        } else {
            spdlog::warn("Kafka cluster changed from {} to {} (--kafka-cluster-change=keep): keeping {} "
                         "checkpoint(s); records they cover must already be in the new cluster",
                         *stored, cluster, positions.size());
        }
    } else if (!stored && !positions.empty()) {
        spdlog::warn("the checkpoints in {} carry no Kafka cluster id (written by an earlier version): adopting "
                     "them for cluster {}",
                     store.dir(), cluster);
    }
    if (auto ec = store.put_meta("kafka_cluster_id", cluster)) {
        throw std::runtime_error("cannot record the Kafka cluster id in " + store.dir() + ": " + ec.message());
    }
    return true;
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
    if (cfg.databases.empty() && cfg.db_patterns.empty()) {
        spdlog::warn("no --db given: following only the databases the admin API added (PUT /databases/NAME); "
                     "give --db NAME (repeatable) or COUCH_BRIDGE_DB=a,b");
    }
    asio::io_context ioc;
    auto work = asio::make_work_guard(ioc);
    metrics::registry registry;
    metrics::register_process_metrics(registry);
    metrics::register_build_info(registry, {{"version", common::version},
                                            {"librdkafka", kafka::librdkafka_version()},
                                            {"rocksdb", checkpoint::rocksdb_version()}});

    // Everything that can fail at startup fails here, before any feed opens.
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    std::unique_ptr<throwaway_dir> scratch;
    std::unique_ptr<kafka::embedded_cluster> embedded;
    std::unique_ptr<kafka::producer> producer;
    std::unique_ptr<checkpoint::store> store;
    std::unique_ptr<checkpoint::kafka_store> kafka_positions; // --checkpoint-store kafka
    std::unique_ptr<kafka::presence> running_mark;            // ... and the group that says it is in use
    bool const exactly_once = cfg.delivery == "exactly-once";
    std::optional<router> routes;
    std::unique_ptr<metrics::http_server> http;
    std::function<std::string(std::chrono::milliseconds)> cluster_of; // the connected cluster's id ("" unknown)
    std::string cluster;                                                 // verified at startup, if it had to be
    try {
        if (!cfg.group.empty() && cfg.checkpoint_store != "kafka") {
            throw std::invalid_argument("--group needs --checkpoint-store kafka: a database's next owner reads its "
                                        "checkpoint from the topic");
        }
        if (!cfg.group.empty() && exactly_once) {
            throw std::invalid_argument("--group with --delivery exactly-once is not supported yet (it needs one "
                                        "transactional producer per assignment partition); use at-least-once");
        }
        if (exactly_once && cfg.checkpoint_store != "kafka") {
            throw std::invalid_argument("--delivery exactly-once needs --checkpoint-store kafka: the checkpoints are "
                                        "written in the same Kafka transaction as the records");
        }
        routing_options ropts;
        ropts.default_topic = cfg.default_topic;
        ropts.route_design_docs = cfg.route_design_docs;
        ropts.route_missing_doc_type = cfg.route_missing_doc_type;
        routes.emplace(router::from_spec(cfg.routing, ropts));

        std::string checkpoint_dir = cfg.checkpoint_dir;
        if (cfg.kafka_brokers == "embedded" && !cfg.checkpoint_dir_given) {
            scratch = std::make_unique<throwaway_dir>();
            checkpoint_dir = scratch->path();
            spdlog::info("embedded Kafka: checkpoints go to the throw-away directory {} (removed at exit), since "
                         "the embedded cluster's records vanish with the process; give --checkpoint-dir to keep them",
                         checkpoint_dir);
        }
        store = checkpoint::store::open(checkpoint_dir);

        kafka::producer_config pcfg;
        if (cfg.kafka_brokers == "embedded") {
            embedded = std::make_unique<kafka::embedded_cluster>(1);
            pcfg.bootstrap_servers = embedded->bootstrap_servers(); // the cluster logs its own address
        } else {
            pcfg.bootstrap_servers = cfg.kafka_brokers;
        }
        pcfg.properties = kafka_client_properties(cfg);
        if (exactly_once) {
            pcfg.transactional_id = transactional_id(cfg, checkpoint_source(cfg));
        }
        producer = std::make_unique<kafka::producer>(ioc.get_executor(), pcfg, registry);
        if (cfg.create_topics) {
            auto topics = routes->known_topics();
            if (cfg.on_unpublishable == "dlq") {
                topics.push_back(cfg.dlq_topic);
            }
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

        if (cfg.checkpoint_store == "kafka") {
            // The positions live in the cluster whose records they cover, so
            // the cluster-id check of the RocksDB store has nothing to do.
            kafka_positions =
                open_kafka_checkpoints(cfg, *producer, embedded.get(), pcfg.bootstrap_servers, *store);
            auto& skipped = registry.add_counter("couch_bridge_checkpoint_records_skipped_total",
                                                 "Records of the checkpoint topic that did not decode (foreign or "
                                                 "corrupt), skipped at startup");
            skipped.inc(static_cast<double>(kafka_positions->loaded().skipped));
            if (!cfg.group.empty()) {
                auto const topic = assignment_topic(cfg);
                if (embedded) {
                    embedded->create_topic(topic, cfg.assignment_partitions);
                } else if (!producer->missing_topics({topic}, std::chrono::seconds(30)).empty()) {
                    if (auto ec = producer->create_topics({topic}, cfg.assignment_partitions, cfg.topic_replication,
                                                          std::chrono::seconds(30))) {
                        throw std::runtime_error("cannot create the assignment topic " + topic + ": " + ec.message());
                    }
                }
            }
            if (!embedded) {
                running_mark = std::make_unique<kafka::presence>(kafka::presence_config{
                    pcfg.bootstrap_servers, pcfg.properties, checkpoint_owner_group(cfg), cfg.checkpoint_topic});
            }
        }

        // Checkpoints are trusted only for the Kafka cluster that
        // acknowledged them. A store that holds positions waits here until
        // the brokers tell their cluster id, and is checked against it; an
        // empty one starts at once and records the id with its first write
        // (an acknowledgement implies the metadata that carries the id).
        std::string const embedded_suffix =
            embedded ? "-" + std::to_string(std::random_device{}()) + std::to_string(std::random_device{}()) : "";
        cluster_of = [&producer, embedded_suffix, is_embedded = embedded != nullptr](std::chrono::milliseconds t) {
            auto id = producer->cluster_id(t);
            // The mock cluster's id is fixed, but every embedded cluster is a
            // new one whose records vanish at exit: make its id unique.
            return id.empty() || !is_embedded ? id : "embedded-" + id + embedded_suffix;
        };
        if (!kafka_positions && !store->list().empty()) {
            int startup_signal = 0;
            signals.async_wait([&](boost::system::error_code ec, int sig) {
                if (!ec) {
                    startup_signal = sig;
                }
            });
            auto const wait_started = std::chrono::steady_clock::now();
            for (int attempt = 0; cluster.empty(); ++attempt) {
                cluster = cluster_of(std::chrono::seconds(2));
                ioc.poll();
                if (startup_signal != 0) {
                    spdlog::info("signal {} before startup finished: stopping", startup_signal);
                    return 0;
                }
                if (cluster.empty() && attempt % 5 == 4) {
                    spdlog::warn("still waiting for the Kafka cluster id from {} ({} s) before trusting the "
                                 "checkpoints: are the brokers reachable?",
                                 embedded ? std::string("the embedded cluster") : cfg.kafka_brokers,
                                 std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                                  wait_started)
                                     .count());
                }
            }
            signals.cancel();
            ioc.poll();
            ioc.restart();
            spdlog::info("Kafka cluster id {}", cluster);
            if (!check_kafka_cluster(*store, cluster, cfg.kafka_cluster_change)) {
                return 2;
            }
        }
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}",
                      common::redact_secret(common::redact_secret(e.what(), cfg.couch_password),
                                            cfg.kafka_sasl_password));
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

    // The checkpoint writer: RocksDB (bound to the Kafka cluster), the Kafka
    // topic, or the exactly-once transaction. The last two block on the
    // network, so their flusher runs on a thread of its own.
    cluster_bound_writer rocksdb_writer(*store, cluster_of, cluster);
    fleet* running_fleet = nullptr; // set once the fleet exists (the transaction hooks need it)
    checkpoint::flusher* flusher_ptr = nullptr;
    std::unique_ptr<transaction_writer> txn_writer;
    if (exactly_once) {
        transaction_writer::hooks hooks;
        hooks.in_flight = [&running_fleet] { return running_fleet != nullptr ? running_fleet->in_flight() : 0; };
        hooks.rewind_all = [&running_fleet](std::function<void()> done) {
            if (running_fleet != nullptr) {
                running_fleet->rewind_all_to_durable(std::move(done));
            } else {
                done();
            }
        };
        hooks.discard_dirty = [&flusher_ptr] {
            if (flusher_ptr != nullptr) {
                flusher_ptr->discard_dirty();
            }
        };
        hooks.on_fatal = [tid = transactional_id(cfg, checkpoint_source(cfg))](std::string const& why) {
            spdlog::critical("exactly-once: the Kafka producer failed for good ({}). If another bridge with "
                             "transactional id '{}' started, it has taken over and this one was fenced. Exiting "
                             "without writing anything else; records not committed are invisible to read_committed "
                             "consumers and will be published by the bridge that resumes from the checkpoints",
                             why, tid);
            spdlog::default_logger()->flush();
            ::_exit(3);
        };
        txn_writer = std::make_unique<transaction_writer>(*producer, *kafka_positions, std::move(hooks), registry,
                                                          std::chrono::seconds(60));
    }
    checkpoint::position_writer& writer = txn_writer          ? static_cast<checkpoint::position_writer&>(*txn_writer)
                                          : kafka_positions ? static_cast<checkpoint::position_writer&>(*kafka_positions)
                                                            : rocksdb_writer;
    checkpoint::positions& positions = kafka_positions ? static_cast<checkpoint::positions&>(*kafka_positions)
                                                       : static_cast<checkpoint::positions&>(*store);
    std::optional<asio::thread_pool> committer;
    if (kafka_positions) {
        committer.emplace(1);
    }
    checkpoint::flusher flusher(committer ? asio::any_io_executor(committer->get_executor()) : asio::any_io_executor(ioc.get_executor()), writer,
                                exactly_once ? cfg.commit_interval : cfg.checkpoint_interval, registry,
                                common::version);
    flusher_ptr = &flusher;

    couch::client_config client;
    client.url = cfg.couch_url;
    client.user = cfg.couch_user;
    client.password = cfg.couch_password;
    client.auth = cfg.couch_auth == "cookie" ? couch::client_config::auth_mode::cookie
                                             : couch::client_config::auth_mode::basic;
    client.ca_file = cfg.couch_ca_file;
    client.tls_verify = cfg.couch_tls_verify;

    publish_options publishing;
    publishing.payload = parse_payload_mode(cfg.payload);
    publishing.on_unpublishable = parse_unpublishable_policy(cfg.on_unpublishable);
    publishing.dlq_topic = cfg.dlq_topic;
    publishing.include_doc_types = cfg.include_doc_types;
    publishing.exclude_doc_types = cfg.exclude_doc_types;

    auto const source = checkpoint_source(cfg);
    couch::source_options sopts;
    sopts.max_connecting = static_cast<std::size_t>(cfg.couch_max_connecting);
    auto const couch_source = std::make_shared<couch::source>(common::redact_url(cfg.couch_url), sopts, registry);
    couch::feed_options feed_template;
    feed_template.keep_doc_text = publishing.payload != payload_mode::stub;
    feed_template.on_recreate = cfg.on_recreate == "fail" ? couch::feed_options::recreate_policy::fail
                                                          : couch::feed_options::recreate_policy::restart;
    feed_template.heartbeat = cfg.couch_heartbeat;
    feed_template.read_coalesce = cfg.couch_read_coalesce;
    try {
        feed_template.selector = selector_text(cfg.selector);
        feed_template.doc_ids = read_doc_ids(cfg.doc_ids_file);
        feed_template.filter = cfg.filter;
        int const kinds = !feed_template.selector.empty() + !feed_template.doc_ids.empty() + !cfg.filter.empty();
        if (kinds > 1) {
            throw std::invalid_argument("give at most one of --selector, --doc-ids and --filter");
        }
        if (!cfg.filter.empty() && cfg.filter.find('/') == std::string::npos) {
            throw std::invalid_argument("--filter must be ddoc/name, not '" + cfg.filter + "'");
        }
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return 2;
    }
    std::unique_ptr<group_ownership> group;
    std::function<bool(std::string const&)> owns;
    std::function<bool()> may_publish;
    if (!cfg.group.empty()) {
        group = std::make_unique<group_ownership>(source, cfg.assignment_partitions);
        owns = [g = group.get()](std::string const& db) { return g->owns(db); };
        may_publish = [g = group.get()] { return g->may_publish(); };
    }
    fleet databases(fleet::dependencies{ioc.get_executor(), client, couch_source, source, cfg.initial_since,
                                        window_limits{cfg.max_in_flight, cfg.max_in_flight_bytes}, feed_template,
                                        pipeline::dependencies{*producer, *routes, flusher, registry, publishing,
                                                               cfg.deletion_memory ? store.get() : nullptr,
                                                               may_publish},
                                        *store, positions, owns,
                                        std::make_shared<couch::client>(ioc.get_executor(), client, couch_source,
                                                                        &registry),
                                        static_cast<std::size_t>(cfg.max_open_feeds), cfg.idle_close});
    running_fleet = &databases;
    register_admin_api(*http, databases, cfg.admin_token);
    // Discovery (--db-pattern) reports databases found and gone to the fleet.
    std::unique_ptr<discovery> finder;
    if (!cfg.db_patterns.empty()) {
        try {
            discovery_options dopts;
            dopts.patterns = cfg.db_patterns;
            dopts.exclude_patterns = cfg.exclude_db_patterns;
            dopts.interval = cfg.discovery_interval;
            dopts.heartbeat = cfg.couch_heartbeat;
            dopts.source_name = source;
            finder = std::make_unique<discovery>(
                ioc.get_executor(), client, dopts,
                discovery_hooks{[&databases](std::string const& db, bool live) { databases.found(db, live); },
                                [&databases](std::string const& db) { databases.gone(db); },
                                [&databases](std::string const& db) { databases.updated(db); },
                                [&databases](bool on) { databases.set_change_events(on); }},
                *store, positions, registry, databases.couch_client());
        } catch (std::exception const& e) {
            spdlog::error("startup failed: {}", e.what());
            return 2;
        }
    }
    http->handle("/healthz", [] { return metrics::http_response{200, "text/plain; charset=utf-8", "ok\n"}; });
    http->handle("/readyz", [&databases, &flusher, &producer] {
        std::string not_ready;
        if (auto k = producer->health(); !k.ready) {
            not_ready += "kafka: cannot reach the cluster (" + k.last_error + ")\n";
        }
        for (auto const& s : databases.statuses()) {
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
    http->handle("/status", [&databases, &flusher, &couch_source, &producer, &cfg, &group, &finder] {
        boost::json::object root;
        root["version"] = common::version;
        root["source"] = source_json(*couch_source);
        root["discovery"] = finder ? boost::json::value(finder->status()) : boost::json::value(nullptr);
        auto k = producer->health();
        root["kafka"] = {{"ready", k.ready},
                         {"last_error", k.last_error.empty() ? boost::json::value(nullptr)
                                                             : boost::json::value(k.last_error)}};
        root["delivery"] = cfg.delivery;
        if (group) {
            boost::json::array parts;
            for (auto p : group->partitions()) {
                parts.emplace_back(p);
            }
            root["group"] = {{"name", cfg.group},
                             {"member_id", group->member_id()},
                             {"partitions", std::move(parts)},
                             {"rebalances", group->rebalances()}};
        }
        root["checkpoint_store"] = cfg.checkpoint_store;
        root["databases"] = status_json(databases.statuses());
        boost::json::array idle; // followed, feed closed until they change (--max-open-feeds)
        for (auto& db : databases.idle_databases()) {
            idle.emplace_back(std::move(db));
        }
        root["idle"] = std::move(idle);
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
    asio::co_spawn(committer ? asio::any_io_executor(committer->get_executor()) : asio::any_io_executor(ioc.get_executor()),
                   flusher.run(), asio::detached);
    try {
        databases.start(cfg.databases);
        if (group) {
            group->start(cfg, embedded ? embedded->bootstrap_servers() : cfg.kafka_brokers, databases,
                         *kafka_positions, flusher, registry);
        }
        if (finder) {
            finder->start();
        }
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return 2;
    }
    spdlog::info("couch-kafka-bridge {} following {} database(s) of {}; metrics on http://{}:{}/metrics",
                 common::version, databases.statuses().size(), common::redact_url(cfg.couch_url),
                 cfg.http_listen.substr(0, cfg.http_listen.rfind(':')), http->port());

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
                for (auto const& s : databases.statuses()) {
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
                asio::steady_timer t(ioc);
                if (finder) {
                    finder->stop(); // first: it must not start pipelines any more
                    for (int i = 0; i < 250 && !finder->stopped(); ++i) {
                        t.expires_after(std::chrono::milliseconds(20));
                        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                    }
                }
                databases.stop_all();
                std::size_t in_flight = databases.in_flight();
                spdlog::info("signal {}: stopping; waiting up to {} ms for {} in-flight record(s)", sig,
                             cfg.shutdown_timeout.count(), in_flight);
                auto deadline = std::chrono::steady_clock::now() + cfg.shutdown_timeout;
                for (;;) {
                    in_flight = databases.in_flight();
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

    // One thread by default: librdkafka and RocksDB have threads of their
    // own, and at a real CouchDB's pace a second event-loop thread mostly
    // hands rows and delivery reports across threads (docs/BENCHMARKS.md,
    // "one event-loop thread": 3.4 -> 1.1 context switches per change).
    unsigned const n_threads = cfg.io_threads > 0 ? static_cast<unsigned>(cfg.io_threads)
                                                  : std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < n_threads; ++i) {
        threads.emplace_back([&ioc] { ioc.run(); });
    }
    ioc.run();
    for (auto& t : threads) {
        t.join();
    }
    // Leaving the group revokes this member's partitions through the fleet:
    // before the fleet goes.
    group.reset();
    if (committer) {
        committer->join(); // the flusher's loop ended with flusher.stop()
    }
    running_fleet = nullptr;
    // The producer goes first: anything it still holds completes into the
    // stopped io_context and is discarded there (never reported as delivered).
    producer.reset();
    embedded.reset();
    spdlog::info("stopped (exit {})", exit_code);
    return exit_code;
}

} // namespace bridge
