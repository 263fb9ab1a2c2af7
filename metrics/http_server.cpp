#include "metrics/http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/message_generator.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <exception>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <utility>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace metrics {

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr char const* server_name = "couch-kafka-bridge";

tcp::endpoint parse_listen(asio::any_io_executor const& ex, std::string const& listen) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) {
        throw std::runtime_error("invalid listen address '" + listen + "': expected host:port");
    }
    std::string host = listen.substr(0, colon);
    std::string port_text = listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string::npos) {
        throw std::runtime_error("invalid listen address '" + listen + "': write IPv6 addresses as [addr]:port");
    }
    unsigned port = 0;
    auto [end, err] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || err != std::errc{} || end != port_text.data() + port_text.size() || port > 65535) {
        throw std::runtime_error("invalid listen address '" + listen + "': port must be a number from 0 to 65535");
    }
    if (host.empty()) {
        host = "0.0.0.0";
    }
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(host, ec);
    if (!ec) {
        return {addr, static_cast<std::uint16_t>(port)};
    }
    tcp::resolver resolver(ex);
    auto results = resolver.resolve(host, port_text, tcp::resolver::passive, ec);
    if (ec || results.empty()) {
        throw std::runtime_error("cannot listen on " + listen + ": cannot resolve '" + host +
                                 "': " + (ec ? ec.message() : std::string("no address")));
    }
    return results.begin()->endpoint();
}

void log_coroutine_exception(std::exception_ptr e, char const* what) {
    if (!e) {
        return;
    }
    try {
        std::rethrow_exception(e);
    } catch (std::exception const& x) {
        spdlog::error("http server: {} ended with an error: {}", what, x.what());
    } catch (...) {
        spdlog::error("http server: {} ended with an unknown exception", what);
    }
}

bool is_http_parse_error(beast::error_code const& ec) {
    return ec.category() == beast::error_code(http::error::bad_target).category();
}

} // namespace

struct detail::http_server_state {
    http_server_state(asio::any_io_executor ex, registry& r, http_server_options o)
        : executor(std::move(ex)), acceptor(asio::make_strand(executor)), reg(r), opts(o) {}

    asio::any_io_executor executor;
    tcp::acceptor acceptor; // on its own strand once started
    registry& reg;
    http_server_options opts;
    std::map<std::string, http_handler, std::less<>> handlers; // frozen by start()
    std::map<std::string, http_request_handler, std::less<>> prefix_handlers; // frozen by start()
    std::string listen_text;
    std::uint16_t port = 0;
    bool started = false;
    std::atomic<std::size_t> connections{0};
    counter* rejected = nullptr;

    // Open sessions, so that stop() can close them. stopped_ is guarded by
    // the same mutex so that no session registers after stop() looked.
    std::mutex sessions_mutex;
    bool stopped = false;
    std::uint64_t next_session_id = 0;
    std::map<std::uint64_t, std::weak_ptr<beast::tcp_stream>> sessions;

    bool is_stopped() {
        std::lock_guard lock(sessions_mutex);
        return stopped;
    }

    void count_request(std::string_view path, unsigned status) {
        reg.add_counter("couch_bridge_http_requests_total", "HTTP requests served by the operations server.",
                        {{"path", std::string(path)}, {"code", std::to_string(status)}})
            .inc();
    }

    // The prefix handler for `path`, or end().
    auto find_prefix(std::string_view path) const {
        for (auto it = prefix_handlers.begin(); it != prefix_handlers.end(); ++it) {
            if (path == it->first || (path.starts_with(it->first) && path.size() > it->first.size() &&
                                      path[it->first.size()] == '/')) {
                return it;
            }
        }
        return prefix_handlers.end();
    }

    http_response call_prefix(http_request_handler const& h, std::string const& name,
                              http::request<http::string_body> const& req, bool loopback) {
        http_request in;
        in.method = std::string(req.method_string());
        std::string_view target = req.target();
        auto const q = target.find('?');
        in.path = std::string(target.substr(0, q));
        in.query = q == std::string_view::npos ? std::string() : std::string(target.substr(q + 1));
        if (auto a = req.find(http::field::authorization); a != req.end()) {
            in.authorization = std::string(a->value());
        }
        in.body = req.body();
        in.from_loopback = loopback;
        http_response r;
        try {
            r = h(in);
        } catch (std::exception const& e) {
            spdlog::error("http server: handler for {} failed: {}", name, e.what());
            r = {500, "text/plain; charset=utf-8", "internal error\n"};
        }
        if (r.status < 100 || r.status > 599) {
            r = {500, "text/plain; charset=utf-8", "internal error\n"};
        }
        return r;
    }

    http::message_generator respond(http::request<http::string_body> const& req, bool loopback) {
        std::string_view target = req.target();
        auto path = target.substr(0, target.find('?'));
        http_response r;
        std::string_view counted_path = "other";
        bool method_ok = req.method() == http::verb::get || req.method() == http::verb::head;
        auto it = handlers.find(path);
        if (it != handlers.end()) {
            counted_path = it->first;
        }
        auto const pit = it == handlers.end() ? find_prefix(path) : prefix_handlers.end();
        if (pit != prefix_handlers.end()) {
            counted_path = pit->first;
            bool const allowed = method_ok || req.method() == http::verb::put || req.method() == http::verb::post ||
                                 req.method() == http::verb::delete_;
            r = allowed ? call_prefix(pit->second, pit->first, req, loopback)
                        : http_response{405, "text/plain; charset=utf-8", "method not allowed\n"};
        } else if (!method_ok) {
            r = {405, "text/plain; charset=utf-8", "method not allowed (GET or HEAD only)\n"};
        } else if (it == handlers.end()) {
            r = {404, "text/plain; charset=utf-8", "not found\n"};
        } else {
            try {
                r = it->second();
            } catch (std::exception const& e) {
                spdlog::error("http server: handler for {} failed: {}", it->first, e.what());
                r = {500, "text/plain; charset=utf-8", "internal error\n"};
            } catch (...) {
                spdlog::error("http server: handler for {} failed with an unknown exception", it->first);
                r = {500, "text/plain; charset=utf-8", "internal error\n"};
            }
            if (r.status < 100 || r.status > 599) {
                spdlog::error("http server: handler for {} returned invalid status {}", it->first, r.status);
                r = {500, "text/plain; charset=utf-8", "internal error\n"};
            }
        }
        count_request(counted_path, r.status);

        auto fill = [&](auto& res) {
            res.result(r.status);
            res.set(http::field::server, server_name);
            res.set(http::field::content_type, r.content_type);
            res.set(http::field::cache_control, "no-store");
            if (r.status == 405) {
                res.set(http::field::allow, "GET, HEAD");
            }
            res.keep_alive(req.keep_alive());
        };
        if (req.method() == http::verb::head) {
            http::response<http::empty_body> res;
            res.version(req.version());
            fill(res);
            res.content_length(r.body.size());
            return res;
        }
        http::response<http::string_body> res;
        res.version(req.version());
        fill(res);
        res.body() = std::move(r.body);
        res.prepare_payload();
        return res;
    }
};

namespace {

// Unregisters a session and releases its connection slot however the
// session coroutine ends (return, exception, or destruction of a pending
// frame when the io_context goes away).
struct session_guard {
    std::shared_ptr<detail::http_server_state> self;
    std::uint64_t id;
    session_guard(std::shared_ptr<detail::http_server_state> s, std::uint64_t i) : self(std::move(s)), id(i) {}
    session_guard(session_guard const&) = delete;
    session_guard& operator=(session_guard const&) = delete;
    ~session_guard() {
        {
            std::lock_guard lock(self->sessions_mutex);
            self->sessions.erase(id);
        }
        self->connections.fetch_sub(1);
    }
};

asio::awaitable<void> run_session(std::shared_ptr<detail::http_server_state> self,
                                         std::shared_ptr<beast::tcp_stream> stream, std::uint64_t id) {
    session_guard guard{self, id};
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(self->opts.header_limit));
        parser.body_limit(self->opts.body_limit);
        // One deadline for the whole request: a client that trickles bytes
        // (slowloris) cannot keep the slot past it.
        stream->expires_after(self->opts.read_timeout);
        auto [ec, n] = co_await http::async_read(*stream, buffer, parser, use_tuple);
        (void)n;
        if (ec) {
            if (ec != http::error::end_of_stream && ec != http::error::partial_message && is_http_parse_error(ec) &&
                !self->is_stopped()) {
                // Malformed or too large: say so, then close, since the
                // stream position is unknown.
                unsigned status = ec == http::error::body_limit ? 413 : 400;
                http::response<http::string_body> res{static_cast<http::status>(status), 11};
                res.set(http::field::server, server_name);
                res.set(http::field::content_type, "text/plain; charset=utf-8");
                res.body() = "bad request: " + ec.message() + "\n";
                res.keep_alive(false);
                res.prepare_payload();
                self->count_request("other", status);
                stream->expires_after(self->opts.write_timeout);
                auto [wec, wn] = co_await http::async_write(*stream, res, use_tuple);
                (void)wec;
                (void)wn;
            }
            // Otherwise EOF, timeout, reset or stop(): nothing to answer.
            break;
        }
        if (self->is_stopped()) {
            break;
        }
        bool keep_alive = parser.get().keep_alive();
        beast::error_code pec;
        auto const peer = stream->socket().remote_endpoint(pec);
        bool const loopback = !pec && peer.address().is_loopback();
        auto msg = self->respond(parser.get(), loopback);
        stream->expires_after(self->opts.write_timeout);
        auto [wec, wn] = co_await beast::async_write(*stream, std::move(msg), use_tuple);
        (void)wn;
        if (wec || !keep_alive) {
            break;
        }
    }
    beast::error_code ignored;
    stream->socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream->close();
}

asio::awaitable<void> run_accept_loop(std::shared_ptr<detail::http_server_state> self) {
    for (;;) {
        auto [ec, socket] = co_await self->acceptor.async_accept(asio::make_strand(self->executor), use_tuple);
        if (ec == asio::error::operation_aborted || self->is_stopped()) {
            co_return;
        }
        if (ec) {
            // E.g. EMFILE: the listening socket stays readable, so retrying
            // at once would spin. Back off briefly and keep serving.
            spdlog::warn("http server: accept on {} failed: {}", self->listen_text, ec.message());
            asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
            co_await timer.async_wait(use_tuple);
            continue;
        }
        if (self->connections.load() >= self->opts.max_connections) {
            self->rejected->inc();
            beast::error_code ignored;
            socket.close(ignored);
            continue;
        }
        auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
        std::uint64_t id = 0;
        {
            std::lock_guard lock(self->sessions_mutex);
            if (self->stopped) {
                co_return;
            }
            id = self->next_session_id++;
            self->sessions.emplace(id, stream);
            self->connections.fetch_add(1);
        }
        asio::co_spawn(stream->get_executor(), run_session(self, stream, id),
                       [](std::exception_ptr e) { log_coroutine_exception(e, "session"); });
    }
}

} // namespace

http_server::http_server(boost::asio::any_io_executor ex, std::string const& listen, registry& reg)
    : http_server(std::move(ex), listen, reg, http_server_options{}) {}

http_server::http_server(boost::asio::any_io_executor ex, std::string const& listen, registry& reg,
                         http_server_options opts)
    : impl_(std::make_shared<detail::http_server_state>(std::move(ex), reg, opts)) {
    impl_->listen_text = listen;
    auto ep = parse_listen(impl_->executor, listen);
    auto fail = [&](boost::system::error_code const& ec) {
        return std::runtime_error("cannot listen on " + listen + ": " + ec.message());
    };
    boost::system::error_code ec;
    auto& a = impl_->acceptor;
    if (a.open(ep.protocol(), ec); ec) {
        throw fail(ec);
    }
    // Lets a restarted bridge bind while old connections sit in TIME_WAIT.
    if (a.set_option(asio::socket_base::reuse_address(true), ec); ec) {
        throw fail(ec);
    }
    if (a.bind(ep, ec); ec) {
        throw fail(ec);
    }
    if (a.listen(asio::socket_base::max_listen_connections, ec); ec) {
        throw fail(ec);
    }
    impl_->port = a.local_endpoint().port();
    impl_->rejected = &reg.add_counter("couch_bridge_http_connections_rejected_total",
                                       "Connections to the operations server closed because too many were open.");
    impl_->handlers["/metrics"] = [&reg] {
        return http_response{200, "text/plain; version=0.0.4; charset=utf-8", reg.expose()};
    };
    // Liveness: answering at all is the signal (the event loop runs). The
    // bridge may replace it with a richer check.
    impl_->handlers["/healthz"] = [] { return http_response{200, "text/plain; charset=utf-8", "ok\n"}; };
}

http_server::~http_server() { stop(); }

void http_server::handle_prefix(std::string prefix, http_request_handler h) {
    if (impl_->started) {
        throw std::logic_error("http_server::handle_prefix(" + prefix + ") after start()");
    }
    if (prefix.empty() || prefix.front() != '/') {
        throw std::logic_error("http_server::handle_prefix: prefix '" + prefix + "' must start with '/'");
    }
    impl_->prefix_handlers[std::move(prefix)] = std::move(h);
}

void http_server::handle(std::string path, http_handler h) {
    if (impl_->started) {
        throw std::logic_error("http_server::handle(" + path + ") after start()");
    }
    if (path.empty() || path.front() != '/') {
        throw std::logic_error("http_server::handle: path '" + path + "' must start with '/'");
    }
    impl_->handlers[std::move(path)] = std::move(h);
}

void http_server::start() {
    if (impl_->started) {
        throw std::logic_error("http_server::start() called twice");
    }
    impl_->started = true;
    asio::co_spawn(impl_->acceptor.get_executor(), run_accept_loop(impl_),
                   [](std::exception_ptr e) { log_coroutine_exception(e, "accept loop"); });
}

void http_server::stop() noexcept {
    std::vector<std::shared_ptr<beast::tcp_stream>> open;
    {
        std::lock_guard lock(impl_->sessions_mutex);
        if (impl_->stopped) {
            return;
        }
        impl_->stopped = true;
        for (auto const& [id, weak] : impl_->sessions) {
            if (auto s = weak.lock()) {
                open.push_back(std::move(s));
            }
        }
    }
    try {
        // The acceptor and each stream belong to their strands: close them
        // there, never from this thread.
        asio::post(impl_->acceptor.get_executor(), [self = impl_] {
            boost::system::error_code ignored;
            self->acceptor.close(ignored);
        });
        for (auto& s : open) {
            asio::post(s->get_executor(), [s] {
                beast::error_code ignored;
                s->socket().shutdown(tcp::socket::shutdown_both, ignored);
                s->close();
            });
        }
    } catch (std::exception const& e) {
        // post() allocates; if that fails the connections close when the
        // io_context is destroyed.
        spdlog::error("http server: stop failed: {}", e.what());
    }
}

std::uint16_t http_server::port() const { return impl_->port; }

} // namespace metrics
