#pragma once

// A scripted CouchDB-protocol server for fault tests: each _changes
// connection takes the next script (write bytes, pause, close, or hold the
// socket open); GET /<db> answers db_info (or db_answer). Runs on the given
// io_context; not thread-safe (read its counters after the context stops).

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "wire.hpp"

namespace couch_test {

namespace fs_asio = boost::asio;
using fs_tcp = boost::asio::ip::tcp;

struct action {
    enum kind { write, pause, close, hold } k;
    std::string bytes;
    std::chrono::milliseconds ms{0};
};
using script = std::vector<action>;

inline action w(std::string s) { return {action::write, std::move(s), {}}; }
inline action pause_for(std::chrono::milliseconds ms) { return {action::pause, {}, ms}; }
inline action close_now() { return {action::close, {}, {}}; }
inline action hold() { return {action::hold, {}, {}}; }


// Scripted server: each _changes connection takes the next script (an empty
// queue means hold). GET /<db> is answered with `db_info` without a script.
class fault_server {
public:
    explicit fault_server(fs_asio::io_context& io) : acceptor_(io, fs_tcp::endpoint(fs_asio::ip::make_address("127.0.0.1"), 0)) {
        fs_asio::co_spawn(io, accept_loop(), fs_asio::detached);
    }
    unsigned short port() const { return acceptor_.local_endpoint().port(); }
    std::string url() const { return "http://u:s3cret@127.0.0.1:" + std::to_string(port()); }
    void push(script s) { scripts_.push_back(std::move(s)); }
    void stop() {
        boost::system::error_code ec;
        acceptor_.close(ec);
        for (auto* s : sockets_) {
            s->close(ec);
        }
    }
    std::vector<std::string> targets;
    std::vector<std::string> methods, bodies; // of each request, in order
    std::vector<std::string> auth_headers;
    std::vector<std::string> cookies; // the Cookie field of each request ("" without); route() may read back()
    std::string db_info = R"({"db_name":"db","update_seq":"999-x"})";
    // When set: the whole answer to the n-th (from 0) GET /<db>; else 200 with db_info.
    std::function<std::string(int)> db_answer;
    int db_requests = 0;
    int connections = 0; // connections accepted
    // Before answering a _changes request: wait this long. Requests accepted
    // and not yet answered are counted (max_unanswered).
    std::chrono::milliseconds answer_delay{0};
    // TCP_NODELAY on the connections (as CouchDB's chttpd sets): every write
    // leaves at once. Without it Nagle holds a small write back until the
    // previous one is acknowledged, and the client acknowledges late (it
    // sends nothing back), so paced rows arrive bunched.
    bool no_delay = false;
    int unanswered = 0, max_unanswered = 0;
    // When set and it returns a script, that script answers the request
    // (any target; checked before the rules above).
    std::function<std::optional<script>(std::string const& method, std::string const& target)> route;

private:
    fs_asio::awaitable<void> accept_loop() {
        for (;;) {
            boost::system::error_code ec;
            auto sock = co_await acceptor_.async_accept(fs_asio::redirect_error(fs_asio::use_awaitable, ec));
            if (ec) {
                co_return;
            }
            fs_asio::co_spawn(acceptor_.get_executor(), session(std::move(sock)), fs_asio::detached);
        }
    }
    fs_asio::awaitable<void> session(fs_tcp::socket sock) {
        sockets_.push_back(&sock);
        ++connections;
        if (no_delay) {
            boost::system::error_code ignored;
            sock.set_option(fs_tcp::no_delay(true), ignored);
        }
        // A script that ends in hold() keeps the connection: a client that
        // reuses it (keep-alive) gets its next request answered here.
        for (;;) { // (not `while (co_await ...)`: GCC 12 miscompiles it)
            bool const more = co_await serve_one(sock);
            if (!more) {
                break;
            }
        }
        std::erase(sockets_, &sock);
    }
    fs_asio::awaitable<bool> serve_one(fs_tcp::socket& sock) {
        boost::system::error_code ec;
        std::string req;
        char buf[4096];
        while (req.find("\r\n\r\n") == std::string::npos) {
            auto n = co_await sock.async_read_some(fs_asio::buffer(buf), fs_asio::redirect_error(fs_asio::use_awaitable, ec));
            if (ec) {
                break;
            }
            req.append(buf, n);
        }
        // A body (POST _changes with a filter): read it all, by Content-Length.
        if (auto cl = req.find("Content-Length: "); !ec && cl != std::string::npos) {
            auto const want = req.find("\r\n\r\n") + 4 + std::stoul(req.substr(cl + 16));
            while (!ec && req.size() < want) {
                auto n = co_await sock.async_read_some(fs_asio::buffer(buf), fs_asio::redirect_error(fs_asio::use_awaitable, ec));
                req.append(buf, n);
            }
        }
        if (!ec) {
            auto const target = req.substr(req.find(' ') + 1, req.find(" HTTP/") - req.find(' ') - 1);
            targets.push_back(target);
            methods.push_back(req.substr(0, req.find(' ')));
            bodies.push_back(req.substr(req.find("\r\n\r\n") + 4));
            auto const a = req.find("Authorization: ");
            auth_headers.push_back(a == std::string::npos ? "" : req.substr(a, req.find("\r\n", a) - a));
            auto const c = req.find("Cookie: ");
            cookies.push_back(c == std::string::npos ? "" : req.substr(c + 8, req.find("\r\n", c) - c - 8));
            script s;
            std::optional<script> routed = route ? route(methods.back(), target) : std::nullopt;
            if (routed) {
                s = std::move(*routed);
            } else if (target.find("/_changes") == std::string::npos) {
                int const n = db_requests++;
                s = {w(db_answer ? db_answer(n) : status_response(200, db_info)), hold()};
            } else if (!scripts_.empty()) {
                s = std::move(scripts_.front());
                scripts_.pop_front();
            } else {
                s = {hold()};
            }
            if (!routed && target.find("/_changes") != std::string::npos && answer_delay.count() > 0) {
                max_unanswered = std::max(max_unanswered, ++unanswered);
                fs_asio::steady_timer t(sock.get_executor(), answer_delay);
                co_await t.async_wait(fs_asio::redirect_error(fs_asio::use_awaitable, ec));
                --unanswered;
            }
            co_return co_await run(sock, s);
        }
        co_return false;
    }
    // True when the script ended in hold() with the connection still open.
    fs_asio::awaitable<bool> run(fs_tcp::socket& sock, script const& s) {
        boost::system::error_code ec;
        fs_asio::steady_timer t(sock.get_executor());
        for (auto const& a : s) {
            switch (a.k) {
            case action::write:
                co_await fs_asio::async_write(sock, fs_asio::buffer(a.bytes), fs_asio::redirect_error(fs_asio::use_awaitable, ec));
                break;
            case action::pause:
                t.expires_after(a.ms);
                co_await t.async_wait(fs_asio::redirect_error(fs_asio::use_awaitable, ec));
                break;
            case action::close:
                sock.close(ec);
                co_return false;
            case action::hold:
                co_return sock.is_open();
            }
            if (ec) {
                co_return false;
            }
        }
        co_return false;
    }
    fs_tcp::acceptor acceptor_;
    std::deque<script> scripts_;
    std::vector<fs_tcp::socket*> sockets_;
};


} // namespace couch_test
