#pragma once

#include "couch/changes_feed.hpp" // client_config
#include "couch/detail/connection.hpp"
#include "couch/source.hpp"
#include "couch/url.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace metrics {
class registry;
class counter;
} // namespace metrics

namespace couch {

// The answer to one request. `error` empty: the server answered with
// `status` and `body`. Otherwise the request failed in transport (connect,
// TLS, a deadline, a reset, a body past its limit) or the cookie login
// failed, and `error` says how, as a sentence without credentials.
struct http_reply {
    std::string error;
    unsigned status = 0;
    std::string body;
};

// One exchange as the wire saw it, for callers that decide themselves what a
// failure means (the feeds: transient, unauthorized, failed).
struct exchange_reply {
    boost::system::error_code ec; // transport trouble (then no status)
    std::string tls_rejected;     // with ec: OpenSSL's reason the server's certificate was refused
    bool connect_failed = false;  // with ec: no connection was made (resolve, connect, TLS handshake)
    unsigned status = 0;
    std::string body;
    std::string set_cookie; // the AuthSession Set-Cookie field, else the first one
};

struct client_options {
    // Kept-alive connections held for reuse, over all callers.
    std::size_t max_kept = 32;
    // A kept connection idle longer than this is closed rather than reused
    // (servers close idle connections; CouchDB after a few minutes).
    std::chrono::milliseconds max_kept_idle{30000};
};

class client;

// One caller's request in flight: a short request's connection, or its
// wait for the session. cancel() (from the caller's executor) ends it: the
// request completes with operation_aborted at once, not at its deadline.
// One request at a time per slot.
class request_slot {
public:
    void cancel();

private:
    friend class client;
    struct login_waiter;
    std::unique_ptr<detail::connection> conn_;
    std::shared_ptr<login_waiter> waiter_;
    client* waiting_on_ = nullptr;
    bool cancelled_ = false;
};

// Everything the bridge's conversations with one CouchDB source share: the
// URL and credentials, the TLS context, the cookie session, the kept-alive
// connections of short requests, and the source's connection gate and
// health (couch::source). Made once per source; the feeds of every
// database, discovery and the document store are built on it.
//
// Cookie auth: one `POST /_session` for all callers. A caller that finds no
// session starts the login, or, when one is already under way, waits for its
// result (ok or the same failure). A request refused with a cookie
// (session_refused) forgets that cookie only if no newer one replaced it,
// so a 401 seen by many callers at once renews the session once.
//
// Kept connections: a response read to its end on a keep-alive connection
// goes back to the client (keep()) and the next request of the same
// executor takes it (take_kept()); a kept connection the server closed
// meanwhile is replaced once, silently. Connections are kept per executor:
// a Beast stream's deadline timer runs on the executor it was made with, so
// a connection never changes hands between strands. Continuous feeds keep
// their connection to themselves while they follow.
//
// Thread safety: every member may be called from any thread; the awaitable
// members from a strand (or a one-thread context), since their waits are
// woken through the caller's executor. Lifetime: outlives every caller
// (they hold it through a shared_ptr) and is destroyed before the
// io_context of its connections.
class client {
public:
    // `src` null: a private source with default options. `registry` null: a
    // private registry (tools without metrics). Throws std::invalid_argument
    // for an unusable URL or an unreadable CA file (named).
    client(boost::asio::any_io_executor ex, client_config cfg, std::shared_ptr<source> src,
           metrics::registry* registry, client_options options = {});
    ~client();
    client(client const&) = delete;
    client& operator=(client const&) = delete;

    client_config const& config() const noexcept { return cfg_; }
    parsed_url const& url() const noexcept { return url_; }
    std::string const& redacted_url() const noexcept { return url_.redacted; }
    bool cookie_auth() const noexcept { return cfg_.auth == client_config::auth_mode::cookie; }
    std::shared_ptr<source> const& gate() const noexcept { return source_; }

    // Host, User-Agent, Accept, and the credentials: Basic from the URL or
    // config, or (cookie auth) `cookie` when not empty. Never both.
    void authorize(boost::beast::http::request_header<>& req, std::string const& cookie) const;

    // --- the cookie session -------------------------------------------------
    struct session_result {
        bool ok = false;
        std::string cookie;   // ok: the AuthSession cookie to send ("AuthSession=...")
        exchange_reply reply; // not ok: the login's answer (a status, or transport trouble)
        bool cancelled = false;
    };
    // The current session cookie, logging in first when there is none.
    // Basic auth: ok at once with an empty cookie.
    // `timeout` bounds the login request.
    boost::asio::awaitable<session_result> session(request_slot& slot,
                                                   std::chrono::milliseconds timeout = std::chrono::seconds(60));
    // A request sent with `cookie` was refused (401/403): the next session()
    // logs in again, unless a newer cookie already replaced this one.
    void session_refused(std::string const& cookie);

    // --- requests -----------------------------------------------------------
    // One request and its whole response (at most body_limit bytes of body)
    // on a kept connection of the caller's executor, or a new one. `target`
    // includes the URL's prefix. No auth logic beyond authorize(cookie).
    boost::asio::awaitable<exchange_reply> exchange(request_slot& slot, boost::beast::http::verb verb,
                                                    std::string target, std::string body, std::string cookie,
                                                    std::size_t body_limit, std::chrono::milliseconds timeout);

    // A short request with everything done: the session (cookie auth), and
    // one login more after a 401. `target` is below the URL's prefix
    // ("/_all_dbs?limit=10"). The error sentence names the redacted URL.
    boost::asio::awaitable<http_reply> request(request_slot& slot, boost::beast::http::verb verb, std::string target,
                                               std::string body, std::size_t body_limit,
                                               std::chrono::milliseconds timeout);

    // --- connections --------------------------------------------------------
    // Resets `c` and connects it (TLS set up and verified as configured),
    // on `ex`; counted in couch_bridge_couch_connections_opened_total.
    boost::asio::awaitable<detail::connect_result> connect(detail::connection& c, boost::asio::any_io_executor ex,
                                                           std::chrono::milliseconds timeout);
    // A kept connection made on `ex`, or null. Counted in stats().reused.
    std::unique_ptr<detail::connection> take_kept(boost::asio::any_io_executor const& ex);
    // Keeps `c` (open, idle, its response read to the end) for reuse on `ex`.
    void keep(boost::asio::any_io_executor ex, std::unique_ptr<detail::connection> c);

    struct counters {
        std::uint64_t connections_opened = 0; // TCP (+TLS) connections made
        std::uint64_t reused = 0;             // kept connections taken again (take_kept)
        std::uint64_t logins = 0;             // POST /_session sent
    };
    counters stats() const;

private:
    friend class request_slot;
    boost::asio::awaitable<session_result> login(request_slot& slot, std::chrono::milliseconds timeout);
    void cancel_wait(request_slot& slot);

    struct kept {
        boost::asio::any_io_executor ex;
        std::unique_ptr<detail::connection> conn;
        std::chrono::steady_clock::time_point since;
    };

    boost::asio::any_io_executor ex_;
    client_config cfg_;
    parsed_url url_;
    std::unique_ptr<boost::asio::ssl::context> ssl_;
    std::unique_ptr<metrics::registry> own_registry_;
    metrics::registry& registry_;
    std::shared_ptr<source> source_;
    client_options options_;
    metrics::counter& opened_metric_;
    metrics::counter& logins_metric_;

    mutable std::mutex mutex_;
    std::string cookie_;
    bool logging_in_ = false;
    std::vector<std::shared_ptr<request_slot::login_waiter>> login_waiters_;
    std::vector<kept> kept_;
    counters counters_;
};

} // namespace couch
