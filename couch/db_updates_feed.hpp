#pragma once

#include "couch/db_updates_parser.hpp"
#include "couch/http_session.hpp"
#include "couch/seq.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace couch {

// Follows a server's `GET /_db_updates?feed=continuous` (database created,
// updated, deleted events) on an http_session's stream. One response at a
// time: open(), then next() until it reports trouble, then open() again
// (the caller decides the backoff and the position).
//
// Thread safety: none; the session's executor. Lifetime: the session
// outlives the feed.
class db_updates_feed {
public:
    db_updates_feed(http_session& session, std::chrono::milliseconds heartbeat,
                    std::size_t max_row_bytes = std::size_t{64} << 10);

    enum class opened {
        ok,          // following; call next()
        unsupported, // the server has no usable _db_updates (see open())
        failed,      // transport trouble or the server's own (5xx): try again later
    };
    struct open_result {
        opened outcome = opened::failed;
        unsigned status = 0;  // the HTTP status, 0 for transport trouble
        std::string message;  // why, for the log (credentials never appear)
    };

    // Opens the feed after `from` (since=now when `from` is since::now()).
    // unsupported: 400, 404, 405 or 501 (pouchdb-server answers 400;
    // CouchDB without `_global_changes` 404, recording 15d), and 401/403
    // (only server admins may read `_db_updates`).
    boost::asio::awaitable<open_result> open(since from);

    struct batch {
        std::vector<db_update> events; // in feed order; may be empty only with `error` or `ended`
        bool ended = false;            // the server ended the response (a last_seq line, or the body ended)
        std::string error;             // the stream broke: stalled (2 x heartbeat without a byte), closed, bad data
    };
    // The next events. Blank lines (heartbeats) keep the wait going; a
    // silence of twice the heartbeat is an error (the watchdog). After
    // `ended` or an error, open() again.
    boost::asio::awaitable<batch> next();

    // The seq of the last event handed out (or of the end line), to resume
    // from; empty before the first.
    couch::seq const& last_seq() const noexcept { return last_seq_; }

private:
    http_session& session_;
    std::chrono::milliseconds heartbeat_;
    db_updates_parser parser_;
    couch::seq last_seq_;
};

} // namespace couch
