#include "bench/source/http.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <array>
#include <charconv>
#include <cstdio>
#include <variant>

namespace bench_source {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

namespace {
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
} // namespace

std::string percent_decode(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            unsigned v = 0;
            auto const [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
            if (ec == std::errc{} && p == s.data() + i + 3) {
                out += static_cast<char>(v);
                i += 2;
                continue;
            }
        }
        out += s[i] == '+' ? ' ' : s[i];
    }
    return out;
}

query_map parse_query(std::string_view q)
{
    query_map out;
    while (!q.empty()) {
        auto const amp = q.find('&');
        auto const part = q.substr(0, amp);
        q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
        auto const eq = part.find('=');
        if (eq == std::string_view::npos) {
            out[percent_decode(part)] = "";
        } else {
            out[percent_decode(part.substr(0, eq))] = percent_decode(part.substr(eq + 1));
        }
    }
    return out;
}

std::string_view param(query_map const& q, std::string_view name)
{
    auto const it = q.find(name);
    return it == q.end() ? std::string_view{} : std::string_view{it->second};
}

std::optional<std::uint64_t> to_uint(std::string_view s)
{
    std::uint64_t v = 0;
    auto const [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

std::string error_body(std::string_view error, std::string_view reason)
{
    return boost::json::serialize(boost::json::object{{"error", error}, {"reason", reason}}) + "\n";
}

asio::awaitable<bool> send_json(tcp::socket& sock, request const& req, http::status status, std::string body)
{
    http::response<http::string_body> res{status, req.version()};
    res.set(http::field::server, "ckb-bench-source");
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    if (req.method() == http::verb::head) {
        res.content_length(body.size());
    } else {
        res.body() = std::move(body);
        res.prepare_payload();
    }
    http::response_serializer<http::string_body> sr{res};
    if (req.method() == http::verb::head) {
        sr.split(true);
        auto [ec, n] = co_await http::async_write_header(sock, sr, tuple_awaitable);
        co_return !ec;
    }
    auto [ec, n] = co_await http::async_write(sock, sr, tuple_awaitable);
    co_return !ec;
}

asio::awaitable<bool> write_chunk(tcp::socket& sock, std::atomic<std::uint64_t>& bytes, std::string& data)
{
    if (data.empty()) {
        co_return true;
    }
    char head[24];
    auto const len = std::snprintf(head, sizeof head, "%zx\r\n", data.size());
    std::array<asio::const_buffer, 3> bufs{asio::buffer(head, static_cast<std::size_t>(len)), asio::buffer(data),
                                           asio::buffer("\r\n", 2)};
    auto [ec, n] = co_await asio::async_write(sock, bufs, tuple_awaitable);
    bytes.fetch_add(data.size(), std::memory_order_relaxed);
    data.clear();
    co_return !ec;
}

asio::awaitable<bool> write_raw(tcp::socket& sock, std::string_view data)
{
    auto [ec, n] = co_await asio::async_write(sock, asio::buffer(data), tuple_awaitable);
    co_return !ec;
}

asio::awaitable<bool> write_chunked_head(tcp::socket& sock, request const& req)
{
    std::string head =
        "HTTP/1.1 200 OK\r\nServer: ckb-bench-source\r\nContent-Type: application/json\r\n"
        "Cache-Control: must-revalidate\r\nTransfer-Encoding: chunked\r\n";
    if (!req.keep_alive()) {
        head += "Connection: close\r\n";
    }
    head += "\r\n";
    co_return co_await write_raw(sock, head);
}

namespace {

asio::awaitable<void> client_leaves(tcp::socket& sock)
{
    char byte = 0;
    co_await sock.async_read_some(asio::buffer(&byte, 1), tuple_awaitable);
}

} // namespace

asio::awaitable<bool> unless_client_leaves(tcp::socket& sock, asio::awaitable<bool> feed)
{
    using namespace asio::experimental::awaitable_operators;
    auto const outcome = co_await (std::move(feed) || client_leaves(sock));
    co_return outcome.index() == 0 && std::get<0>(outcome);
}

} // namespace bench_source
