#include "couch/client.hpp"

#include "common/redact.hpp"
#include "couch/detail/http_io.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>

namespace couch {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

// A caller waiting for another caller's login. Woken (through its own
// executor) when the login ends or the caller cancels.
struct request_slot::login_waiter {
    explicit login_waiter(asio::any_io_executor ex) : timer(std::move(ex), std::chrono::steady_clock::time_point::max()) {}
    asio::steady_timer timer;
    bool done = false;      // guarded by client::mutex_
    bool cancelled = false; // guarded by client::mutex_
    client::session_result result;
};

void request_slot::cancel() {
    cancelled_ = true;
    if (conn_) {
        conn_->close();
    }
    if (waiting_on_ != nullptr && waiter_) {
        waiting_on_->cancel_wait(*this);
    }
}

client::client(asio::any_io_executor ex, client_config cfg, std::shared_ptr<source> src, metrics::registry* registry,
               client_options options)
    : ex_(std::move(ex)), cfg_(std::move(cfg)), url_(parse_url(cfg_)), ssl_(detail::make_tls_context(cfg_, url_)),
      own_registry_(registry != nullptr ? nullptr : std::make_unique<metrics::registry>()),
      registry_(registry != nullptr ? *registry : *own_registry_),
      source_(src ? std::move(src) : std::make_shared<source>(url_.redacted, source_options{}, registry_)),
      options_(options),
      opened_metric_(registry_.add_counter("couch_bridge_couch_connections_opened_total",
                                           "Connections opened to CouchDB (kept-alive ones are reused)")),
      logins_metric_(registry_.add_counter("couch_bridge_couch_session_logins_total",
                                           "Cookie logins (POST /_session), one for all feeds of a source")) {}

client::~client() = default;

void client::authorize(http::request_header<>& req, std::string const& cookie) const {
    req.set(http::field::host, url_.host);
    req.set(http::field::user_agent, "couch-kafka-bridge");
    req.set(http::field::accept, "application/json");
    if (cookie_auth()) {
        if (!cookie.empty()) {
            req.set(http::field::cookie, cookie);
        }
    } else if (!url_.user.empty()) {
        req.set(http::field::authorization, "Basic " + base64(url_.user + ":" + url_.password));
    }
}

asio::awaitable<detail::connect_result> client::connect(detail::connection& c, asio::any_io_executor ex,
                                                        std::chrono::milliseconds timeout) {
    {
        std::lock_guard lock(mutex_);
        ++counters_.connections_opened;
    }
    opened_metric_.inc();
    co_return co_await detail::connect(c, std::move(ex), url_, ssl_.get(), cfg_.tls_verify, timeout);
}

std::unique_ptr<detail::connection> client::take_kept(asio::any_io_executor const& ex) {
    std::unique_ptr<detail::connection> out;
    std::vector<std::unique_ptr<detail::connection>> expired;
    {
        std::lock_guard lock(mutex_);
        auto const oldest = std::chrono::steady_clock::now() - options_.max_kept_idle;
        for (auto it = kept_.begin(); it != kept_.end();) {
            if (it->since < oldest) {
                expired.push_back(std::move(it->conn));
                it = kept_.erase(it);
            } else {
                ++it;
            }
        }
        // The most recently kept first: the least likely to be closed by now.
        for (auto it = kept_.rbegin(); it != kept_.rend(); ++it) {
            if (it->ex == ex) {
                out = std::move(it->conn);
                kept_.erase(std::next(it).base());
                break;
            }
        }
        if (out) {
            ++counters_.reused;
        }
    }
    for (auto& c : expired) {
        c->close();
    }
    return out;
}

void client::keep(asio::any_io_executor ex, std::unique_ptr<detail::connection> c) {
    if (!c || !c->open()) {
        return;
    }
    std::unique_ptr<detail::connection> evicted;
    {
        std::lock_guard lock(mutex_);
        kept_.push_back(kept{std::move(ex), std::move(c), std::chrono::steady_clock::now()});
        if (kept_.size() > std::max<std::size_t>(options_.max_kept, 1)) {
            evicted = std::move(kept_.front().conn);
            kept_.erase(kept_.begin());
        }
    }
    if (evicted) {
        evicted->close();
    }
}

client::counters client::stats() const {
    std::lock_guard lock(mutex_);
    return counters_;
}

asio::awaitable<exchange_reply> client::exchange(request_slot& slot, http::verb verb, std::string target,
                                                 std::string body, std::string cookie, std::size_t body_limit,
                                                 std::chrono::milliseconds timeout) {
    exchange_reply out;
    auto const ex = co_await asio::this_coro::executor;
    slot.cancelled_ = false;
    http::request<http::string_body> req{verb, target, 11};
    authorize(req, cookie);
    if (!body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = std::move(body);
    }
    req.keep_alive(true);
    req.prepare_payload();
    for (int attempt = 0; attempt < 2; ++attempt) {
        slot.conn_ = take_kept(ex);
        bool const reused = slot.conn_ != nullptr;
        if (!reused) {
            slot.conn_ = std::make_unique<detail::connection>();
            auto r = co_await connect(*slot.conn_, ex, timeout);
            if (!r.ec && slot.cancelled_) {
                r.ec = asio::error::operation_aborted;
            }
            if (r.ec) {
                slot.conn_->close();
                slot.conn_.reset();
                out.connect_failed = true;
                out.ec = r.ec;
                out.tls_rejected = std::move(r.tls_rejected);
                co_return out;
            }
        }
        auto& c = *slot.conn_;
        c.tcp().expires_after(timeout);
        error_code ec = co_await detail::write(c, req);
        beast::flat_buffer buf;
        http::response_parser<http::string_body> p;
        p.body_limit(body_limit);
        if (!ec) {
            c.tcp().expires_after(timeout);
            ec = co_await detail::read_all(c, buf, p);
        }
        if (!ec && slot.cancelled_) {
            ec = asio::error::operation_aborted;
        }
        if (!ec) {
            out.status = p.get().result_int();
            out.body = std::move(p.get().body());
            // The session cookie, even when other Set-Cookie fields (a
            // proxy's) come first.
            auto const cookies = p.get().equal_range(http::field::set_cookie);
            for (auto it = cookies.first; it != cookies.second; ++it) {
                if (out.set_cookie.empty() || it->value().starts_with("AuthSession=")) {
                    out.set_cookie = std::string(it->value());
                }
            }
            auto conn = std::move(slot.conn_);
            if (p.get().keep_alive() && buf.size() == 0) {
                c.tcp().expires_never();
                keep(ex, std::move(conn));
            } else {
                conn->close();
            }
            co_return out;
        }
        slot.conn_->close();
        slot.conn_.reset();
        if (!reused || !detail::stale(ec) || slot.cancelled_) {
            out.ec = ec;
            co_return out;
        }
    }
    out.ec = asio::error::connection_reset; // the server keeps closing kept connections
    co_return out;
}

asio::awaitable<client::session_result> client::login(request_slot& slot, std::chrono::milliseconds timeout) {
    {
        std::lock_guard lock(mutex_);
        ++counters_.logins;
    }
    logins_metric_.inc();
    boost::json::object o{{"name", url_.user}, {"password", url_.password}};
    session_result out;
    out.reply = co_await exchange(slot, http::verb::post, url_.prefix + "/_session", boost::json::serialize(o), {},
                                  1u << 16, timeout);
    if (out.reply.ec == asio::error::operation_aborted && slot.cancelled_) {
        out.cancelled = true;
        co_return out;
    }
    auto cookie = out.reply.set_cookie.substr(0, out.reply.set_cookie.find(';'));
    if (!out.reply.ec && out.reply.status == 200 && cookie.starts_with("AuthSession=") && cookie.size() > 12) {
        out.ok = true;
        out.cookie = std::move(cookie);
    }
    co_return out;
}

asio::awaitable<client::session_result> client::session(request_slot& slot, std::chrono::milliseconds timeout) {
    if (!cookie_auth()) {
        session_result ok;
        ok.ok = true;
        co_return ok;
    }
    slot.cancelled_ = false;
    for (;;) {
        std::shared_ptr<request_slot::login_waiter> w;
        {
            std::lock_guard lock(mutex_);
            if (!cookie_.empty()) {
                session_result ok;
                ok.ok = true;
                ok.cookie = cookie_;
                co_return ok;
            }
            if (logging_in_) {
                w = std::make_shared<request_slot::login_waiter>(co_await asio::this_coro::executor);
                login_waiters_.push_back(w);
                slot.waiter_ = w;
                slot.waiting_on_ = this;
            } else {
                logging_in_ = true;
            }
        }
        if (w) {
            for (;;) {
                co_await w->timer.async_wait(detail::use_tuple);
                std::lock_guard lock(mutex_);
                if (w->done || w->cancelled) {
                    break;
                }
                w->timer.expires_at(std::chrono::steady_clock::time_point::max()); // a stale wake-up
            }
            slot.waiter_.reset();
            slot.waiting_on_ = nullptr;
            if (w->cancelled) {
                session_result c;
                c.cancelled = true;
                co_return c;
            }
            if (w->result.cancelled) {
                continue; // the caller that logged in gave up: one of the waiters tries
            }
            co_return w->result;
        }
        auto r = co_await login(slot, timeout);
        std::vector<std::shared_ptr<request_slot::login_waiter>> waiters;
        {
            std::lock_guard lock(mutex_);
            logging_in_ = false;
            if (r.ok) {
                cookie_ = r.cookie;
            }
            waiters.swap(login_waiters_);
            for (auto const& each : waiters) {
                each->result = r;
                each->done = true;
            }
        }
        for (auto& each : waiters) {
            auto ex = each->timer.get_executor();
            asio::post(ex, [each = std::move(each)] { each->timer.cancel(); });
        }
        co_return r;
    }
}

void client::cancel_wait(request_slot& slot) {
    auto w = std::move(slot.waiter_);
    slot.waiting_on_ = nullptr;
    {
        std::lock_guard lock(mutex_);
        if (w->done) {
            return;
        }
        w->cancelled = true;
        std::erase(login_waiters_, w);
    }
    w->timer.cancel();
}

void client::session_refused(std::string const& cookie) {
    std::lock_guard lock(mutex_);
    if (!cookie.empty() && cookie_ == cookie) {
        cookie_.clear();
    }
}

asio::awaitable<http_reply> client::request(request_slot& slot, http::verb verb, std::string target, std::string body,
                                            std::size_t body_limit, std::chrono::milliseconds timeout) {
    auto clean = [this](std::string s) { return common::redact_secret(std::move(s), url_.password); };
    auto transport = [&](exchange_reply const& r, std::string const& what) {
        if (!r.tls_rejected.empty()) {
            return clean("TLS certificate of " + url_.redacted + " not accepted (" + r.tls_rejected +
                         "); give its CA in ca_file, or turn verification off with tls_verify=false");
        }
        return clean(what + " " + url_.redacted + target + " failed: " + r.ec.message());
    };
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto s = co_await session(slot, timeout);
        if (!s.ok) {
            if (s.cancelled || s.reply.ec) {
                co_return http_reply{s.cancelled ? std::string("cancelled")
                                                 : transport(s.reply, "cookie login (POST /_session) before"),
                                     0, {}};
            }
            co_return http_reply{"cookie login (POST /_session) at " + url_.redacted + " answered HTTP " +
                                     std::to_string(s.reply.status),
                                 0, {}};
        }
        auto r = co_await exchange(slot, verb, url_.prefix + target, body, s.cookie, body_limit, timeout);
        if (r.ec) {
            co_return http_reply{r.connect_failed && r.tls_rejected.empty()
                                     ? clean("cannot connect to " + url_.redacted + ": " + r.ec.message())
                                     : transport(r, std::string(http::to_string(verb))),
                                 0, {}};
        }
        if (r.status == 401 && cookie_auth() && attempt == 0) {
            session_refused(s.cookie); // the session expired: log in once more
            continue;
        }
        co_return http_reply{{}, r.status, std::move(r.body)};
    }
    co_return http_reply{"unreachable", 0, {}};
}

} // namespace couch
