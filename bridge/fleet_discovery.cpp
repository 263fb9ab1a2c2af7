// The fleet's side of database discovery: databases found and gone, their
// deletion records, and the fleet's metrics.
#include "bridge/fleet.hpp"
#include "bridge/fleet_entry.hpp"

#include "checkpoint/store.hpp"
#include "metrics/registry.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

#include <chrono>

namespace json = boost::json;

namespace bridge {

namespace {

constexpr char const* deleted_meta = "deleted_databases";

std::int64_t now_unix_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string when(std::int64_t unix_ms) {
    return format_timestamp(timestamp(std::chrono::milliseconds(unix_ms)));
}

} // namespace

fleet::probe::probe(metrics::registry& r)
    : registry(r),
      followed(r.add_counter("couch_bridge_databases_followed_total",
                             "Pipelines started: a database followed, resumed, rewound or re-created")),
      discovered(r.add_counter("couch_bridge_databases_discovered_total",
                               "Databases discovery found on the server (--db-pattern)")),
      removed_deleted(r.add_counter("couch_bridge_databases_removed_total",
                                    "Databases no longer followed, by reason", {{"reason", "deleted"}})),
      removed_api(r.add_counter("couch_bridge_databases_removed_total", "Databases no longer followed, by reason",
                                {{"reason", "admin_api"}})),
      idle_closed(r.add_counter("couch_bridge_feeds_idle_closed_total",
                                "Continuous feeds closed because their database was idle (--max-open-feeds)")),
      reopened(r.add_counter("couch_bridge_feeds_reopened_total", "Idle databases whose feed opened again")),
      polls(r.add_counter("couch_bridge_idle_polls_total", "Idle databases polled (GET /{db}) without _db_updates")) {
    for (std::size_t i = 0; i < states.size(); ++i) {
        by_state[i] = &r.add_gauge("couch_bridge_databases", "Databases the fleet knows, by state",
                                   {{"state", states[i]}});
    }
}

void fleet::refresh_gauges_locked() {
    std::array<double, probe::states.size()> n{};
    for (auto const& [name, e] : entries_) {
        std::string_view const state = e->p                                 ? (e->stopping ? "stopping" : "following")
                                        : e->idle && e->desired == "following" ? std::string_view("idle")
                                                                               : std::string_view(e->desired);
        for (std::size_t i = 0; i < n.size(); ++i) {
            if (state == probe::states[i]) {
                n[i] += 1;
            }
        }
    }
    for (std::size_t i = 0; i < n.size(); ++i) {
        probe_->by_state[i]->set(n[i]);
    }
}

// Startup: the deletion records become entries in state `deleted`, unless
// the admin API state already says what to do with the database.
void fleet::load_deleted_locked() {
    auto saved = deps_.store.get_meta(deleted_meta);
    if (!saved) {
        return;
    }
    boost::system::error_code ec;
    auto v = json::parse(*saved, ec);
    if (ec || !v.is_object()) {
        spdlog::warn("fleet: the deletion records in the checkpoint store are unreadable ({}); ignoring them",
                     ec ? ec.message() : std::string("not an object"));
        return;
    }
    for (auto const& [name, rec] : v.as_object()) {
        if (!rec.is_object()) {
            continue;
        }
        auto& slot = entries_[std::string(name)];
        if (!slot) {
            slot = std::make_unique<entry>();
            slot->db = std::string(name);
            slot->from_discovery = true;
        } else if (slot->desired != "deleted") {
            continue; // the admin API's word (paused, removed, following) wins
        }
        slot->desired = "deleted";
        auto const& o = rec.as_object();
        if (auto const* t = o.if_contains("deleted_unix_ms"); t != nullptr && t->is_int64()) {
            slot->deleted_unix_ms = t->as_int64();
        }
        if (auto const* c = o.if_contains("checkpoint"); c != nullptr && c->is_string()) {
            slot->deleted_checkpoint = std::string(c->as_string());
        }
    }
}

void fleet::persist_deleted_locked() {
    json::object o;
    for (auto const& [name, e] : entries_) {
        if (e->desired == "deleted") {
            o[name] = json::object{{"deleted_unix_ms", e->deleted_unix_ms},
                                   {"deleted_at", when(e->deleted_unix_ms)},
                                   {"checkpoint", e->deleted_checkpoint.empty() ? json::value(nullptr)
                                                                                : json::value(e->deleted_checkpoint)}};
        }
    }
    if (auto ec = deps_.store.put_meta(deleted_meta, json::serialize(o))) {
        throw std::runtime_error("the change is in effect but its deletion record could not be written to the "
                                 "checkpoint store: " +
                                 ec.message());
    }
}

void fleet::found(std::string const& db, bool live) {
    std::lock_guard lock(mutex_);
    if (stopping_) {
        return;
    }
    auto& slot = entries_[db];
    try {
        if (!slot) {
            slot = std::make_unique<entry>();
            slot->db = db;
            slot->from_discovery = true;
            probe_->discovered.inc();
            spdlog::info("db {}: discovered ({}); following it", db, live ? "created" : "found at startup");
            start_pipeline_locked(*slot, live ? std::optional<std::string>("0") : std::nullopt);
            return;
        }
        auto& e = *slot;
        if (e.desired != "deleted") {
            return; // followed already, or paused/removed through the admin API
        }
        auto const deleted_at = when(e.deleted_unix_ms);
        if (deps_.feed.on_recreate == couch::feed_options::recreate_policy::fail) {
            spdlog::error("db {}: deleted at {} and re-created: not following the new incarnation "
                          "(--on-recreate fail); to follow it from 0: POST /databases/{}/rewind?since=0",
                          db, deleted_at, db);
            return;
        }
        probe_->registry
            .add_counter("couch_bridge_databases_recreated_total",
                         "Databases found deleted and re-created under their name", {{"database", db}})
            .inc();
        spdlog::error("db {}: deleted at {} and re-created: following the new incarnation from 0 (the old "
                      "checkpoint {} is dropped; --on-recreate restart)",
                      db, deleted_at, e.deleted_checkpoint.empty() ? std::string("(none)") : e.deleted_checkpoint);
        e.desired = "following";
        e.deleted_unix_ms = 0;
        e.deleted_checkpoint.clear();
        e.rewind_to = "0"; // the reaper drops the checkpoint durably, then starts it
        stop_pipeline_locked(e);
        persist_locked();
    } catch (std::exception const& err) {
        spdlog::error("db {}: cannot follow it: {}", db, err.what());
    }
}

void fleet::gone(std::string const& db) {
    std::lock_guard lock(mutex_);
    if (stopping_) {
        return;
    }
    try {
        auto it = entries_.find(db);
        if (it == entries_.end()) {
            // Not followed in this run: deleted while the bridge was down?
            auto pos = deps_.positions.get(checkpoint::key{deps_.source_name, db});
            if (!pos) {
                return;
            }
            auto e = std::make_unique<entry>();
            e->db = db;
            e->from_discovery = true;
            e->desired = "deleted";
            e->deleted_unix_ms = now_unix_ms();
            e->deleted_checkpoint = pos->seq_json;
            entries_[db] = std::move(e);
            probe_->removed_deleted.inc();
            spdlog::warn("db {}: gone from the server while the bridge was down; recorded as deleted (checkpoint {} "
                         "kept)",
                         db, pos->seq_json);
            persist_locked();
            return;
        }
        auto& e = *it->second;
        if (e.from_flag || e.desired == "deleted" || e.desired == "removed") {
            return; // --db databases keep their own missing-database handling
        }
        std::string checkpoint_seq = e.p ? e.p->status().checkpoint_seq : e.last_checkpoint;
        if (checkpoint_seq.empty()) {
            if (auto pos = deps_.positions.get(checkpoint::key{deps_.source_name, db})) {
                checkpoint_seq = pos->seq_json;
            }
        }
        e.desired = "deleted";
        e.deleted_unix_ms = now_unix_ms();
        e.deleted_checkpoint = checkpoint_seq;
        e.rewind_to.reset();
        stop_pipeline_locked(e);
        probe_->removed_deleted.inc();
        spdlog::warn("db {}: deleted on the server; pipeline stopped, checkpoint {} kept", db,
                     checkpoint_seq.empty() ? std::string("(none)") : checkpoint_seq);
        persist_locked();
    } catch (std::exception const& err) {
        spdlog::error("db {}: {}", db, err.what());
    }
}

} // namespace bridge
