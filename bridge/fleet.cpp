#include "bridge/fleet.hpp"
#include "bridge/fleet_entry.hpp"

#include "checkpoint/store.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

#include <functional>
#include <regex>
#include <thread>
#include <unistd.h>

namespace asio = boost::asio;
namespace json = boost::json;

namespace bridge {

std::string instance_name() {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    return std::string(host) + ":" + std::to_string(::getpid());
}

namespace {

std::vector<std::string> strings_of(json::value const& v) {
    std::vector<std::string> out;
    for (auto const& x : v.as_array()) {
        out.emplace_back(x.as_string());
    }
    return out;
}

} // namespace

fleet::fleet(dependencies deps)
    : deps_(std::move(deps)), probe_(std::make_unique<probe>(deps_.pipe.registry)) {
    if (!deps_.couch) {
        deps_.couch = std::make_shared<couch::client>(deps_.pool, deps_.client, deps_.source, &deps_.pipe.registry);
    }
}

fleet::~fleet() {
    // A poll of an idle database (fleet_idle.cpp) refers to the fleet until
    // it completes; its request ends within 10 s.
    stopping_ = true;
    for (int i = 0; i < 1100 && polls_->load() > 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

bool fleet::valid_database_name(std::string const& name) {
    // CouchDB's rule; system databases (leading '_') are not followed here.
    static std::regex const re("^[a-z][a-z0-9_$()+/-]*$");
    return name.size() <= 238 && std::regex_match(name, re);
}

void fleet::start(std::vector<std::string> const& flag_databases) {
    std::lock_guard lock(mutex_);
    flag_databases_ = flag_databases;
    if (auto saved = deps_.store.get_meta("fleet")) {
        boost::system::error_code ec;
        auto v = json::parse(*saved, ec);
        if (ec || !v.is_object()) {
            spdlog::warn("fleet: the admin API state in the checkpoint store is unreadable ({}); ignoring it",
                         ec ? ec.message() : std::string("not an object"));
        } else {
            for (auto const& [name, val] : v.as_object()) {
                auto const* st = val.is_object() ? val.as_object().if_contains("state") : nullptr;
                if (st == nullptr || !st->is_string()) {
                    continue;
                }
                auto e = std::make_unique<entry>();
                e->db = std::string(name);
                e->desired = std::string(st->as_string());
                e->from_api = true;
                if (auto const* opts = val.as_object().if_contains("options");
                    opts != nullptr && opts->is_object() && check_database_options(opts->as_object()).empty()) {
                    e->options = opts->as_object();
                }
                entries_[e->db] = std::move(e);
            }
        }
    }
    load_deleted_locked();
    for (auto const& db : flag_databases) {
        auto& e = entries_[db];
        if (!e) {
            e = std::make_unique<entry>();
            e->db = db;
        }
        e->from_flag = true;
        if (e->desired == "removed") {
            e->desired = "following"; // flags apply on top of the API's removals
        }
    }
    for (auto& [name, e] : entries_) {
        if (e->desired == "following" && !e->p) {
            start_pipeline_locked(*e, std::nullopt);
        } else if (e->desired == "deleted") {
            spdlog::info("db {}: deleted on the server (recorded), its checkpoint kept", name);
        } else {
            spdlog::info("db {}: {} through the admin API (kept across restarts)", name, e->desired);
        }
    }
    asio::co_spawn(deps_.pool, reaper(), asio::detached);
}

void fleet::start_pipeline_locked(entry& e, std::optional<std::string> start_kind) {
    if (deps_.owns && !deps_.owns(e.db)) {
        spdlog::debug("db {}: owned by another member of the group; not started here", e.db);
        return;
    }
    if (deps_.max_open_feeds > 0 && open_feeds_locked() >= deps_.max_open_feeds) {
        // The cap is reached: the reaper opens it when a place frees.
        e.idle = true;
        e.wake = true;
        e.wake_kind = std::move(start_kind);
        woken_since_round_ = true;
        spdlog::info("db {}: waiting for one of the {} open feeds (--max-open-feeds)", e.db, deps_.max_open_feeds);
        return;
    }
    launch_pipeline_locked(e, std::move(start_kind));
}

void fleet::launch_pipeline_locked(entry& e, std::optional<std::string> start_kind) {
    e.idle = false;
    e.wake = false;
    e.wake_kind.reset();
    e.opened_at = std::chrono::system_clock::now();
    e.rows_when_caught_up.reset();
    checkpoint::key key{deps_.source_name, e.db};
    auto pos = deps_.positions.get(key);
    transaction_unit unit{&deps_.pipe.producer, &deps_.pipe.flusher};
    if (deps_.unit_of) {
        unit = deps_.unit_of(e.db);
        if (unit.producer == nullptr || unit.flusher == nullptr) {
            spdlog::info("db {}: the transaction of its assignment partition is not open here; not started", e.db);
            return;
        }
    }
    couch::feed_options fo = deps_.feed;
    fo.database = e.db;
    pipeline::dependencies pipe{*unit.producer,     deps_.pipe.routes, *unit.flusher,         deps_.pipe.registry,
                                deps_.pipe.options, deps_.pipe.memory, deps_.pipe.may_publish,
                                deps_.unit_of ? nullptr : deps_.pipe.catch_up};
    if (auto const* v = e.options.if_contains("selector"); v || e.options.contains("doc_ids") ||
                                                           e.options.contains("filter")) {
        // A per-database server filter replaces the process-wide one.
        fo.selector = v ? json::serialize(*v) : std::string();
        fo.doc_ids = e.options.contains("doc_ids") ? strings_of(e.options.at("doc_ids")) : std::vector<std::string>{};
        fo.filter = e.options.contains("filter") ? std::string(e.options.at("filter").as_string()) : std::string();
    }
    if (auto const* v = e.options.if_contains("include_doc_types")) {
        pipe.options.include_doc_types = strings_of(*v);
    }
    if (auto const* v = e.options.if_contains("exclude_doc_types")) {
        pipe.options.exclude_doc_types = strings_of(*v);
    }
    std::optional<std::string> start;
    if (pos) {
        fo.since = couch::since::from(couch::seq::from_raw_json(pos->seq_json));
        start = pos->seq_json;
        unit.flusher->restore(key, *pos);
        spdlog::info("db {}: resuming from checkpoint {}", e.db, pos->seq_json);
    } else {
        auto const kind = start_kind.value_or(deps_.initial_since);
        fo.since = kind == "now" ? couch::since::now() : couch::since::beginning();
        spdlog::info("db {}: no checkpoint, starting from since={}", e.db, kind);
    }
    e.p = std::make_unique<pipeline>(deps_.pool, deps_.couch, std::move(fo), key, start, deps_.window, pipe);
    e.done = std::make_shared<std::atomic<bool>>(false);
    e.stopping = false;
    probe_->followed.inc();
    auto* raw = e.p.get();
    asio::co_spawn(raw->strand(), raw->run(), [raw, done = e.done, db = e.db](std::exception_ptr ex) {
        if (ex) {
            try {
                std::rethrow_exception(ex);
            } catch (std::exception const& err) {
                spdlog::critical("db {}: pipeline stopped by an unexpected error: {}", db, err.what());
            }
        }
        done->store(true);
        (void)raw;
    });
}

void fleet::stop_pipeline_locked(entry& e) {
    if (e.p && !e.stopping) {
        e.p->stop();
        e.stopping = true;
    }
}

// Ends pipelines that were asked to stop once nothing refers to them, and
// starts the next one where a resume or a rewind asked for it.
asio::awaitable<void> fleet::reaper() {
    asio::steady_timer t(deps_.pool);
    for (unsigned round = 0; !stopping_; ++round) {
        t.expires_after(std::chrono::milliseconds(100));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        std::lock_guard lock(mutex_);
        if (stopping_) {
            break;
        }
        if (round % 10 == 0) {
            refresh_gauges_locked();
        }
        // Once a second, and at the next tick after an `updated` event woke
        // an idle database, so that its change waits for a tick (100 ms)
        // rather than a round.
        if (deps_.max_open_feeds > 0 && (round % 10 == 5 || woken_since_round_)) {
            manage_open_feeds_locked(round % 10 == 5);
        }
        for (auto& [name, e] : entries_) {
            if (e->p) {
                if (!e->stopping || !e->done->load() || !e->p->quiescent()) {
                    continue;
                }
                e->last_checkpoint = e->p->status().checkpoint_seq;
                e->p.reset();
                e->stopping = false;
                spdlog::info("db {}: pipeline stopped ({})", name,
                             e->idle                   ? std::string("idle")
                             : e->desired == "following" ? std::string("to restart it")
                                                         : e->desired);
                if (e->idle && !e->rewind_to) {
                    continue; // opened again when it changes (fleet_idle.cpp)
                }
            } else if (!e->rewind_to) {
                continue; // nothing pending (a retry of a failed rewind write comes here)
            }
            if (e->desired != "following") {
                continue;
            }
            if (deps_.owns && !deps_.owns(name)) {
                // Group mode: only the owner writes a rewind target (here it
                // would race the owner's checkpoints, and applied later, when
                // the database moves here, it would replay it again).
                if (e->rewind_to) {
                    spdlog::info("db {}: rewind to {} left to the instance that owns it", name, *e->rewind_to);
                    e->rewind_to.reset();
                }
                continue;
            }
            std::optional<std::string> kind;
            if (e->rewind_to) {
                auto target = *std::exchange(e->rewind_to, std::nullopt);
                checkpoint::key key{deps_.source_name, name};
                // The old pipeline's last position first, then the target over it.
                auto& flusher = flusher_for(name);
                auto ec = flusher.flush_now();
                if (!ec) {
                    if (target == "0" || target == "now") {
                        ec = deps_.positions.erase(key);
                        kind = target;
                    } else {
                        flusher.update(key, target);
                        ec = flusher.flush_now();
                    }
                }
                if (ec) {
                    spdlog::error("db {}: cannot store the rewind target {}: {}; retrying", name, target, ec.message());
                    e->rewind_to = target; // the next round tries again
                    continue;
                }
                spdlog::info("db {}: rewound to {} (stored)", name, target);
            }
            try {
                start_pipeline_locked(*e, kind);
            } catch (std::exception const& err) {
                spdlog::error("db {}: cannot start: {}", name, err.what());
            }
        }
    }
}

void fleet::persist_locked() {
    json::object o;
    for (auto const& [name, e] : entries_) {
        if (e->from_api) {
            json::object saved{{"state", e->desired}};
            if (!e->options.empty()) {
                saved["options"] = e->options;
            }
            o[name] = std::move(saved);
        }
    }
    if (auto ec = deps_.store.put_meta("fleet", json::serialize(o))) {
        throw std::runtime_error("the change is in effect but could not be recorded in the checkpoint store: " +
                                 ec.message());
    }
    persist_deleted_locked();
}

std::string fleet::describe_all(std::function<std::string(std::string const&)> const& owner_of) const {
    std::lock_guard lock(mutex_);
    json::object dbs;
    auto const owner = instance_name();
    for (auto const& [name, e] : entries_) {
        json::object o;
        std::string checkpoint_seq;
        std::string last_seq;
        std::string state = e->desired;
        if (e->p) {
            auto s = e->p->status();
            state = e->stopping ? std::string("stopping") : s.state;
            checkpoint_seq = s.checkpoint_seq;
            last_seq = s.last_seq_read;
        } else if (!e->last_checkpoint.empty()) {
            checkpoint_seq = e->last_checkpoint;
        } else if (auto pos = deps_.positions.get(checkpoint::key{deps_.source_name, name})) {
            checkpoint_seq = pos->seq_json;
        }
        // --max-open-feeds: whether the database has a feed open, or is
        // idle (its feed closed until it changes) and perhaps woken
        // (changed, waiting for a place), as /status's `idle` list says.
        char const* feed = "none";
        if (e->p) {
            feed = "open";
        } else if (e->idle && e->desired == "following") {
            state = "idle";
            feed = e->wake ? "waking" : "idle";
        }
        o["state"] = state;
        o["feed"] = feed;
        o["desired"] = e->desired;
        o["seq"] = last_seq.empty() ? json::value(nullptr) : json::value(last_seq);
        o["checkpoint"] = checkpoint_seq.empty() ? json::value(nullptr) : json::value(checkpoint_seq);
        o["origin"] = e->from_flag ? "flag" : e->from_api ? "api" : e->from_discovery ? "discovery" : "api";
        if (e->desired == "deleted") {
            o["deleted_at"] = format_timestamp(std::chrono::system_clock::time_point(
                std::chrono::milliseconds(e->deleted_unix_ms)));
            if (checkpoint_seq.empty() && !e->deleted_checkpoint.empty()) {
                o["checkpoint"] = e->deleted_checkpoint;
            }
        }
        o["options"] = e->options;
        if (!deps_.owns || deps_.owns(name)) {
            o["owner"] = owner;
        } else {
            auto const other = owner_of ? owner_of(name) : std::string();
            o["owner"] = other.empty() ? json::value("another group member") : json::value(other);
        }
        dbs[name] = std::move(o);
    }
    return json::serialize(json::object{{"owner", owner}, {"databases", std::move(dbs)}}) + "\n";
}

std::vector<pipeline_status> fleet::statuses() const {
    std::lock_guard lock(mutex_);
    std::vector<pipeline_status> out;
    for (auto const& [name, e] : entries_) {
        if (e->p) {
            out.push_back(e->p->status());
            if (e->stopping) {
                out.back().state = "stopping";
                out.back().ready = true;
            }
        } else if ((e->desired == "paused" || e->desired == "deleted") && (!deps_.owns || deps_.owns(name))) {
            // Group mode: listed by the owner only (every member knows it).
            pipeline_status s;
            s.database = name;
            s.state = e->desired;
            s.checkpoint_seq = e->desired == "deleted" ? e->deleted_checkpoint : std::string();
            s.ready = true; // deliberately not running
            out.push_back(std::move(s));
        }
    }
    return out;
}

checkpoint::flusher& fleet::flusher_for(std::string const& db) const {
    if (deps_.unit_of) {
        if (auto unit = deps_.unit_of(db); unit.flusher != nullptr) {
            return *unit.flusher;
        }
    }
    return deps_.pipe.flusher;
}

std::size_t fleet::in_flight(database_filter const& which) const {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (auto const& [name, e] : entries_) {
        if (e->p && (!which || which(name))) {
            n += e->p->in_flight();
        }
    }
    return n;
}

void fleet::rewind_all_to_durable(std::function<void()> done, database_filter const& which) {
    std::lock_guard lock(mutex_);
    std::vector<pipeline*> running;
    for (auto const& [name, e] : entries_) {
        if (e->p && (!which || which(name))) {
            running.push_back(e->p.get());
        }
    }
    if (running.empty()) {
        done();
        return;
    }
    auto left = std::make_shared<std::atomic<std::size_t>>(running.size());
    auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
    for (auto* p : running) {
        p->rewind_to_durable([left, shared_done] {
            if (left->fetch_sub(1) == 1) {
                (*shared_done)();
            }
        });
    }
}

std::vector<std::string> fleet::reassess() {
    std::lock_guard lock(mutex_);
    std::vector<std::string> stopping;
    if (stopping_) {
        return stopping;
    }
    for (auto& [name, e] : entries_) {
        bool const mine = !deps_.owns || deps_.owns(name);
        if (e->p && !mine) {
            spdlog::info("db {}: moved to another member of the group; stopping here", name);
            stop_pipeline_locked(*e);
            stopping.push_back(name);
        } else if (!e->p && mine && e->desired == "following") {
            spdlog::info("db {}: now owned by this member of the group", name);
            start_pipeline_locked(*e, std::nullopt);
        }
    }
    return stopping;
}

bool fleet::wait_stopped(std::vector<std::string> const& dbs, std::chrono::milliseconds timeout) const {
    auto const deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        bool running = false;
        {
            std::lock_guard lock(mutex_);
            for (auto const& db : dbs) {
                auto it = entries_.find(db);
                if (it != entries_.end() && it->second->p) {
                    running = true;
                }
            }
        }
        if (!running) {
            return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

void fleet::stop_all() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& [name, e] : entries_) {
        if (e->p) {
            e->p->stop();
        }
    }
}

} // namespace bridge
