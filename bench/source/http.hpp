#pragma once

// The HTTP plumbing bench-source's handlers share: query strings, small JSON
// answers, chunks of a chunked body, and telling that a client hung up on a
// feed. Every function runs on the connection's strand.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace bench_source {

using request = boost::beast::http::request<boost::beast::http::string_body>;
using query_map = std::map<std::string, std::string, std::less<>>;

std::string percent_decode(std::string_view s);
query_map parse_query(std::string_view q);
// A parameter's value, empty when absent.
std::string_view param(query_map const& q, std::string_view name);
std::optional<std::uint64_t> to_uint(std::string_view s);

// `{"error":…,"reason":…}\n`
std::string error_body(std::string_view error, std::string_view reason);

// A small whole JSON response (HEAD: the header only). False: the write failed.
boost::asio::awaitable<bool> send_json(boost::asio::ip::tcp::socket& sock, request const& req,
                                       boost::beast::http::status status, std::string body);

// Writes `data` as one HTTP chunk (nothing for empty data), adds its size to
// `bytes` and clears it. False: the write failed.
boost::asio::awaitable<bool> write_chunk(boost::asio::ip::tcp::socket& sock, std::atomic<std::uint64_t>& bytes,
                                         std::string& data);
boost::asio::awaitable<bool> write_raw(boost::asio::ip::tcp::socket& sock, std::string_view data);
// The header of a 200 chunked JSON response (a feed). False: the write failed.
boost::asio::awaitable<bool> write_chunked_head(boost::asio::ip::tcp::socket& sock, request const& req);

// Runs `feed` (a streaming response that only writes) while watching the
// socket for the client's hang-up, which a writer that idles between
// heartbeats would otherwise notice only at its next write. Returns the
// feed's result, or false as soon as the client closes (the feed is then
// cancelled). A client that sends anything during a feed counts as gone: no
// client of a feed has anything to say until it ends.
boost::asio::awaitable<bool> unless_client_leaves(boost::asio::ip::tcp::socket& sock,
                                                  boost::asio::awaitable<bool> feed);

} // namespace bench_source
