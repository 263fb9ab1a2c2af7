// Opening a _changes response: the request for the current position, sent
// ahead at the end of a catch-up batch (presend) or when the next batch is
// asked for, and its header. Part of changes_feed (see detail/feed_impl.hpp).
#include "couch/detail/feed_impl.hpp"
#include "couch/detail/http_io.hpp"

#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <boost/system/system_error.hpp>

#include <chrono>
#include <string>
#include <string_view>
#include <utility>

namespace couch {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using namespace std::chrono_literals;

http::request<http::string_body> changes_feed::impl::changes_request() const {
    auto request_body = filter_body();
    http::request<http::string_body> req(request_body.empty() ? http::verb::get : http::verb::post,
                                         changes_target(), 11);
    client_->authorize(req, cookie_);
    if (!request_body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = std::move(request_body);
    }
    req.keep_alive(true);
    req.prepare_payload();
    return req;
}

asio::awaitable<void> changes_feed::impl::presend() {
    batch_done_ = false;
    if (need_db_check_) {
        co_return; // open() checks the database first, then asks
    }
    auto conn = client_->take_kept(ex_);
    if (!conn) {
        co_return;
    }
    auto const gen = generation_;
    auto req = changes_request();
    conn->tcp().expires_after(opt_.request_timeout);
    auto const ec = co_await detail::write(*conn, req);
    conn->tcp().expires_never(); // open() sets the deadline of the header
    if (ec || stopped_ || gen != generation_) {
        // A kept connection the server closed meanwhile, a stop or a
        // rewind: open() sends what it needs then.
        conn->close();
        co_return;
    }
    drop_presented();
    presented_ = std::move(conn);
    presented_target_ = std::string(req.target());
    presented_generation_ = gen;
}

void changes_feed::impl::drop_presented() {
    if (presented_) {
        presented_->close();
        presented_.reset();
    }
}

// Opens the next _changes response (after any wait), or records why not.
asio::awaitable<void> changes_feed::impl::open() {
    if (wait_.count() > 0) {
        auto const d = wait_;
        wait_ = 0ms;
        co_await sleep(d);
        throw_if_stopped();
    }
    auto const gen = generation_;
    if (!quiet_state()) {
        set_state(feed_state::connecting);
    }
    // Our turn among the source's connection attempts; held until the
    // response header is in (or the attempt failed).
    waiter_ = std::make_shared<source::waiter>(ex_);
    auto permit = co_await source_->acquire(waiter_);
    throw_if_stopped();
    if (!permit || gen != generation_) {
        co_return; // a rewind() came in: start over from the new position
    }
    if (client_->cookie_auth() && cookie_.empty()) {
        if (!co_await ensure_session(gen)) {
            throw_if_stopped(); // else ensure_session() recorded why, or a rewind() came in
            co_return;
        }
    }
    if (need_db_check_ && (position_.where == since::kind::at || suspect_missing_)) {
        if (!co_await check_database(gen)) {
            co_return;
        }
    }
    auto req = changes_request();
    // No body limit for the header: Beast checks Content-Length against it
    // while parsing the header, and a 200 body (a normal-feed batch, which
    // servers such as pouchdb send with Content-Length) is read by our own
    // streaming parser, which bounds each row instead. Only an error body is
    // read through Beast, with the limit set below.
    std::optional<http::response_parser<http::string_body>> p;
    // The connection of the last catch-up batch (or of the db check) when
    // one is kept: a catch-up of many batches costs one connection, not one
    // per batch. A kept connection the server closed meanwhile is replaced
    // once, without a reconnect counted.
    for (int attempt = 0; attempt < 2; ++attempt) {
        // The request presend() sent already, if it is still this one.
        bool const sent = attempt == 0 && presented_ && presented_generation_ == gen &&
                          presented_target_ == std::string_view(req.target());
        if (sent) {
            conn_ = std::move(presented_);
        } else {
            drop_presented();
            conn_ = client_->take_kept(ex_);
        }
        bool const reused = conn_ != nullptr;
        buf_.clear();
        if (!reused) {
            conn_ = std::make_unique<detail::connection>();
            auto r = co_await client_->connect(*conn_, ex_, opt_.request_timeout);
            tls_rejected_ = std::move(r.tls_rejected); // see transport_error()
            if (r.ec) {
                throw_if_stopped();
                if (gen == generation_) {
                    transport_error(r.ec, "connecting to");
                }
                co_return;
            }
        }
        conn_->tcp().expires_after(opt_.request_timeout);
        auto ec = sent ? error_code{} : co_await detail::write(*conn_, req);
        p.emplace();
        p->body_limit(boost::none);
        if (!ec) {
            ec = co_await detail::read_header(*conn_, buf_, *p);
        }
        throw_if_stopped();
        if (gen != generation_) {
            co_return;
        }
        if (ec && reused && detail::stale(ec) && attempt == 0) {
            conn_->close();
            continue;
        }
        if (ec) {
            transport_error(ec, "sending _changes request to");
            co_return;
        }
        break;
    }
    permit.release();
    unsigned const status = p->get().result_int();
    if (status != 200) {
        p->body_limit(1u << 16);
        auto ec = co_await detail::read_all(*conn_, buf_, *p);
        throw_if_stopped();
        if (gen != generation_) {
            co_return;
        }
        std::string body;
        if (!ec) {
            body = std::move(p->get().body());
        }
        drop_connection();
        bool const handled = co_await renew_session(status, gen);
        throw_if_stopped();
        if (!handled) {
            on_status(status, body);
        }
        co_return;
    }
    renewed_ = false;
    keep_alive_ = p->keep_alive();
    if (p->chunked()) {
        framing_ = framing::chunked;
    } else if (auto len = p->content_length()) {
        framing_ = framing::length;
        body_left_ = *len;
    } else {
        framing_ = framing::eof;
        keep_alive_ = false;
    }
    decoder_.reset();
    parser_.reset(catching_up_ ? feed_kind::normal : feed_kind::continuous);
    response_open_ = true;
    if (!connected_) {
        connected_ = true;
        connected_at_ = std::chrono::steady_clock::now();
    }
    set_state(catching_up_ ? feed_state::catching_up : feed_state::following);
    if (framing_ == framing::length && body_left_ == 0) {
        end_of_response();
    }
}

} // namespace couch
