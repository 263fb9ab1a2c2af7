#include "couch/http_session.hpp"

#include "common/redact.hpp"
#include "couch/detail/http_io.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <optional>

namespace couch {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

struct http_session::impl {
    impl(asio::any_io_executor e, std::shared_ptr<client> c, std::chrono::milliseconds t)
        : ex(std::move(e)), cl(std::move(c)), timeout(t) {}

    std::string clean(std::string s) const { return common::redact_secret(std::move(s), cl->url().password); }
    std::string const& url() const { return cl->redacted_url(); }

    // Connects the stream's connection; an error sentence, empty on success.
    asio::awaitable<std::string> connect(detail::connection& c) {
        auto r = co_await cl->connect(c, ex, timeout);
        if (!r.ec) {
            co_return std::string{};
        }
        c.close();
        if (!r.tls_rejected.empty()) {
            co_return "TLS certificate of " + url() + " not accepted (" + r.tls_rejected +
                "); give its CA in ca_file, or turn verification off with tls_verify=false";
        }
        co_return "cannot connect to " + url() + ": " + r.ec.message();
    }

    asio::any_io_executor ex;
    std::shared_ptr<client> cl;
    std::chrono::milliseconds timeout;
    request_slot slot;

    detail::connection stream;
    beast::flat_buffer stream_buffer;
    std::optional<http::response_parser<http::buffer_body>> stream_parser;
};

http_session::http_session(asio::any_io_executor ex, client_config cfg, std::chrono::milliseconds timeout)
    : http_session(ex, std::make_shared<client>(ex, std::move(cfg), nullptr, nullptr), timeout) {}

http_session::http_session(asio::any_io_executor ex, std::shared_ptr<client> cl, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(cl), timeout)) {}

http_session::~http_session() = default;

std::string const& http_session::redacted_url() const { return impl_->url(); }

asio::awaitable<http_reply> http_session::request(std::string method, std::string target, std::string body,
                                                  std::size_t body_limit) {
    auto& m = *impl_;
    auto const verb = method == "POST" ? http::verb::post : http::verb::get;
    co_return co_await m.cl->request(m.slot, verb, std::move(target), std::move(body), body_limit, m.timeout);
}

asio::awaitable<http_reply> http_session::open_stream(std::string target) {
    auto& m = *impl_;
    close_stream();
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto s = co_await m.cl->session(m.slot, m.timeout);
        if (!s.ok) {
            co_return http_reply{s.reply.ec ? m.clean("cookie login (POST /_session) at " + m.url() +
                                                      " failed: " + s.reply.ec.message())
                                            : "cookie login (POST /_session) at " + m.url() + " answered HTTP " +
                                                  std::to_string(s.reply.status),
                                 0, {}};
        }
        http_reply out;
        m.stream_buffer.clear();
        if (auto err = co_await m.connect(m.stream); !err.empty()) {
            out.error = m.clean(err);
            co_return out;
        }
        http::request<http::string_body> req{http::verb::get, m.cl->url().prefix + target, 11};
        m.cl->authorize(req, s.cookie);
        req.prepare_payload();
        m.stream_parser.emplace();
        m.stream_parser->body_limit(boost::none); // a continuous feed has no end
        m.stream.tcp().expires_after(m.timeout);
        error_code ec = co_await detail::write(m.stream, req);
        if (!ec) {
            m.stream.tcp().expires_after(m.timeout);
            ec = co_await detail::read_header(m.stream, m.stream_buffer, *m.stream_parser);
        }
        if (ec) {
            close_stream();
            out.error = m.clean("GET " + m.url() + target + " failed: " + ec.message());
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
            ec = co_await detail::read_some(m.stream, m.stream_buffer, *m.stream_parser);
            out.body.append(buf.data(), buf.size() - m.stream_parser->get().body().size);
            if (ec && ec != http::error::need_buffer) {
                break;
            }
        }
        close_stream();
        if (out.status == 401 && m.cl->cookie_auth() && attempt == 0) {
            m.cl->session_refused(s.cookie);
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
        out.error = "the stream from " + m.url() + " is closed";
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
    auto ec = co_await detail::read_some(m.stream, m.stream_buffer, *m.stream_parser);
    out.data.assign(buf.data(), buf.size() - m.stream_parser->get().body().size);
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        out.stalled = ec == beast::error::timeout;
        out.error = m.clean(out.stalled ? "no byte from " + m.url() + " within " +
                                              std::to_string(idle_timeout.count()) + " ms"
                                        : "the stream from " + m.url() + " broke: " + ec.message());
        close_stream();
    } else if (m.stream_parser->is_done() && out.data.empty()) {
        out.ended = true;
        close_stream();
    }
    co_return out;
}

void http_session::close_stream() { impl_->stream.close(); }

void http_session::cancel() {
    impl_->slot.cancel();
    close_stream();
}

} // namespace couch
