#pragma once

#include "couch/row.hpp"
#include "couch/seq.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace metrics {
class registry;
}

namespace couch {

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
};

// Follows one database's _changes feed: catches up in bounded normal-feed
// batches, then follows a continuous feed, reconnecting by itself.
//
// Thread safety: none; every member must be called from the executor given
// to the constructor (the pipeline's strand). Lifetime: must outlive any
// next() in flight; call stop() and let next() finish before destroying.
//
// Recreated databases: a database deleted and re-created under the same name
// accepts an old seq and restarts from the beginning without an error. The
// feed refuses to follow on (state failed, retried slowly, never from 0) when
// (a) it saw the database missing (404, or the 404-inside-body race) and then
// present again while it holds a seq, or (b) before each (re)connection from a
// seq, the database's update_seq has a smaller numeric prefix than that seq
// (the prefix is the sum of the shard sequences, which only grow within one
// incarnation; a recreated database that already has more updates than the
// old position is not detected by this heuristic).
class changes_feed {
public:
    // `ex` should be the pipeline's strand; every member is called from it. `registry` gets this feed's probe
    // (metrics labelled database=<db>): rows/bytes read, reconnects by reason, state, last-row time, pending.
    // Throws std::invalid_argument for an unusable URL or an unreadable ca_file (startup failure).
    changes_feed(boost::asio::any_io_executor ex, client_config client, feed_options options,
                 metrics::registry& registry);
    ~changes_feed();
    changes_feed(changes_feed const&) = delete;
    changes_feed& operator=(changes_feed const&) = delete;

    // The next batch of rows (>= 1 row, in feed order, each seq byte-exact;
    // see changes_parser for seq_interval rows with an empty seq, which are
    // always followed in the same batch by a row with a seq). Transient
    // trouble is handled inside with jittered exponential backoff; 401/403/404
    // are visible states retried slowly. Throws
    // boost::system::system_error(operation_aborted) after stop(). Rows of one
    // call never repeat rows of an earlier call unless rewind() was called.
    boost::asio::awaitable<std::vector<row>> next();

    // Forget the connection; the next next() reads from `from`.
    void rewind(couch::since from);

    feed_status status() const;

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
