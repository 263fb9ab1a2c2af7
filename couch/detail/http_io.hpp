#pragma once

#include "couch/detail/connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <cstddef>

// HTTP reads and writes on a connection whichever its layer (TLS or plain):
// the one place that tells the two apart, for the client's short requests,
// the feeds' streamed responses and discovery's stream.
namespace couch::detail {

inline constexpr auto use_tuple = boost::asio::as_tuple(boost::asio::use_awaitable);

template <class Msg>
boost::asio::awaitable<boost::system::error_code> write(connection& c, Msg& msg) {
    namespace http = boost::beast::http;
    auto [ec, n] = c.tls ? co_await http::async_write(*c.tls, msg, use_tuple)
                         : co_await http::async_write(*c.plain, msg, use_tuple);
    co_return ec;
}

template <class Parser>
boost::asio::awaitable<boost::system::error_code> read_header(connection& c, boost::beast::flat_buffer& b, Parser& p) {
    namespace http = boost::beast::http;
    auto [ec, n] = c.tls ? co_await http::async_read_header(*c.tls, b, p, use_tuple)
                         : co_await http::async_read_header(*c.plain, b, p, use_tuple);
    co_return ec;
}

template <class Parser>
boost::asio::awaitable<boost::system::error_code> read_all(connection& c, boost::beast::flat_buffer& b, Parser& p) {
    namespace http = boost::beast::http;
    auto [ec, n] = c.tls ? co_await http::async_read(*c.tls, b, p, use_tuple)
                         : co_await http::async_read(*c.plain, b, p, use_tuple);
    co_return ec;
}

template <class Parser>
boost::asio::awaitable<boost::system::error_code> read_some(connection& c, boost::beast::flat_buffer& b, Parser& p) {
    namespace http = boost::beast::http;
    auto [ec, n] = c.tls ? co_await http::async_read_some(*c.tls, b, p, use_tuple)
                         : co_await http::async_read_some(*c.plain, b, p, use_tuple);
    co_return ec;
}

// Raw bytes (a body this side parses itself) into `b`; returns how many.
inline boost::asio::awaitable<std::size_t> read_raw(connection& c, boost::beast::flat_buffer& b, std::size_t max,
                                                    boost::system::error_code& ec) {
    auto const space = b.prepare(max);
    auto [e, n] = c.tls ? co_await c.tls->async_read_some(space, use_tuple)
                        : co_await c.plain->async_read_some(space, use_tuple);
    ec = e;
    b.commit(n);
    co_return n;
}

// A kept connection the server closed meanwhile fails like this on its next
// use: the request is sent again on a new one (once).
inline bool stale(boost::system::error_code ec) {
    namespace http = boost::beast::http;
    return ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
           ec == boost::asio::error::connection_reset || ec == boost::asio::error::broken_pipe ||
           ec == boost::asio::ssl::error::stream_truncated;
}

} // namespace couch::detail
