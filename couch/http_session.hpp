#pragma once

#include "couch/client.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace couch {

// One piece of a streamed response body, already de-chunked. `data` empty
// and `ended` true: the body is complete. `error` set: the stream broke (a
// reset, EOF inside the body, no byte within the idle timeout; `stalled`
// tells the last one apart) and is closed.
struct stream_piece {
    std::string data;
    bool ended = false;
    bool stalled = false;
    std::string error;
};

// The requests of the server-wide part of the bridge (database discovery) to
// one CouchDB server, on its couch::client: short requests on the client's
// kept connections (with its session: basic, or one cookie login for the
// whole source, renewed once after a 401), and one streamed response (a
// continuous feed) on a connection of its own.
//
// Thread safety: none. Every member must be called from `ex` (a strand),
// one request and one stream at a time. Lifetime: outlives every call in
// flight; cancel() and let them finish before destroying it.
class http_session {
public:
    // `timeout` bounds connect + TLS + request + the response header, and
    // every read of a short request. Throws std::invalid_argument for an
    // unusable URL or an unreadable CA file (named).
    http_session(boost::asio::any_io_executor ex, client_config cfg, std::chrono::milliseconds timeout);
    // On a shared client (the fleet's): one session and one TLS context for
    // the whole source.
    http_session(boost::asio::any_io_executor ex, std::shared_ptr<client> cl, std::chrono::milliseconds timeout);
    ~http_session();
    http_session(http_session const&) = delete;
    http_session& operator=(http_session const&) = delete;

    // One request: `method` "GET" or "POST" (with a JSON body), `target` the
    // path and query below the URL's prefix ("/_all_dbs?limit=10"). A kept
    // connection the server closed meanwhile is reopened once. A body longer
    // than body_limit is an error.
    boost::asio::awaitable<http_reply> request(std::string method, std::string target, std::string body = {},
                                               std::size_t body_limit = std::size_t{64} << 20);

    // Opens a streamed GET on its own connection (closing any earlier
    // stream) and returns once the response header is in. A 200 leaves the
    // stream open for read_stream(); any other status comes with its body
    // (at most 64 KiB) and closes it.
    boost::asio::awaitable<http_reply> open_stream(std::string target);

    // The next piece of the open stream's body, waiting at most
    // `idle_timeout` for a byte. After `ended` or an error the stream is
    // closed; reading a closed stream is an error.
    boost::asio::awaitable<stream_piece> read_stream(std::chrono::milliseconds idle_timeout);

    void close_stream();

    // Cancels every operation in flight (they complete with an error).
    void cancel();

    // The server's URL without credentials, for messages.
    std::string const& redacted_url() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace couch
