#pragma once

#include "couch/changes_feed.hpp" // client_config
#include "couch/url.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

// One HTTP(S) connection to a CouchDB server and how it is opened: shared by
// the feeds (couch/changes_feed.cpp) and the server-wide requests
// (couch/http_session.cpp), so that TLS is set up and verified in one place.
namespace couch::detail {

// TLS or plain, decided at connect time.
struct connection {
    std::optional<boost::beast::tcp_stream> plain;
    std::optional<boost::beast::ssl_stream<boost::beast::tcp_stream>> tls;

    boost::beast::tcp_stream& tcp() { return tls ? boost::beast::get_lowest_layer(*tls) : *plain; }
    // A socket exists and is open.
    bool open();
    // Shuts the socket down and closes it; an operation in flight completes
    // with an error, and the stream objects stay valid. Idempotent, also
    // while the name is still being resolved (no stream yet).
    void close();
    // close(), then drops the streams. Only when nothing is in flight.
    void reset();
};

// The TLS context for `url` (null for http://): the system CAs plus
// cfg.ca_file, peer verification unless cfg.tls_verify is false. Throws
// std::invalid_argument naming an unreadable CA file.
std::unique_ptr<boost::asio::ssl::context> make_tls_context(client_config const& cfg, parsed_url const& url);

struct connect_result {
    boost::system::error_code ec;
    // Set when the handshake failed because the server's certificate was
    // refused: OpenSSL's verify error ("certificate has expired", "hostname
    // mismatch", ...).
    std::string tls_rejected;
};

// Resets `c` and connects it to `url` (resolve, TCP connect, and with `tls`
// the handshake with SNI for DNS names and OpenSSL's own host or IP check
// when `verify`). `timeout` bounds the connect and the handshake each.
boost::asio::awaitable<connect_result> connect(connection& c, boost::asio::any_io_executor ex, parsed_url const& url,
                                               boost::asio::ssl::context* tls, bool verify,
                                               std::chrono::milliseconds timeout);

} // namespace couch::detail
