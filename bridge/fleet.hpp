#pragma once

#include "bridge/pipeline.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace checkpoint {
class flusher;
class store;
class positions;
} // namespace checkpoint
namespace kafka {
class producer;
}

namespace bridge {

// Which databases run, and the one place that starts, stops, pauses and
// rewinds pipelines (STYLE §10). Pipelines never start or stop each other;
// the admin API and startup talk to the fleet, and the fleet talks to a
// pipeline only through its constructor, run(), stop(), status() and
// in_flight().
//
// Lifecycle of one database: following (a pipeline runs) -> stopping (asked
// to stop; waits until its run() ended and nothing it produced is in flight,
// since delivery reports refer to it) -> paused, removed, or following again
// (resume, rewind). A rewind target is written durably before the new
// pipeline starts.
//
// What the admin API changed (added, paused, removed databases) is kept in
// the checkpoint store (meta "fleet") and applied again at the next start;
// databases named by flags are followed on top of it unless paused.
//
// Discovery (bridge/discovery.hpp, --db-pattern) reports databases found and
// gone; the fleet follows the ones found, stops the ones gone (state
// `deleted`, kept with the time and the checkpoint in meta
// "deleted_databases"), and follows a deleted one that comes back as a new
// incarnation, from 0.
//
// Thread safety: every public member may be called from any thread.
// This process as /databases names an owner: "<hostname>:<pid>" (also the
// client.id of its group membership, so every member names it the same way).
std::string instance_name();

class fleet {
public:
    // Group exactly-once: the transaction a database's records go into (the
    // producer and the flusher of its assignment partition).
    struct transaction_unit {
        kafka::producer* producer = nullptr;
        checkpoint::flusher* flusher = nullptr;
    };
    using database_filter = std::function<bool(std::string const&)>;

    struct dependencies {
        boost::asio::any_io_executor pool;
        couch::client_config client;
        std::shared_ptr<couch::source> source;
        std::string source_name;    // checkpoint key's source
        std::string initial_since;  // "0" or "now", for databases without a checkpoint
        window_limits window;
        couch::feed_options feed; // the template of every feed (database and since are set per database)
        pipeline::dependencies pipe;
        checkpoint::store& store;         // local state: the admin API's fleet record (meta "fleet")
        checkpoint::positions& positions; // where positions live (the same RocksDB store, or the Kafka topic)
        // Group mode: whether this instance owns a database now (empty: it
        // owns every database). A database it does not own is kept as
        // desired but runs nowhere here.
        std::function<bool(std::string const&)> owns = {};
        // Group exactly-once: the unit of `db` now; a null producer when this
        // instance has none open for it (the database does not start until
        // reassess() after the unit opened). Empty: `pipe`'s producer and
        // flusher serve every database.
        std::function<transaction_unit(std::string const&)> unit_of = {};
        // The source's CouchDB client, shared with discovery (null: the
        // fleet makes one from `client` and `source`).
        std::shared_ptr<couch::client> couch = nullptr;
        // At most this many pipelines (continuous feeds) run at once (0: no
        // cap). Beyond it a database whose feed was silent for idle_close
        // is closed and becomes `idle`; it opens again (a normal-feed
        // catch-up from its checkpoint, then continuous) when it changes:
        // a `_db_updates` `updated` event (updated()), or, without
        // _db_updates, a round-robin poll of GET /{db} finding its
        // update_seq past the checkpoint. A database that must open while
        // the cap is reached takes the place of the least recently active
        // caught-up feed.
        std::size_t max_open_feeds = 0;
        std::chrono::milliseconds idle_close{300000};
    };

    explicit fleet(dependencies deps);
    // The source's CouchDB client (one cookie session, one TLS context and
    // the kept connections of every pipeline); discovery shares it.
    std::shared_ptr<couch::client> couch_client() const { return deps_.couch; }
    ~fleet();
    fleet(fleet const&) = delete;
    fleet& operator=(fleet const&) = delete;

    // Startup: follows `flag_databases` and what the store says the admin
    // API added, except what it paused or removed (removed applies only to
    // databases no flag names). Then runs the reaper until stop_all().
    // Throws checkpoint::store_error if the store cannot be read.
    void start(std::vector<std::string> const& flag_databases);

    // The admin operations. Each returns an HTTP-like outcome: 200/201 with
    // a JSON body, 404 (unknown database), 409 (conflict), 400 (bad input),
    // 503 (the store could not record it). Never throws for bad input.
    struct outcome {
        unsigned status = 200;
        std::string json; // the response body
    };
    // since: "" (checkpoint, else --initial-since), "0", "now", or a seq's JSON text.
    // options: "" or a JSON object of per-database settings that replace the
    // process-wide ones: at most one of "selector" (object), "doc_ids"
    // (array of strings), "filter" ("ddoc/name"); "include_doc_types",
    // "exclude_doc_types" (arrays of strings). Given for a database that
    // runs, it restarts with them (from its checkpoint). Persisted.
    outcome follow(std::string const& db, std::string const& since, std::string const& options = {});
    outcome remove(std::string const& db);
    outcome pause(std::string const& db);
    outcome resume(std::string const& db);
    outcome rewind(std::string const& db, std::string const& since);
    // GET /databases: every known database, JSON. `owner_of(db)`: the
    // owner of a database another group member runs ("" when unknown).
    std::string describe_all(std::function<std::string(std::string const&)> const& owner_of = {}) const;
    // The validation follow() does on its input, without acting: 200, or
    // the 400 it would answer.
    static outcome check_command(std::string const& db, std::string const& since, std::string const& options);

    // Snapshots of the running pipelines, for /status, /readyz and progress.
    std::vector<pipeline_status> statuses() const;
    // Records in flight over all pipelines (shutdown waits for 0), or over
    // the pipelines of the databases `which` accepts.
    std::size_t in_flight(database_filter const& which = {}) const;
    // Exactly-once, after an aborted transaction: every running pipeline (of
    // the databases `which` accepts) reads again from its durable
    // checkpoint; `done` runs once all have taken the rewind (on one of
    // their strands, or here when none runs).
    void rewind_all_to_durable(std::function<void()> done, database_filter const& which = {});
    // Group mode, after the ownership changed: starts the databases this
    // instance now owns (from their stored checkpoints) and stops the ones it
    // no longer owns. Returns the databases being stopped.
    std::vector<std::string> reassess();
    // Waits (blocking, up to `timeout`) until no pipeline of `dbs` runs or
    // has records in flight any more. Returns false on timeout.
    bool wait_stopped(std::vector<std::string> const& dbs, std::chrono::milliseconds timeout) const;

    // Shutdown: stops every pipeline (reading), keeps them until destroyed.
    void stop_all();

    // Discovery's reports; idempotent, never throw (trouble is logged).
    // found: `db` exists on the server. A database new to the fleet is
    // followed from its checkpoint, else from 0 when `live` (created while
    // the bridge runs) or per --initial-since (found at startup). One
    // recorded as deleted is a new incarnation: with --on-recreate restart
    // its old checkpoint is dropped and it is followed from 0 (counted in
    // couch_bridge_databases_recreated_total); with fail it stays `deleted`
    // until a rewind through the admin API. Databases paused or removed
    // through the API, and those named by --db, are left as they are.
    void found(std::string const& db, bool live);
    // gone: `db` no longer exists on the server. Unless --db names it, its
    // pipeline stops and it becomes `deleted` (its checkpoint is kept). A
    // database the fleet does not know but has a checkpoint of (deleted
    // while the bridge was down) is recorded as deleted too.
    void gone(std::string const& db);
    // updated: `db` changed (a `_db_updates` `updated` event). An idle
    // database opens again. Never throws.
    void updated(std::string const& db);
    // Whether `_db_updates` events arrive (discovery follows the feed):
    // then idle databases wait for updated() instead of being polled.
    void set_change_events(bool on);
    // The databases that are `idle` (followed, feed closed, waiting for a
    // change), for /status.
    std::vector<std::string> idle_databases() const;
    // Pipelines running now (feeds open), never more than max_open_feeds.
    std::size_t open_feeds() const;

    // True when `name` is a valid CouchDB database name (and not a system
    // database, which the API does not follow).
    static bool valid_database_name(std::string const& name);

private:
    struct entry;
    struct probe;
    void load_deleted_locked();
    void persist_deleted_locked();
    // A database recorded as deleted is followed again (resume, PUT): its
    // deletion record goes; the caller starts it from 0.
    void forget_deletion_locked(entry& e);
    void refresh_gauges_locked();
    boost::asio::awaitable<void> reaper();
    void start_pipeline_locked(entry& e, std::optional<std::string> since_override);
    void launch_pipeline_locked(entry& e, std::optional<std::string> since_override);
    // bridge/fleet_idle.cpp: the cap of --max-open-feeds, idle closing,
    // reopening and polling; run by the reaper about once a second.
    std::size_t open_feeds_locked() const;
    void close_idle_locked(entry& e, std::string const& why);
    // `full`: the once-a-second round (idle closing, admission and polls);
    // otherwise only the admission of databases woken since.
    void manage_open_feeds_locked(bool full);
    void poll_idle_locked();
    boost::asio::awaitable<void> poll(std::string db, std::string checkpoint_seq);
    void stop_pipeline_locked(entry& e);
    void persist_locked();
    outcome stop_following(std::string const& db, std::string const& desired, std::string const& what);
    outcome ok_locked(entry const& e, unsigned status = 200) const;
    checkpoint::flusher& flusher_for(std::string const& db) const;

    dependencies deps_;
    mutable std::mutex mutex_;
    std::map<std::string, std::unique_ptr<entry>> entries_;
    std::vector<std::string> flag_databases_;
    std::atomic<bool> stopping_{false};
    std::atomic<bool> change_events_{false};
    bool woken_since_round_ = false; // a database waits to open (woken, or started at the cap)
    std::string idle_cursor_;        // round-robin position among idle databases (admission and polls)
    std::shared_ptr<std::atomic<int>> polls_ = std::make_shared<std::atomic<int>>(0); // in flight
    std::unique_ptr<probe> probe_;
};

} // namespace bridge
