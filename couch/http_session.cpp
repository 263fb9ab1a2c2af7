#include "couch/http_session.hpp"

#include "common/redact.hpp"
#include "couch/detail/connection.hpp"
#include "couch/url.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <array>
#include <optional>
#include <stdexcept>

namespace couch {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

using detail::connection;

bool stale(error_code ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
           ec == asio::error::broken_pipe;
}

} // namespace

struct http_session::impl {
    impl(asio::any_io_executor e, client_config c, std::chrono::milliseconds t)
        : ex(std::move(e)), cfg(std::move(c)), url(parse_url(cfg)), timeout(t), ssl(detail::make_tls_context(cfg, url)) {}

    std::string clean(std::string s) const { return common::redact_secret(std::move(s), url.password); }

    // Connects `c` (reset first); returns an error sentence, empty on success.
    asio::awaitable<std::string> connect(connection& c) {
        auto r = co_await detail::connect(c, ex, url, ssl.get(), cfg.tls_verify, timeout);
        if (!r.ec) {
            co_return std::string{};
        }
        c.close();
        if (!r.tls_rejected.empty()) {
            co_return "TLS certificate of " + url.redacted + " not accepted (" + r.tls_rejected +
                "); give its CA in ca_file, or turn verification off with tls_verify=false";
        }
        co_return "cannot connect to " + url.redacted + ": " + r.ec.message();
    }

    http::request<http::string_body> make_request(http::verb verb, std::string const& target, std::string body) const {
        http::request<http::string_body> req{verb, url.prefix + target, 11};
        req.set(http::field::host, url.host);
        req.set(http::field::user_agent, "couch-kafka-bridge");
        req.set(http::field::accept, "application/json");
        if (cfg.auth == client_config::auth_mode::cookie) {
            if (!cookie.empty()) {
                req.set(http::field::cookie, cookie);
            }
        } else if (!url.user.empty()) {
            req.set(http::field::authorization, "Basic " + base64(url.user + ":" + url.password));
        }
        if (!body.empty()) {
            req.set(http::field::content_type, "application/json");
            req.body() = std::move(body);
        }
        req.prepare_payload();
        return req;
    }

    template <class Msg>
    asio::awaitable<error_code> write(connection& c, Msg& msg) {
        c.tcp().expires_after(timeout);
        auto [ec, n] = c.tls ? co_await http::async_write(*c.tls, msg, use_tuple)
                             : co_await http::async_write(*c.plain, msg, use_tuple);
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_all(connection& c, beast::flat_buffer& b, Parser& p) {
        c.tcp().expires_after(timeout);
        auto [ec, n] = c.tls ? co_await http::async_read(*c.tls, b, p, use_tuple)
                             : co_await http::async_read(*c.plain, b, p, use_tuple);
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_header(connection& c, beast::flat_buffer& b, Parser& p) {
        c.tcp().expires_after(timeout);
        auto [ec, n] = c.tls ? co_await http::async_read_header(*c.tls, b, p, use_tuple)
                             : co_await http::async_read_header(*c.plain, b, p, use_tuple);
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_some(connection& c, beast::flat_buffer& b, Parser& p) {
        auto [ec, n] = c.tls ? co_await http::async_read_some(*c.tls, b, p, use_tuple)
                             : co_await http::async_read_some(*c.plain, b, p, use_tuple);
        co_return ec;
    }

    // One exchange on the kept connection, reopened once when stale.
    asio::awaitable<http_reply> exchange(http::verb verb, std::string const& target, std::string const& body,
                                         std::size_t body_limit) {
        http_reply out;
        for (int attempt = 0; attempt < 2; ++attempt) {
            bool const reused = kept.open();
            if (!reused) {
                kept_buffer.clear();
                if (auto err = co_await connect(kept); !err.empty()) {
                    out.error = clean(err);
                    co_return out;
                }
            }
            auto req = make_request(verb, target, body);
            error_code ec = co_await write(kept, req);
            http::response_parser<http::string_body> p;
            p.body_limit(body_limit);
            if (!ec) {
                ec = co_await read_all(kept, kept_buffer, p);
            }
            if (!ec) {
                out.status = p.get().result_int();
                out.body = std::move(p.get().body());
                auto const cookies = p.get().equal_range(http::field::set_cookie);
                for (auto it = cookies.first; it != cookies.second; ++it) {
                    if (it->value().starts_with("AuthSession=")) {
                        set_cookie = std::string(it->value());
                    }
                }
                if (!p.get().keep_alive()) {
                    kept.close();
                }
                co_return out;
            }
            kept.close();
            if (!(reused && stale(ec))) {
                out.error = clean(std::string(http::to_string(verb)) + " " + url.redacted + target + " failed: " +
                                  ec.message());
                co_return out;
            }
        }
        out.error = "request to " + url.redacted + " failed: the server keeps closing the connection";
        co_return out;
    }

    // Cookie auth: POST /_session. Empty on success, else why not.
    asio::awaitable<std::string> login() {
        cookie.clear();
        set_cookie.clear();
        boost::json::object o{{"name", url.user}, {"password", url.password}};
        auto r = co_await exchange(http::verb::post, "/_session", boost::json::serialize(o), 1u << 16);
        if (!r.error.empty()) {
            co_return r.error;
        }
        auto const cookie_value = set_cookie.substr(0, set_cookie.find(';'));
        if (r.status != 200 || cookie_value.size() <= 12) {
            co_return "cookie login (POST /_session) at " + url.redacted + " answered HTTP " +
                std::to_string(r.status);
        }
        cookie = cookie_value;
        co_return std::string{};
    }

    bool cookie_auth() const { return cfg.auth == client_config::auth_mode::cookie; }

    asio::any_io_executor ex;
    client_config cfg;
    parsed_url url;
    std::chrono::milliseconds timeout;
    std::unique_ptr<asio::ssl::context> ssl;
    std::string cookie, set_cookie;

    connection kept;
    beast::flat_buffer kept_buffer;

    connection stream;
    beast::flat_buffer stream_buffer;
    std::optional<http::response_parser<http::buffer_body>> stream_parser;
};

http_session::http_session(asio::any_io_executor ex, client_config cfg, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(cfg), timeout)) {}

http_session::~http_session() = default;

std::string const& http_session::redacted_url() const { return impl_->url.redacted; }

asio::awaitable<http_reply> http_session::request(std::string method, std::string target, std::string body,
                                                  std::size_t body_limit) {
    auto& m = *impl_;
    auto const verb = method == "POST" ? http::verb::post : http::verb::get;
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (m.cookie_auth() && m.cookie.empty()) {
            if (auto err = co_await m.login(); !err.empty()) {
                co_return http_reply{m.clean(err), 0, {}};
            }
        }
        auto r = co_await m.exchange(verb, target, body, body_limit);
        if (r.error.empty() && r.status == 401 && m.cookie_auth() && attempt == 0) {
            m.cookie.clear(); // the session expired: log in once more
            continue;
        }
        co_return r;
    }
    co_return http_reply{"unreachable", 0, {}};
}

asio::awaitable<http_reply> http_session::open_stream(std::string target) {
    auto& m = *impl_;
    close_stream();
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (m.cookie_auth() && m.cookie.empty()) {
            if (auto err = co_await m.login(); !err.empty()) {
                co_return http_reply{m.clean(err), 0, {}};
            }
        }
        http_reply out;
        m.stream_buffer.clear();
        if (auto err = co_await m.connect(m.stream); !err.empty()) {
            out.error = m.clean(err);
            co_return out;
        }
        auto req = m.make_request(http::verb::get, target, {});
        m.stream_parser.emplace();
        m.stream_parser->body_limit(boost::none); // a continuous feed has no end
        error_code ec = co_await m.write(m.stream, req);
        if (!ec) {
            ec = co_await m.read_header(m.stream, m.stream_buffer, *m.stream_parser);
        }
        if (ec) {
            close_stream();
            out.error = m.clean("GET " + m.url.redacted + target + " failed: " + ec.message());
            co_return out;
        }
        out.status = m.stream_parser->get().result_int();
        if (out.status == 200) {
            co_return out;
        }
        // Not a stream: read its (bounded) error body, then close.
        std::array<char, 4096> buf{};
        while (!m.stream_parser->is_done() && out.body.size() < (1u << 16)) {
            auto& b = m.stream_parser->get().body();
            b.data = buf.data();
            b.size = buf.size();
            m.stream.tcp().expires_after(m.timeout);
            ec = co_await m.read_some(m.stream, m.stream_buffer, *m.stream_parser);
            out.body.append(buf.data(), buf.size() - m.stream_parser->get().body().size);
            if (ec && ec != http::error::need_buffer) {
                break;
            }
        }
        close_stream();
        if (out.status == 401 && m.cookie_auth() && attempt == 0) {
            m.cookie.clear();
            continue;
        }
        co_return out;
    }
    co_return http_reply{"unreachable", 0, {}};
}

asio::awaitable<stream_piece> http_session::read_stream(std::chrono::milliseconds idle_timeout) {
    auto& m = *impl_;
    stream_piece out;
    if (!m.stream.open() || !m.stream_parser) {
        out.error = "the stream from " + m.url.redacted + " is closed";
        co_return out;
    }
    if (m.stream_parser->is_done()) {
        close_stream();
        out.ended = true;
        co_return out;
    }
    std::array<char, 16384> buf{};
    auto& b = m.stream_parser->get().body();
    b.data = buf.data();
    b.size = buf.size();
    m.stream.tcp().expires_after(idle_timeout);
    auto ec = co_await m.read_some(m.stream, m.stream_buffer, *m.stream_parser);
    out.data.assign(buf.data(), buf.size() - m.stream_parser->get().body().size);
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        out.stalled = ec == beast::error::timeout;
        out.error = m.clean(out.stalled ? "no byte from " + m.url.redacted + " within " +
                                              std::to_string(idle_timeout.count()) + " ms"
                                        : "the stream from " + m.url.redacted + " broke: " + ec.message());
        close_stream();
    } else if (m.stream_parser->is_done() && out.data.empty()) {
        out.ended = true;
        close_stream();
    }
    co_return out;
}

void http_session::close_stream() { impl_->stream.close(); }

void http_session::cancel() {
    impl_->kept.close();
    close_stream();
}

} // namespace couch
