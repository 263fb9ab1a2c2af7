// --max-open-feeds and --idle-close: which databases keep a continuous feed
// when more are followed than the cap. The fleet decides here; a pipeline
// is only started (a normal-feed catch-up from its checkpoint, then a
// continuous feed) or stopped (its feed closed, its checkpoint kept).
//
// Once a second (step 2 alone also at the reaper's next tick, 100 ms,
// while databases wait to open), under the fleet's lock:
//  1. With more databases following than the cap, a caught-up feed
//     (state `following`) without a row for idle_close is closed: the
//     database becomes `idle`.
//  2. Idle databases that changed (`wake`: an `updated` event, a poll, or a
//     start that found the cap reached) open in round-robin order while
//     there is room; when there is none, each takes the place of the least
//     recently active caught-up feed: one that has had no row since it
//     caught up (it was opened for its catch-up, which is done: the initial
//     discovery of thousands of databases goes at the pace of their
//     catch-ups), or one open for a second at least (a feed with live
//     changes keeps its place that long, so that a busy fleet beyond the
//     cap does not close and reopen feeds at every tick).
//  3. Without `_db_updates` events, a few idle databases are polled
//     (GET /{db}) in round-robin order: an update_seq past the checkpoint
//     wakes the database.
#include "bridge/fleet.hpp"
#include "bridge/fleet_entry.hpp"

#include "couch/changes_feed.hpp" // url_encode
#include "metrics/registry.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

namespace bridge {

namespace asio = boost::asio;
namespace json = boost::json;
using clock_type = std::chrono::system_clock;

namespace {

// Idle databases polled per second (without _db_updates).
constexpr int polls_per_round = 4;
// A feed with rows after its catch-up keeps its place at least this long.
constexpr auto min_open = std::chrono::seconds(1);

// The numeric prefix of a seq's JSON text ("12-g1AA..." or 12).
std::optional<std::uint64_t> seq_number(std::string_view raw) {
    if (raw.starts_with("\"")) {
        raw.remove_prefix(1);
    }
    std::uint64_t n = 0;
    std::size_t i = 0;
    for (; i < raw.size() && i < 19 && raw[i] >= '0' && raw[i] <= '9'; ++i) {
        n = n * 10 + static_cast<std::uint64_t>(raw[i] - '0');
    }
    return i == 0 ? std::nullopt : std::optional<std::uint64_t>(n);
}

// Whether a database whose update_seq is `current` has changes after the
// checkpoint `checkpoint` (both JSON texts). Unsure counts as changed: a
// needless catch-up costs a request, a missed change costs data.
bool changed_since(std::string const& current, std::string const& checkpoint) {
    if (checkpoint.empty()) {
        return true;
    }
    auto const a = seq_number(current), b = seq_number(checkpoint);
    if (a && b) {
        return *a > *b;
    }
    return current != checkpoint;
}

} // namespace

std::size_t fleet::open_feeds_locked() const {
    return static_cast<std::size_t>(std::count_if(entries_.begin(), entries_.end(), [](auto const& kv) {
        return kv.second->p && !kv.second->stopping;
    }));
}

void fleet::close_idle_locked(entry& e, std::string const& why) {
    stop_pipeline_locked(e);
    e.idle = true;
    e.wake = false;
    probe_->idle_closed.inc();
    spdlog::info("db {}: feed closed, the database is idle ({})", e.db, why);
}

void fleet::manage_open_feeds_locked(bool full) {
    auto const now = clock_type::now();
    auto const cap = deps_.max_open_feeds;
    std::size_t following = 0;
    struct open_feed {
        entry* e;
        clock_type::time_point last_active;
        bool caught_up;
        bool quiet_since_caught_up; // no row since the reaper first saw it caught up
    };
    std::vector<open_feed> open;
    for (auto& [name, e] : entries_) {
        if (e->desired == "following" && (!deps_.owns || deps_.owns(name))) {
            ++following;
        }
        if (e->p && !e->stopping) {
            auto const st = e->p->status();
            bool const caught_up = st.state == "following";
            if (caught_up && !e->rows_when_caught_up) {
                e->rows_when_caught_up = st.rows_read;
            }
            open.push_back({e.get(), std::max(e->opened_at, st.last_row_time), caught_up,
                            caught_up && st.rows_read == *e->rows_when_caught_up});
        }
    }
    // 1. Idle closing, beyond the cap only.
    if (full && following > cap) {
        for (auto& f : open) {
            if (f.caught_up && now - f.last_active >= deps_.idle_close) {
                close_idle_locked(*f.e, "no change for " + std::to_string(deps_.idle_close.count()) + " ms");
                f.e = nullptr;
            }
        }
    }
    std::erase_if(open, [](open_feed const& f) { return f.e == nullptr; });
    // Least recently active first: the ones to give way.
    std::sort(open.begin(), open.end(),
              [](open_feed const& a, open_feed const& b) { return a.last_active < b.last_active; });
    // 2. Woken idle databases open, round-robin from the cursor.
    std::vector<entry*> woken;
    auto collect = [&](auto from, auto to) {
        for (auto it = from; it != to; ++it) {
            auto& e = *it->second;
            if (e.idle && e.wake && !e.p && e.desired == "following") {
                woken.push_back(&e);
            }
        }
    };
    auto const cursor = entries_.upper_bound(idle_cursor_);
    collect(cursor, entries_.end());
    collect(entries_.begin(), cursor);
    std::size_t open_now = open.size();
    std::size_t next_victim = 0;
    std::size_t admitted = 0;
    for (auto* e : woken) {
        if (open_now >= cap) {
            auto const may_give_way = [&](open_feed const& f) {
                return f.caught_up && (f.quiet_since_caught_up || now - f.e->opened_at >= min_open);
            };
            while (next_victim < open.size() && !may_give_way(open[next_victim])) {
                ++next_victim;
            }
            if (next_victim == open.size()) {
                break; // every open feed is busy or new: wait for the next round
            }
            close_idle_locked(*open[next_victim++].e, "its place goes to " + e->db + ", which changed");
            --open_now;
        }
        spdlog::info("db {}: opening its feed (it changed while idle, or waited for a place)", e->db);
        probe_->reopened.inc();
        idle_cursor_ = e->db;
        try {
            launch_pipeline_locked(*e, e->wake_kind);
        } catch (std::exception const& err) {
            spdlog::error("db {}: cannot start: {}", e->db, err.what());
            continue;
        }
        ++open_now;
        ++admitted;
    }
    // Some still wait for a place: look again at the next tick.
    woken_since_round_ = admitted < woken.size();
    // 3. Polls, where no _db_updates events tell what changed.
    if (full && !change_events_) {
        poll_idle_locked();
    }
}

void fleet::poll_idle_locked() {
    int started = 0;
    auto const cursor = entries_.upper_bound(idle_cursor_);
    std::vector<entry*> order;
    for (auto it = cursor; it != entries_.end(); ++it) {
        order.push_back(it->second.get());
    }
    for (auto it = entries_.begin(); it != cursor; ++it) {
        order.push_back(it->second.get());
    }
    for (auto* e : order) {
        if (started == polls_per_round || stopping_) {
            break;
        }
        if (!e->idle || e->wake || e->polling || e->p || e->desired != "following") {
            continue;
        }
        std::string checkpoint = e->last_checkpoint;
        if (checkpoint.empty()) {
            if (auto pos = deps_.positions.get(checkpoint::key{deps_.source_name, e->db})) {
                checkpoint = pos->seq_json;
            }
        }
        e->polling = true;
        idle_cursor_ = e->db;
        ++started;
        probe_->polls.inc();
        polls_->fetch_add(1);
        asio::co_spawn(asio::make_strand(deps_.pool), poll(e->db, std::move(checkpoint)),
                       [counter = polls_](std::exception_ptr) { counter->fetch_sub(1); });
    }
}

asio::awaitable<void> fleet::poll(std::string db, std::string checkpoint_seq) {
    couch::request_slot slot;
    auto r = co_await deps_.couch->request(slot, boost::beast::http::verb::get, "/" + couch::url_encode(db), {},
                                           1u << 20, std::chrono::seconds(10));
    bool changed = false;
    if (r.error.empty() && r.status == 200) {
        boost::system::error_code ec;
        auto info = json::parse(r.body, ec);
        auto const* us = !ec && info.is_object() ? info.as_object().if_contains("update_seq") : nullptr;
        changed = us == nullptr || changed_since(json::serialize(*us), checkpoint_seq);
    } else if (r.error.empty() && r.status == 404) {
        changed = false; // gone: discovery (or the next poll) tells
    } else {
        spdlog::debug("db {}: polling it failed ({} {}); trying again later", db, r.status, r.error);
    }
    std::lock_guard lock(mutex_);
    if (auto it = entries_.find(db); it != entries_.end()) {
        auto& e = *it->second;
        e.polling = false;
        if (changed && e.idle && !e.p) {
            e.wake = true;
        }
    }
}

void fleet::updated(std::string const& db) {
    std::lock_guard lock(mutex_);
    if (auto it = entries_.find(db); it != entries_.end() && it->second->idle && !it->second->p) {
        it->second->wake = true;
        woken_since_round_ = true;
    }
}

void fleet::set_change_events(bool on) { change_events_ = on; }

std::size_t fleet::open_feeds() const {
    std::lock_guard lock(mutex_);
    return open_feeds_locked();
}

std::vector<std::string> fleet::idle_databases() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (auto const& [name, e] : entries_) {
        if (e->idle && !e->p && e->desired == "following") {
            out.push_back(name);
        }
    }
    return out;
}

} // namespace bridge
