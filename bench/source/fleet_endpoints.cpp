#include "bench/source/fleet_endpoints.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <chrono>
#include <limits>

namespace bench_source {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using asio::ip::tcp;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
using clock_type = std::chrono::steady_clock;

// A JSON string parameter (either spelling); "" when absent, nullopt when
// it is not a JSON string.
std::optional<std::string> key_param(query_map const& q, std::string_view a, std::string_view b)
{
    auto v = param(q, a);
    if (v.empty()) {
        v = param(q, b);
    }
    if (v.empty()) {
        return std::string{};
    }
    boost::system::error_code ec;
    auto const parsed = json::parse(v, ec);
    if (ec || !parsed.is_string()) {
        return std::nullopt;
    }
    return std::string(parsed.as_string());
}

std::string seq_text(std::uint64_t n)
{
    // Shaped like CouchDB's; the leading number is what this server reads back.
    return "\"" + std::to_string(n) + "-g1AAAAB4bench\"";
}

std::optional<std::uint64_t> parse_since(std::string_view since, std::uint64_t now)
{
    if (since.empty()) {
        return 0;
    }
    if (since == "now") {
        return now;
    }
    auto const dash = since.find('-');
    return to_uint(since.substr(0, dash));
}

void append_row(std::string& out, db_update const& u, std::vector<std::string> const& names)
{
    out += R"({"db_name":)";
    out += json::serialize(json::string(names[u.db]));
    out += R"(,"type":"updated","seq":)";
    out += seq_text(u.seq);
    out += '}';
}

// The continuous feed after its header: rows as they come, heartbeats, the
// end line after `timeout` without heartbeats.
asio::awaitable<bool> follow_updates(tcp::socket& sock, live_state& live, std::vector<std::string> const& names,
                                     std::atomic<std::uint64_t>& bytes, std::uint64_t pos,
                                     std::chrono::milliseconds heartbeat, std::chrono::milliseconds timeout)
{
    change_signal::subscription sub(live.updates_signal(), sock.get_executor());
    auto last_write = clock_type::now();
    std::string buf;
    for (;;) {
        auto const events = live.updates_after(pos, 1000);
        for (auto const& u : events) {
            append_row(buf, u, names);
            buf += '\n';
            if (!co_await write_chunk(sock, bytes, buf)) {
                co_return false;
            }
            pos = u.seq;
            last_write = clock_type::now();
        }
        if (!events.empty()) {
            continue;
        }
        auto const now = clock_type::now();
        if (heartbeat.count() > 0 && now - last_write >= heartbeat) {
            buf = "\n";
            if (!co_await write_chunk(sock, bytes, buf)) {
                co_return false;
            }
            last_write = now;
        }
        if (heartbeat.count() == 0 && now - last_write >= timeout) {
            break;
        }
        sub.timer().expires_at(last_write + (heartbeat.count() > 0 ? heartbeat : timeout));
        co_await sub.timer().async_wait(tuple_awaitable); // aborted: woken by a write
        auto const cs = co_await asio::this_coro::cancellation_state;
        if (cs.cancelled() != asio::cancellation_type::none) {
            co_return false; // the client left
        }
    }
    buf = R"({"last_seq":)" + seq_text(pos) + "}\n";
    co_return co_await write_chunk(sock, bytes, buf) && co_await write_raw(sock, "0\r\n\r\n");
}

} // namespace

std::optional<std::string> all_dbs_body(std::vector<std::string> const& sorted, query_map const& q,
                                        std::string& error)
{
    auto const start = key_param(q, "start_key", "startkey");
    auto const end = key_param(q, "end_key", "endkey");
    if (!start || !end) {
        error = "start_key and end_key must be JSON strings";
        return std::nullopt;
    }
    auto const limit = param(q, "limit").empty() ? std::optional<std::uint64_t>(std::numeric_limits<std::uint64_t>::max())
                                                 : to_uint(param(q, "limit"));
    auto const skip = param(q, "skip").empty() ? std::optional<std::uint64_t>(0) : to_uint(param(q, "skip"));
    if (!limit || !skip) {
        error = "limit and skip must be non-negative integers";
        return std::nullopt;
    }
    auto it = std::lower_bound(sorted.begin(), sorted.end(), *start);
    auto const to = end->empty() ? sorted.end() : std::upper_bound(sorted.begin(), sorted.end(), *end);
    it += static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(*skip, static_cast<std::uint64_t>(std::max(to - it, std::ptrdiff_t{0}))));
    json::array out;
    for (std::uint64_t n = 0; it < to && n < *limit; ++it, ++n) {
        out.emplace_back(*it);
    }
    return json::serialize(out) + "\n";
}

asio::awaitable<bool> serve_db_updates(tcp::socket& sock, request const& req, query_map const& q, live_state& live,
                                       std::vector<std::string> const& names, std::atomic<std::uint64_t>& bytes)
{
    auto const feed = param(q, "feed").empty() ? std::string_view{"normal"} : param(q, "feed");
    if (feed != "normal" && feed != "continuous") {
        co_return co_await send_json(sock, req, http::status::bad_request,
                                     error_body("bad_request", "bench-source supports feed=normal|continuous"));
    }
    auto const since = parse_since(param(q, "since"), live.last_update_seq());
    auto const heartbeat = to_uint(param(q, "heartbeat"));
    auto const timeout = to_uint(param(q, "timeout"));
    if (!since || (!param(q, "heartbeat").empty() && !heartbeat) || (!param(q, "timeout").empty() && !timeout)) {
        co_return co_await send_json(sock, req, http::status::bad_request,
                                     error_body("bad_request", "since, heartbeat or timeout is malformed"));
    }
    if (feed == "normal") {
        std::string body = "{\"results\":[\n";
        auto pos = *since;
        bool first = true;
        for (auto const& u : live.updates_after(*since, std::numeric_limits<std::size_t>::max())) {
            body += first ? "" : ",\n";
            first = false;
            append_row(body, u, names);
            pos = u.seq;
        }
        body += "\n],\n\"last_seq\":" + seq_text(pos) + "}\n";
        co_return co_await send_json(sock, req, http::status::ok, std::move(body));
    }
    if (!co_await write_chunked_head(sock, req)) {
        co_return false;
    }
    auto const ok = co_await unless_client_leaves(
        sock, follow_updates(sock, live, names, bytes, *since, std::chrono::milliseconds(heartbeat.value_or(0)),
                             std::chrono::milliseconds(timeout.value_or(60000))));
    co_return ok && req.keep_alive();
}

} // namespace bench_source
