// The fleet of pipelines and what acts on it: the CouchDB side of every
// feed, the group in group mode, the admin API, discovery and the status
// endpoints; their start, and the progress of catching up.

#include "bridge/app.hpp"
#include "bridge/app_parts.hpp"
#include "bridge/discovery.hpp"
#include "bridge/group.hpp"
#include "bridge/group_commands.hpp"
#include "bridge/group_transactions.hpp"
#include "bridge/status_api.hpp"
#include "checkpoint/kafka_store.hpp"
#include "common/redact.hpp"
#include "common/version.hpp"
#include "couch/source.hpp"
#include "kafka/producer.hpp"
#include "metrics/http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <stdexcept>
#include <unordered_map>

namespace asio = boost::asio;

namespace bridge {

fleet_side::fleet_side() = default;
fleet_side::~fleet_side() = default;

namespace {

publish_options publish_options_of(config const& cfg) {
    publish_options publishing;
    publishing.payload = parse_payload_mode(cfg.payload);
    publishing.on_unpublishable = parse_unpublishable_policy(cfg.on_unpublishable);
    publishing.dlq_topic = cfg.dlq_topic;
    publishing.include_doc_types = cfg.include_doc_types;
    publishing.exclude_doc_types = cfg.exclude_doc_types;
    return publishing;
}

std::shared_ptr<couch::source> open_couch_source(config const& cfg, metrics::registry& registry) {
    couch::source_options sopts;
    sopts.max_connecting = static_cast<std::size_t>(cfg.couch_max_connecting);
    return std::make_shared<couch::source>(common::redact_url(cfg.couch_url), sopts, registry);
}

// The template of every feed. Throws std::invalid_argument for flags that
// do not go together or a value that does not parse.
couch::feed_options feed_template_of(config const& cfg, publish_options const& publishing) {
    couch::feed_options feed_template;
    feed_template.keep_doc_text = publishing.payload != payload_mode::stub;
    feed_template.on_recreate = cfg.on_recreate == "fail" ? couch::feed_options::recreate_policy::fail
                                                          : couch::feed_options::recreate_policy::restart;
    feed_template.heartbeat = cfg.couch_heartbeat;
    feed_template.read_coalesce = cfg.couch_read_coalesce;
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
    return feed_template;
}

// Group mode: the ownership of databases and, with exactly-once, the
// transactional producers of the assignment partitions. Before the fleet,
// which asks them whom a database belongs to.
void open_group(config const& cfg, metrics::registry& registry, kafka_side& k, fleet_side& f) {
    if (cfg.group.empty()) {
        return;
    }
    f.group = std::make_unique<group_ownership>(f.source, cfg.assignment_partitions);
    f.owns = [g = f.group.get()](std::string const& db) { return g->owns(db); };
    f.may_publish = [g = f.group.get()] { return g->may_publish(); };
    if (exactly_once(cfg)) {
        group_transactions_config gtc;
        gtc.bootstrap_servers = k.brokers;
        gtc.properties = kafka_client_properties(cfg);
        gtc.id_prefix = cfg.transactional_id.empty() ? cfg.group : cfg.transactional_id;
        gtc.source = f.source;
        gtc.partitions = cfg.assignment_partitions;
        gtc.commit_interval = cfg.commit_interval;
        gtc.bridge_version = common::version;
        f.group_txns = std::make_unique<group_transactions>(
            std::move(gtc), *k.started.positions, registry,
            [g = f.group.get()](std::int32_t p, std::string const&) { g->fenced(p); });
        f.unit_of = [t = f.group_txns.get()](std::string const& db) { return t->unit_of(db); };
    }
}

void open_fleet(config const& cfg, event_loop& ioc, metrics::registry& registry, kafka_side& k,
                checkpoint_side& c, fleet_side& f) {
    f.databases = std::make_unique<fleet>(fleet::dependencies{
        ioc.get_executor(), f.client, f.couch_source, f.source, cfg.initial_since,
        window_limits{cfg.max_in_flight, cfg.max_in_flight_bytes}, f.feed_template,
        pipeline::dependencies{*k.producer, *k.routes, c.flusher, registry, f.publishing,
                               cfg.deletion_memory ? &c.memory : nullptr, f.may_publish, k.catch_up_producer.get()},
        *k.store, c.positions, f.owns, f.unit_of,
        std::make_shared<couch::client>(ioc.get_executor(), f.client, f.couch_source, &registry),
        static_cast<std::size_t>(cfg.max_open_feeds), cfg.idle_close});
    c.running_fleet = f.databases.get();
    if (f.group_txns) {
        f.group_txns->attach(*f.databases);
    }
}

// Group mode: the admin API of any instance acts for the group.
void open_group_commands(config const& cfg, metrics::registry& registry, kafka_side& k, fleet_side& f) {
    if (!f.group) {
        return;
    }
    group_commands_config gcc;
    gcc.bootstrap_servers = k.brokers;
    gcc.properties = kafka_client_properties(cfg);
    gcc.topic = command_topic(cfg);
    gcc.instance = instance_name();
    f.commands = std::make_unique<group_commands>(std::move(gcc), *f.databases, f.owns, registry);
    f.admin.commands = f.commands.get();
    f.admin.refresh_owners = [g = f.group.get()] { g->refresh_owners(); };
    f.admin.owner_of = [g = f.group.get()](std::string const& db) { return g->owner_of(db); };
}

// Discovery (--db-pattern) reports databases found and gone to the fleet.
// Throws std::invalid_argument (see discovery).
std::unique_ptr<discovery> open_discovery(config const& cfg, event_loop& ioc, metrics::registry& registry,
                                          kafka_side& k, checkpoint_side& c, fleet_side& f) {
    discovery_options dopts;
    dopts.patterns = cfg.db_patterns;
    dopts.exclude_patterns = cfg.exclude_db_patterns;
    dopts.interval = cfg.discovery_interval;
    dopts.heartbeat = cfg.couch_heartbeat;
    dopts.source_name = f.source;
    fleet& databases = *f.databases;
    return std::make_unique<discovery>(
        ioc.get_executor(), f.client, dopts,
        discovery_hooks{[&databases](std::string const& db, bool live) { databases.found(db, live); },
                        [&databases](std::string const& db) { databases.gone(db); },
                        [&databases](std::string const& db) { databases.updated(db); },
                        [&databases](bool on) { databases.set_change_events(on); }},
        *k.store, c.positions, registry, databases.couch_client());
}

// Every 5 s until `*stopping`: a line for every database catching up.
asio::awaitable<void> catch_up_progress(fleet const* databases, std::atomic<bool> const* stopping) {
    std::unordered_map<std::string, std::uint64_t> last_rows;
    asio::steady_timer t(co_await asio::this_coro::executor);
    constexpr int period_s = 5;
    while (!*stopping) {
        t.expires_after(std::chrono::seconds(period_s));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        if (*stopping) {
            break;
        }
        for (auto const& s : databases->statuses()) {
            auto& prev = last_rows[s.database];
            auto delta = s.rows_read - prev;
            prev = s.rows_read;
            if (s.state != "catching_up" || delta == 0) {
                continue;
            }
            double rate = static_cast<double>(delta) / period_s;
            if (s.pending && rate > 0) {
                spdlog::info("db {}: catching up: {} rows read, {} pending, {:.0f} rows/s, ETA {:.0f} s", s.database,
                             s.rows_read, *s.pending, rate, static_cast<double>(*s.pending) / rate);
            } else {
                spdlog::info("db {}: catching up: {} rows read, {:.0f} rows/s", s.database, s.rows_read, rate);
            }
        }
    }
}

} // namespace

couch::client_config couch_client_config(config const& cfg) {
    couch::client_config client;
    client.url = cfg.couch_url;
    client.user = cfg.couch_user;
    client.password = cfg.couch_password;
    client.auth = cfg.couch_auth == "cookie" ? couch::client_config::auth_mode::cookie
                                             : couch::client_config::auth_mode::basic;
    client.ca_file = cfg.couch_ca_file;
    client.tls_verify = cfg.couch_tls_verify;
    return client;
}

bool build_fleet_side(config const& cfg, event_loop& ioc, metrics::registry& registry, kafka_side& k,
                      checkpoint_side& c, starting_status const& starting, fleet_side& f) {
    f.client = couch_client_config(cfg);
    f.publishing = publish_options_of(cfg);
    f.source = checkpoint_source(cfg);
    f.couch_source = open_couch_source(cfg, registry);
    try {
        f.feed_template = feed_template_of(cfg, f.publishing);
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return false;
    }
    open_group(cfg, registry, k, f);
    open_fleet(cfg, ioc, registry, k, c, f);
    open_group_commands(cfg, registry, k, f);
    register_admin_api(*k.http, *f.databases, cfg.admin_token, f.admin);
    if (!cfg.db_patterns.empty()) {
        try {
            f.finder = open_discovery(cfg, ioc, registry, k, c, f);
        } catch (std::exception const& e) {
            spdlog::error("startup failed: {}", e.what());
            return false;
        }
    }
    register_status_endpoints(*k.http, status_sources{cfg, *f.databases, c.flusher, *f.couch_source, *k.producer,
                                                      f.group.get(), f.group_txns.get(), f.finder.get(),
                                                      [&starting] { return starting.get(); }});
    return true;
}

bool start_following(config const& cfg, metrics::registry& registry, kafka_side& k,
                     checkpoint_side& c, fleet_side& f) {
    asio::co_spawn(c.flusher_executor(), c.flusher.run(), asio::detached);
    try {
        f.databases->start(cfg.databases);
        if (f.group) {
            f.commands->start(); // the group's admin changes, before any database starts here
            f.group->start(cfg, k.brokers, *f.databases, *k.started.positions, c.flusher, registry, f.group_txns.get(),
                           [commands = f.commands.get()] { commands->reassess(); });
        }
        if (f.finder) {
            f.finder->start();
        }
    } catch (std::exception const& e) {
        spdlog::error("startup failed: {}", e.what());
        return false;
    }
    spdlog::info("couch-kafka-bridge {} following {} database(s) of {}; metrics on http://{}:{}/metrics",
                 common::version, f.databases->statuses().size(), common::redact_url(cfg.couch_url),
                 cfg.http_listen.substr(0, cfg.http_listen.rfind(':')), k.http->port());
    return true;
}

void report_catch_up_progress(event_loop& ioc, fleet const& databases, std::atomic<bool> const& stopping) {
    asio::co_spawn(ioc, catch_up_progress(&databases, &stopping), asio::detached);
}

} // namespace bridge
