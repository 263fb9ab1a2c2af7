#pragma once

#include "couch/row.hpp"
#include "couch/seq.hpp"
#include "couch/source.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace metrics {
class registry;
}

namespace couch {

class client;

struct client_config {
    std::string url;            // base URL, e.g. http://user:pw@host:5984 or https://host; may have a path prefix
    std::string user, password; // when set, override credentials in the URL
    enum class auth_mode { basic, cookie } auth = auth_mode::basic; // cookie: POST /_session, renew on 401
    std::string ca_file;        // HTTPS: extra CA bundle (PEM); verification on by default
    // false: accept any certificate and name. A refused certificate otherwise
    // makes the feed `failed` (reason "tls", the verify error in last_error).
    bool tls_verify = true;
};

enum class feed_state { connecting, catching_up, following, backoff, unauthorized, db_missing, failed, stopped };
std::string_view to_string(feed_state s) noexcept;

struct feed_options {
    std::string database;
    couch::since since;                         // where to start
    std::chrono::milliseconds heartbeat{10000}; // continuous feed heartbeat; watchdog = 2x
    std::size_t batch_limit = 2000;             // catch-up batch `limit`
    std::size_t max_row_bytes = 64u << 20;      // a larger row is an error naming db + doc id
    std::chrono::milliseconds backoff_initial{500}, backoff_max{60000}, healthy_reset{30000};
    std::chrono::milliseconds slow_retry{30000}; // 401/403/404 retry period
    // Catch-up `seq_interval` (0: not sent). Servers without it ignore it.
    // Smaller than batch_limit so rows are handed out while a batch streams.
    std::size_t seq_interval = 100;
    // Deadline for connect + TLS + request + response header, and for reads
    // of a normal (catch-up) response.
    std::chrono::milliseconds request_timeout{60000};
    // Read coalescing: while rows arrive faster than this (a CouchDB sends
    // each row as its own chunk, thousands a second while catching up), wait
    // until this long after the previous read before reading again, so that
    // one wake-up reads, parses and hands out a dozen rows instead of one.
    // Adds at most this much latency to a row, and only while the feed is
    // busy: a feed whose rows come less often than this reads each at once.
    // 0: read as soon as bytes arrive.
    std::chrono::microseconds read_coalesce{2000};
    // While catching up (feed=normal batches, whose latency nobody waits
    // for), the interval is this many times read_coalesce: fewer wake-ups
    // per row. A followed feed keeps read_coalesce, for its latency.
    unsigned catch_up_coalesce_factor = 5;
    // Keep each row's document bytes (row::doc_text) for payloads that pass
    // the document through.
    bool keep_doc_text = false;
    // Filters CouchDB applies (at most one kind): a Mango selector (JSON
    // object text; filter=_selector, sent as POST), document ids
    // (filter=_doc_ids, POST), or a design-document filter "ddoc/name".
    // A filter the server rejects (400, a missing design document) makes
    // the feed `failed`, never a silent full feed. After a filtered catch-up
    // batch whose last_seq lies beyond its last row, a position-only row
    // (row::position_only) carries last_seq, so that filtered-out changes
    // still move the checkpoint.
    std::string selector;
    std::vector<std::string> doc_ids;
    std::string filter;
    // A database deleted and re-created under its name: restart (log, count,
    // follow the new incarnation from 0) or fail (state failed, retried
    // slowly, never from 0 until the position is reset).
    enum class recreate_policy { restart, fail } on_recreate = recreate_policy::restart;
};

struct feed_status { // a snapshot, for /status and metrics
    feed_state state = feed_state::connecting;
    std::string last_seq_read; // raw json, empty if none
    // For a feed started with since=now: the seq "now" resolved to (raw
    // json), empty until the server told it. Rows after it are all owed.
    std::string start_seq;
    std::string last_error;    // credentials never appear here
    std::chrono::system_clock::time_point last_error_time, last_row_time;
    std::optional<std::uint64_t> pending;
    std::uint64_t rows_read = 0, bytes_read = 0, reconnects = 0;
    std::uint64_t recreated = 0, source_rewinds = 0; // detected new incarnations, shard rewinds
};

// Follows one database's _changes feed: catches up in bounded normal-feed
// batches, then follows a continuous feed, reconnecting by itself.
//
// Thread safety: none; every member must be called from the executor given
// to the constructor (the pipeline's strand). Lifetime: must outlive any
// next() in flight; call stop() and let next() finish before destroying.
//
// Missing and recreated databases. A database deleted and re-created under
// the same name accepts an old seq and restarts from the beginning without an
// error, so the feed must notice; but a busy CouchDB also answers healthy
// databases with errors (`emfile`, `No DB shards could be opened`, even a
// whole error response written into an open chunked body), and those must
// never be mistaken for a deletion. The rules:
//  - A response written into the open body (a chunk-size line starting with
//    `HTTP/`): its status decides. 5xx is the server in trouble (backoff,
//    reconnect from the last row read). 404 is only a suspicion: the next
//    attempt asks `GET /{db}` first. Anything else, or bytes that are no
//    response at all, is a protocol error (backoff).
//  - A database is `db_missing` only when `GET /{db}` answers 404 (a
//    confirmed deletion).
//  - Recreated: with CouchDB 2/3 seqs, exactly: every comparable shard uuid
//    in the database's update_seq differs from the position's (see
//    couch/shard_seq.hpp). When the seqs cannot be compared that way: with
//    integer seqs (one node, one counter), when the update_seq is below the
//    position; with opaque seqs, only after a confirmed deletion, when the
//    update_seq's numeric prefix is below the position's (without a confirmed
//    deletion a lower prefix may be a lagging shard copy of an n=3 cluster).
//    Then feed_options::on_recreate decides: restart from 0 (the default) or
//    fail (retried slowly, never from 0).
//  - A source rewind (a shard with the same uuid at a lower seq, after a shard
//    move or a node replacement) is logged with the shard range and both
//    seqs and counted (couch_bridge_source_rewinds_total{database}): rows
//    will come again.
//
// Connection attempts go through the client's couch::source, which caps them
// per server and records the server's own errors.
class changes_feed {
public:
    // `ex` should be the pipeline's strand; every member is called from it. `registry` gets this feed's probe
    // (metrics labelled database=<db>): rows/bytes read, reconnects by reason, state, last-row time, pending.
    // Throws std::invalid_argument for an unusable URL or an unreadable ca_file (startup failure).
    // `src` is shared by all feeds of one CouchDB server (null: a private one with default options).
    changes_feed(boost::asio::any_io_executor ex, client_config client, feed_options options,
                 metrics::registry& registry, std::shared_ptr<source> src = nullptr);
    // The same on a shared couch::client (couch/client.hpp): the feeds of
    // one source share its session, TLS context and kept connections.
    // Catch-up batches in a row reuse one kept-alive connection; the
    // continuous feed holds its own while it follows.
    changes_feed(boost::asio::any_io_executor ex, std::shared_ptr<client> client, feed_options options,
                 metrics::registry& registry);
    ~changes_feed();
    changes_feed(changes_feed const&) = delete;
    changes_feed& operator=(changes_feed const&) = delete;

    // The next batch of rows (>= 1 row, in feed order, each seq byte-exact;
    // see changes_parser for seq_interval rows with an empty seq, which are
    // followed in the same batch by a row with a seq, except after 4 MiB of
    // them: a batch may then end on rows without a seq). Transient
    // trouble is handled inside with jittered exponential backoff; 401/403/404
    // are visible states retried slowly. Throws
    // boost::system::system_error(operation_aborted) after stop(). Rows of one
    // call never repeat rows of an earlier call unless rewind() was called.
    boost::asio::awaitable<std::vector<row>> next();

    // For a feed started with since=now: reads until the server has said
    // what "now" is, handling trouble as next() does, and returns that seq
    // (also in status().start_seq) without handing out any row (a row that
    // came along stays queued for next()). For other starts: returns at once
    // with nullopt. Throws like next().
    boost::asio::awaitable<std::optional<couch::seq>> resolve_now();

    // Forget the connection; the next next() reads from `from`.
    void rewind(couch::since from);

    feed_status status() const;

    // Called on the feed's executor each time status().state changes (for
    // the owner's status snapshot: a feed that caught up shows it at once).
    // Empty: none. The owner clears it before anything it refers to goes.
    void on_state_change(std::function<void(feed_state)> hook);

    // Cancels any I/O and wait; idempotent. A pending next() throws operation_aborted.
    void stop();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// Percent-encodes everything but RFC 3986 unreserved characters (so `/` in a
// database name or doc id becomes %2F).
std::string url_encode(std::string_view s);

} // namespace couch
