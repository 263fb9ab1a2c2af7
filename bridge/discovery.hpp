#pragma once

#include "couch/changes_feed.hpp" // client_config
#include "couch/client.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

namespace checkpoint {
class store;
class positions;
}
namespace metrics {
class registry;
}

namespace bridge {

// Which database names --db-pattern / --exclude-db-pattern select: a name
// matched (whole name, ECMAScript) by at least one pattern and by no
// exclude pattern. System databases (a leading `_`) never match.
class db_matcher {
public:
    // Throws std::invalid_argument naming the first pattern that is not a
    // valid ECMAScript regular expression, and why.
    db_matcher(std::vector<std::string> patterns, std::vector<std::string> exclude_patterns);

    bool matches(std::string_view name) const;
    // Without a pattern nothing matches (discovery is off).
    bool empty() const noexcept { return include_.empty(); }
    std::vector<std::string> const& patterns() const noexcept { return include_text_; }
    std::vector<std::string> const& exclude_patterns() const noexcept { return exclude_text_; }

private:
    std::vector<std::regex> include_, exclude_;
    std::vector<std::string> include_text_, exclude_text_;
};

struct discovery_options {
    std::vector<std::string> patterns, exclude_patterns;
    std::chrono::milliseconds interval{10000};        // polling period where there is no _db_updates
    std::chrono::milliseconds heartbeat{10000};       // of the _db_updates feed; its watchdog allows ~2x
    std::chrono::milliseconds request_timeout{60000}; // connect + request + header, and short reads
    std::size_t page_size = 1000;                     // _all_dbs names per request
    // The checkpoint keys' source: the store's positions of this source are
    // what a startup listing reconciles, and the _db_updates position is
    // kept in meta "db_updates_seq:<source>".
    std::string source_name;
};

// What discovery reports to (the fleet's found() and gone()). Called from
// discovery's strand, one at a time.
struct discovery_hooks {
    std::function<void(std::string const& db, bool live)> found;
    std::function<void(std::string const& db)> gone;
    // An `updated` event of any database (for the fleet's idle databases),
    // and whether such events arrive (true while `_db_updates` is
    // followed, false once discovery falls back to polling). Optional.
    std::function<void(std::string const& db)> updated = {};
    std::function<void(bool)> change_events = {};
};

// Finds the databases of one CouchDB server that match the patterns, and
// reports them found or gone, by itself and for as long as it runs:
//  1. `_db_updates?feed=continuous` is opened first (since its stored
//     position, else since=now), so that nothing between the listing and
//     the feed is missed;
//  2. the whole set is listed from `_all_dbs` (paged): every match is found
//     (not live); at startup, a database the store has a checkpoint of that
//     matches and is absent is gone (deleted while the bridge was down);
//  3. then each `created`/`deleted` event of a matching database is checked
//     against the server (`GET /{db}`), because CouchDB coalesces events
//     (recordings 15a-15c: a reader cannot order a coalesced `deleted` and
//     `created`): exists and new -> found (live); gone -> gone; a `deleted`
//     database that exists again -> gone, then found (a new incarnation).
//     `updated` events are not used yet. The feed's position is stored
//     after every batch. A broken feed is reopened from it after a backoff
//     (from now, with a new listing, when there is none).
// A server without a usable `_db_updates` (pouchdb-server answers 400,
// CouchDB without `_global_changes` 404, a non-admin user 401/403) is polled
// instead: `_all_dbs` every `interval`, compared with the last listing
// (said once in the log). A database deleted and re-created between two
// polls is then not seen here; its feed's own recreate detection applies.
// A listing that fails is logged and retried; it never makes databases
// "gone".
//
// Thread safety: start(), stop() and status() may be called from any thread.
// Lifetime: the hooks, the stores and the registry outlive it; stop() it and
// let the executor run until stopped() before destroying it.
class discovery {
public:
    // `store` keeps the _db_updates position (meta); `positions` are the
    // checkpoints a startup listing reconciles (the same RocksDB store, or
    // the Kafka topic store). Throws std::invalid_argument for a bad
    // pattern, an unusable URL or an unreadable CA file.
    discovery(boost::asio::any_io_executor ex, couch::client_config client, discovery_options options,
              discovery_hooks hooks, checkpoint::store& store, checkpoint::positions& positions,
              metrics::registry& registry, std::shared_ptr<couch::client> shared = nullptr);
    ~discovery();
    discovery(discovery const&) = delete;
    discovery& operator=(discovery const&) = delete;

    void start();
    void stop();
    bool stopped() const;

    // For /status: mode (db_updates, polling), state, patterns, databases
    // matched, listings, events, the feed's position, the last error.
    boost::json::object status() const;

private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

} // namespace bridge
