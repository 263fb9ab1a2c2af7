#include "bridge/discovery.hpp"

#include "bridge/change_meta.hpp" // format_timestamp
#include "checkpoint/store.hpp"
#include "couch/databases.hpp"
#include "couch/db_updates_feed.hpp"
#include "couch/http_session.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/array.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>

namespace asio = boost::asio;
namespace json = boost::json;

namespace bridge {

db_matcher::db_matcher(std::vector<std::string> patterns, std::vector<std::string> exclude_patterns)
    : include_text_(std::move(patterns)), exclude_text_(std::move(exclude_patterns)) {
    auto compile = [](std::vector<std::string> const& texts, std::vector<std::regex>& out, char const* flag) {
        for (auto const& t : texts) {
            try {
                out.emplace_back(t, std::regex::ECMAScript);
            } catch (std::regex_error const& e) {
                throw std::invalid_argument(std::string(flag) + " '" + t +
                                            "' is not a valid ECMAScript regular expression: " + e.what());
            }
        }
    };
    compile(include_text_, include_, "--db-pattern");
    compile(exclude_text_, exclude_, "--exclude-db-pattern");
}

bool db_matcher::matches(std::string_view name) const {
    if (name.empty() || name.front() == '_') {
        return false;
    }
    auto hit = [name](std::regex const& re) { return std::regex_match(name.begin(), name.end(), re); };
    return std::any_of(include_.begin(), include_.end(), hit) && std::none_of(exclude_.begin(), exclude_.end(), hit);
}

namespace {

std::string iso_now() { return format_timestamp(std::chrono::system_clock::now()); }

constexpr std::chrono::milliseconds backoff_initial{1000};
constexpr std::chrono::milliseconds backoff_max{30000};

} // namespace

struct discovery::impl : std::enable_shared_from_this<impl> {
    impl(asio::any_io_executor ex, couch::client_config client, discovery_options o, discovery_hooks h,
         checkpoint::store& s, checkpoint::positions& p, metrics::registry& r, std::shared_ptr<couch::client> shared)
        : strand(asio::make_strand(ex)), opt(std::move(o)), matcher(opt.patterns, opt.exclude_patterns),
          hooks(std::move(h)), store(s), positions(p), session(strand,
                                                     shared ? std::move(shared)
                                                            : std::make_shared<couch::client>(ex, std::move(client),
                                                                                              nullptr, &r),
                                                     opt.request_timeout),
          feed(session, opt.heartbeat), timer(strand), seq_meta("db_updates_seq:" + opt.source_name),
          listings(r.add_counter("couch_bridge_discovery_listings_total", "Complete _all_dbs listings by discovery")),
          errors(r.add_counter("couch_bridge_discovery_errors_total",
                               "Failed _all_dbs listings and broken _db_updates feeds")),
          matched(r.add_gauge("couch_bridge_discovery_databases",
                              "Databases on the server that match --db-pattern (last listing and events)")),
          polling_gauge(r.add_gauge("couch_bridge_discovery_polling",
                                    "1 while discovery polls _all_dbs (no usable _db_updates), else 0")) {
        for (auto const* t : {"created", "updated", "deleted", "other"}) {
            events.emplace(t, &r.add_counter("couch_bridge_discovery_events_total", "_db_updates events read, by type",
                                             {{"type", t}}));
        }
    }

    // --- state shown in /status (guarded by mutex) ------------------------
    struct shown {
        std::string mode = "db_updates"; // db_updates | polling
        std::string state = "starting";  // starting | listing | following | polling | backoff | stopped
        std::size_t databases = 0;
        std::uint64_t listings = 0, events = 0;
        std::string db_updates_seq, last_listing_time, last_event_time, fallback_reason, last_error, last_error_time;
    };
    template <class F>
    void update(F f) {
        std::lock_guard lock(mutex);
        f(st);
    }
    void set_state(std::string s) {
        update([&](shown& x) { x.state = std::move(s); });
    }
    void error(std::string msg) {
        errors.inc();
        spdlog::warn("discovery: {}", msg);
        update([&](shown& x) {
            x.last_error = std::move(msg);
            x.last_error_time = iso_now();
        });
    }

    // --- reports ------------------------------------------------------------
    void report_found(std::string const& db, bool live) {
        if (!stopping) {
            hooks.found(db, live);
        }
    }
    void report_gone(std::string const& db) {
        if (!stopping) {
            hooks.gone(db);
        }
    }

    asio::awaitable<void> sleep(std::chrono::milliseconds d) {
        timer.expires_after(d);
        co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }

    // Lists the server and reports the difference from the last listing (at
    // startup: everything found, and the store's matching checkpoints that
    // are absent gone). False when the listing failed.
    asio::awaitable<bool> reconcile() {
        set_state("listing");
        auto listing = co_await couch::list_all_dbs(session, opt.page_size);
        if (stopping) {
            co_return false;
        }
        if (!listing.error.empty()) {
            error("listing the databases failed (nothing is taken as deleted; retrying): " + listing.error);
            co_return false;
        }
        std::set<std::string> now;
        for (auto& n : listing.names) {
            if (matcher.matches(n)) {
                now.insert(std::move(n));
            }
        }
        if (!listed) {
            try {
                for (auto const& [k, pos] : positions.list()) {
                    if (k.source == opt.source_name && matcher.matches(k.database) && !now.contains(k.database)) {
                        report_gone(k.database);
                    }
                }
            } catch (std::exception const& e) {
                error(std::string("cannot read the checkpoints to reconcile with: ") + e.what());
            }
            spdlog::info("discovery: {} database(s) of {} match {} ({} listed in {} request(s))", now.size(),
                         session.redacted_url(), describe_patterns(), listing.names.size(), listing.pages);
        }
        for (auto const& n : now) {
            if (!known.contains(n)) {
                report_found(n, listed);
            }
        }
        for (auto const& n : known) {
            if (!now.contains(n)) {
                report_gone(n);
            }
        }
        known = std::move(now);
        listed = true;
        listings.inc();
        matched.set(static_cast<double>(known.size()));
        update([&](shown& x) {
            x.databases = known.size();
            ++x.listings;
            x.last_listing_time = iso_now();
        });
        co_return true;
    }

    std::string describe_patterns() const {
        std::string s;
        for (auto const& p : matcher.patterns()) {
            s += (s.empty() ? "" : ", ") + p;
        }
        for (auto const& p : matcher.exclude_patterns()) {
            s += ", not " + p;
        }
        return s;
    }

    // One event of a matching database, checked against the server.
    asio::awaitable<void> on_event(couch::db_update const& e) {
        auto const exists = co_await couch::database_exists(session, e.db_name);
        if (stopping) {
            co_return;
        }
        bool const created = e.type == couch::db_update_type::created;
        // When the server cannot tell, the event's word stands.
        bool const there = exists.value_or(created);
        if (!created) {
            spdlog::debug("discovery: {} deleted{}", e.db_name, there ? " (and exists again)" : "");
            report_gone(e.db_name);
            known.erase(e.db_name);
        }
        if (there && !known.contains(e.db_name)) {
            known.insert(e.db_name);
            report_found(e.db_name, true);
        } else if (!there && known.erase(e.db_name) > 0) {
            report_gone(e.db_name); // created and deleted again since
        }
        matched.set(static_cast<double>(known.size()));
    }

    asio::awaitable<void> handle(std::vector<couch::db_update> const& batch) {
        for (auto const& e : batch) {
            if (auto it = events.find(std::string_view(couch::to_string(e.type))); it != events.end()) {
                it->second->inc();
            }
            if (e.type == couch::db_update_type::updated && hooks.updated && !stopping) {
                hooks.updated(e.db_name);
            }
            bool const lifecycle = e.type == couch::db_update_type::created || e.type == couch::db_update_type::deleted;
            if (lifecycle && matcher.matches(e.db_name)) {
                co_await on_event(e);
                if (stopping) {
                    co_return;
                }
            }
        }
        auto const& pos = feed.last_seq();
        if (!pos.empty()) {
            if (auto ec = store.put_meta(seq_meta, pos.raw_json())) {
                error("cannot store the _db_updates position: " + ec.message());
            }
        }
        update([&](shown& x) {
            x.events += batch.size();
            x.databases = known.size();
            x.last_event_time = iso_now();
            x.db_updates_seq = pos.raw_json();
        });
    }

    // Follows _db_updates; returns when it is not usable (polling takes over).
    asio::awaitable<void> follow_db_updates() {
        auto backoff = backoff_initial;
        while (!stopping) {
            couch::since from = couch::since::now();
            if (auto saved = stored_seq(); !saved.empty()) {
                from = couch::since::from(couch::seq::from_raw_json(saved));
            }
            auto opened = co_await feed.open(from);
            if (stopping) {
                co_return;
            }
            if (opened.outcome == couch::db_updates_feed::opened::unsupported) {
                spdlog::warn("discovery: {} has no usable _db_updates ({}); polling _all_dbs every {} ms instead",
                             session.redacted_url(), opened.message, opt.interval.count());
                update([&](shown& x) {
                    x.mode = "polling";
                    x.fallback_reason = opened.message;
                });
                polling_gauge.set(1);
                if (hooks.change_events) {
                    hooks.change_events(false);
                }
                co_return;
            }
            bool ok = opened.outcome == couch::db_updates_feed::opened::ok;
            if (ok && hooks.change_events) {
                hooks.change_events(true);
            }
            if (!ok) {
                error("cannot open _db_updates: " + opened.message);
            }
            // Without a stored position the feed starts at "now": list to
            // cover what happened before it (the first time, always).
            if (!listed || (ok && from.where == couch::since::kind::now)) {
                co_await reconcile();
            }
            bool got_events = false;
            while (ok && !stopping) {
                set_state("following");
                auto batch = co_await feed.next();
                if (stopping) {
                    co_return;
                }
                if (!batch.events.empty()) {
                    co_await handle(batch.events);
                    backoff = backoff_initial;
                    got_events = true;
                }
                if (!batch.error.empty()) {
                    error("_db_updates: " + batch.error);
                    ok = false;
                } else if (batch.ended) {
                    spdlog::info("discovery: the server ended the _db_updates feed; reopening it");
                    if (!got_events) {
                        co_await sleep(backoff_initial); // a server that ends every response at once is not hammered
                    }
                    break;
                }
            }
            if (!ok && !stopping) {
                set_state("backoff");
                co_await sleep(backoff);
                backoff = std::min(backoff * 2, backoff_max);
            }
        }
    }

    std::string stored_seq() {
        try {
            auto v = store.get_meta(seq_meta);
            if (v && checkpoint::is_valid_seq_json(*v)) {
                return *v;
            }
        } catch (std::exception const& e) {
            error(std::string("cannot read the stored _db_updates position: ") + e.what());
        }
        return {};
    }

    asio::awaitable<void> run() {
        auto self = shared_from_this(); // alive until the loop ends
        try {
            co_await follow_db_updates();
            while (!stopping) {
                set_state("listing");
                co_await reconcile();
                if (stopping) {
                    break;
                }
                set_state("polling");
                co_await sleep(opt.interval);
            }
        } catch (std::exception const& e) {
            spdlog::critical("discovery stopped by an unexpected error: {}", e.what());
        }
        session.cancel();
        set_state("stopped");
        done = true;
    }

    asio::strand<asio::any_io_executor> strand;
    discovery_options opt;
    db_matcher matcher;
    discovery_hooks hooks;
    checkpoint::store& store;
    checkpoint::positions& positions;
    couch::http_session session;
    couch::db_updates_feed feed;
    asio::steady_timer timer;
    std::string const seq_meta;
    std::set<std::string> known; // matching databases that exist, as far as discovery knows
    bool listed = false;
    std::atomic<bool> stopping{false};
    std::atomic<bool> done{false};

    metrics::counter& listings;
    metrics::counter& errors;
    metrics::gauge& matched;
    metrics::gauge& polling_gauge;
    std::map<std::string, metrics::counter*, std::less<>> events;

    mutable std::mutex mutex;
    shown st;
};

discovery::discovery(asio::any_io_executor ex, couch::client_config client, discovery_options options,
                     discovery_hooks hooks, checkpoint::store& store, checkpoint::positions& positions,
                     metrics::registry& registry, std::shared_ptr<couch::client> shared)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(client), std::move(options), std::move(hooks), store,
                                   positions, registry, std::move(shared))) {}

discovery::~discovery() { stop(); }

void discovery::start() {
    spdlog::info("discovery: following the databases of {} that match {}", impl_->session.redacted_url(),
                 impl_->describe_patterns());
    asio::co_spawn(impl_->strand, impl_->run(), asio::detached);
}

void discovery::stop() {
    impl_->stopping = true;
    asio::post(impl_->strand, [p = impl_] {
        p->session.cancel();
        p->timer.cancel();
    });
}

bool discovery::stopped() const { return impl_->done; }

json::object discovery::status() const {
    impl::shown s;
    {
        std::lock_guard lock(impl_->mutex);
        s = impl_->st;
    }
    auto text_or_null = [](std::string const& t) { return t.empty() ? json::value(nullptr) : json::value(t); };
    json::array patterns, excluded;
    for (auto const& p : impl_->matcher.patterns()) {
        patterns.emplace_back(p);
    }
    for (auto const& p : impl_->matcher.exclude_patterns()) {
        excluded.emplace_back(p);
    }
    json::object o;
    o["mode"] = s.mode;
    o["state"] = s.state;
    o["patterns"] = std::move(patterns);
    o["exclude_patterns"] = std::move(excluded);
    o["databases"] = s.databases;
    o["listings"] = s.listings;
    o["events"] = s.events;
    o["db_updates_seq"] = text_or_null(s.db_updates_seq);
    o["interval_ms"] = impl_->opt.interval.count();
    o["last_listing_time"] = text_or_null(s.last_listing_time);
    o["last_event_time"] = text_or_null(s.last_event_time);
    o["fallback_reason"] = text_or_null(s.fallback_reason);
    o["last_error"] = text_or_null(s.last_error);
    o["last_error_time"] = text_or_null(s.last_error_time);
    return o;
}

} // namespace bridge
