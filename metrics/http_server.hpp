#pragma once

#include "metrics/registry.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace metrics {

namespace detail {
struct http_server_state; // the server's state, shared with its coroutines
} // namespace detail

// What a handler answers. HEAD requests get the same status and headers
// without the body.
struct http_response {
    unsigned status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};

// Builds the response for one GET/HEAD of the path it is registered for.
// Called on one of the server's strands (any thread running the executor),
// possibly concurrently for concurrent clients: must be thread-safe. An
// exception becomes a 500 and a log line.
using http_handler = std::function<http_response()>;

// One request, for handlers that need more than the path (the admin API).
struct http_request {
    std::string method;        // "GET", "PUT", "POST", "DELETE", "HEAD"
    std::string path;          // percent-encoded, without the query
    std::string query;         // after '?', empty if none
    std::string authorization; // the Authorization header, empty if none
    std::string body;
    bool from_loopback = false; // the peer's address is 127.0.0.0/8 or ::1
};

// Builds the response for any request under the prefix it is registered
// for. Same threading and exception rules as http_handler.
using http_request_handler = std::function<http_response(http_request const&)>;

// Limits that keep slow, malformed or too many clients from hurting the
// bridge. The defaults suit the operations endpoints.
struct http_server_options {
    // Deadline for reading one whole request (headers and body), also the
    // idle timeout of a kept-alive connection: a slowloris client is dropped
    // when it expires.
    std::chrono::milliseconds read_timeout{10000};
    // Deadline for writing one response.
    std::chrono::milliseconds write_timeout{10000};
    // Connections beyond this are accepted and closed at once.
    std::size_t max_connections = 64;
    std::size_t header_limit = 8 * 1024;
    std::size_t body_limit = 8 * 1024;
};

// The operations HTTP server: HTTP/1.1 with keep-alive, GET and HEAD only
// (405 otherwise) except under prefix handlers (handle_prefix), 404 for unknown paths, 400 and close for malformed
// requests. Built in, and replaceable through handle(): `/metrics`
// (registry::expose(), content type "text/plain; version=0.0.4;
// charset=utf-8") and `/healthz` (200 "ok": the event loop answers). The
// query string is ignored for routing.
//
// Its own metrics: couch_bridge_http_requests_total{path,code} (path is a
// registered path or "other") and couch_bridge_http_connections_rejected_total.
//
// Threading: construct, handle() and start() from one thread; stop() and the
// destructor may be called from any thread. Sessions run on their own strands
// of `ex`, so a multi-threaded io_context serves clients in parallel.
//
// Lifetime: the registry and whatever handlers capture must outlive the
// server's coroutines, i.e. until the executor's io_context has run the
// completions stop() causes (in practice: stop, then join the io_context
// threads, then destroy). stop() does not wait for a handler that is already
// running.
class http_server {
public:
    // listen = "host:port", host an IPv4 address, a bracketed IPv6 address or
    // a name (resolved now); an empty host means 0.0.0.0; port 0 picks a free
    // port. Binds and listens at once. Throws std::runtime_error with a clear
    // message if it cannot ("cannot listen on 127.0.0.1:9108: Address already
    // in use") or if `listen` is malformed.
    http_server(boost::asio::any_io_executor ex, std::string const& listen, registry& reg);
    http_server(boost::asio::any_io_executor ex, std::string const& listen, registry& reg, http_server_options opts);
    ~http_server();
    http_server(http_server const&) = delete;
    http_server& operator=(http_server const&) = delete;

    // Registers the handler of an exact path ("/status"), replacing any
    // previous one (also the built-in /metrics). Only before start(): throws
    // std::logic_error afterwards, or if path does not start with '/'.
    void handle(std::string path, http_handler h);

    // Registers a handler for every path equal to `prefix` or starting with
    // `prefix` + "/", for GET, HEAD, PUT, POST and DELETE (405 for other
    // methods). Exact handlers registered with handle() win. Only before
    // start(). Request bodies are limited by http_server_options::body_limit.
    void handle_prefix(std::string prefix, http_request_handler h);

    // Spawns the accept loop on the executor. Returns at once. Calling it
    // twice throws std::logic_error.
    void start();

    // Closes the acceptor and every open connection (asynchronously, on
    // their strands). Idempotent; never throws.
    void stop() noexcept;

    // The bound port (useful with port 0).
    std::uint16_t port() const;

private:
    std::shared_ptr<detail::http_server_state> impl_; // shared with the coroutines, which may outlive *this
};

} // namespace metrics
