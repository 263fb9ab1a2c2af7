#include "bench/source/changes.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <string>

namespace bench_source {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// CouchDB's chunked_response_buffer_size: a normal feed flushes its
// buffered rows as a chunk once they reach this many bytes.
constexpr std::size_t couch_chunk_bytes = 1490;

// Writes rows of one _changes response into large chunks.
struct feed_writer {
    tcp::socket& sock;
    server_state& st;
    std::size_t db;
    bool include_docs;
    bool continuous;
    std::uint64_t seq_interval;
    std::string buf{};
    std::uint64_t pos = 0;               // seq of the last row written (or since)
    std::uint64_t rows_in_response = 0;

    // Appends rows pos+1..target, flushing a chunk whenever the buffer is
    // full (in CouchDB framing: after every continuous row, and at 1490 bytes
    // for a normal feed). With a row rate, waits for each row's turn and
    // flushes what is buffered before waiting. Between seq_interval rows
    // `seq` is null, as CouchDB does; the last row of every call carries its
    // seq. False: the client is gone.
    asio::awaitable<bool> emit_to(std::uint64_t target)
    {
        auto const flush_at = st.couch_like ? (continuous ? 1 : couch_chunk_bytes) : st.batch_bytes;
        auto const separator = st.couch_like ? std::string_view{",\r\n"} : std::string_view{",\n"};
        std::optional<asio::steady_timer> timer;
        for (auto n = pos + 1; n <= target; ++n) {
            if (st.row_rate > 0) {
                auto const slot = st.pacers[db].reserve(st.row_period());
                if (slot > clock_type::now()) {
                    if (!co_await write_chunk(sock, st.stats.bytes, buf)) {
                        co_return false;
                    }
                    if (!timer) {
                        timer.emplace(sock.get_executor());
                    }
                    timer->expires_at(slot);
                    if (auto [ec] = co_await timer->async_wait(tuple_awaitable); ec) {
                        co_return false;
                    }
                }
            }
            if (!continuous && rows_in_response > 0) {
                buf += separator;
            }
            ++rows_in_response;
            auto const with_seq = n == target || rows_in_response % seq_interval == 0;
            st.cat.append_row(buf, db, n, include_docs, with_seq);
            if (continuous) {
                buf += '\n';
            }
            st.stats.rows.fetch_add(1, std::memory_order_relaxed);
            pos = n;
            if (buf.size() >= flush_at) {
                if (!co_await write_chunk(sock, st.stats.bytes, buf)) {
                    co_return false;
                }
            }
        }
        co_return true;
    }
};

// What one _changes request asked for.
struct changes_request {
    std::size_t db;
    std::string_view feed;
    std::uint64_t since;
    std::optional<std::uint64_t> limit;
    bool include_docs;
    std::uint64_t heartbeat;
    std::uint64_t timeout;
    std::uint64_t seq_interval;
};

// Streams the body of a _changes response after its header. False: the
// client is gone.
asio::awaitable<bool> stream_changes(tcp::socket& sock, server_state& st, changes_request const& r)
{
    auto const continuous = r.feed == "continuous";
    auto const db = r.db;
    // Subscribed before the first look at the database, so that no write
    // between that look and a wait goes unnoticed.
    change_signal::subscription sub(st.live.signal_of(db), sock.get_executor());
    feed_writer w{sock, st, db, r.include_docs, continuous, r.seq_interval};
    w.pos = std::min(r.since, st.update_seq_now(db));
    auto const remaining = [&] {
        return r.limit ? *r.limit - w.rows_in_response : std::numeric_limits<std::uint64_t>::max();
    };
    // The last row this response may send now: the database's end, capped
    // by what `limit` still allows (without overflowing when there is none).
    auto const target_now = [&] {
        auto const room = std::min(remaining(), std::numeric_limits<std::uint64_t>::max() - w.pos);
        return std::min(st.update_seq_now(db), w.pos + room);
    };
    // Waits until `deadline` or a write to the database. False: the client left.
    auto const wait_until = [&](clock_type::time_point deadline) -> asio::awaitable<bool> {
        if (st.live_interval_ms > 0) {
            deadline = std::min(deadline, st.next_live_tick());
        }
        sub.timer().expires_at(deadline);
        co_await sub.timer().async_wait(tuple_awaitable); // aborted: woken by a write
        auto const cs = co_await asio::this_coro::cancellation_state;
        co_return cs.cancelled() == asio::cancellation_type::none;
    };
    if (!continuous) {
        w.buf += "{\"results\":[\n";
        if (st.couch_like && !co_await write_chunk(sock, st.stats.bytes, w.buf)) {
            co_return false;
        }
    }
    if (!co_await w.emit_to(target_now())) {
        co_return false;
    }

    auto append_tail = [&](std::string& out) {
        out += "\"last_seq\":";
        if (w.pos == 0) {
            out += "0";
        } else {
            st.cat.append_seq(out, w.pos);
        }
        out += ",\"pending\":";
        out += std::to_string(st.update_seq_now(db) - w.pos);
        out += "}\n";
    };

    if (!continuous) {
        if (r.feed == "longpoll" && w.rows_in_response == 0) {
            // Answer with the first change to come, or empty at the timeout.
            if (!co_await write_chunk(sock, st.stats.bytes, w.buf)) {
                co_return false;
            }
            auto const deadline = clock_type::now() + std::chrono::milliseconds(r.timeout);
            while (w.rows_in_response == 0 && clock_type::now() < deadline) {
                if (!co_await wait_until(deadline) || !co_await w.emit_to(target_now())) {
                    co_return false;
                }
            }
        }
        w.buf += "\n],\n";
        append_tail(w.buf);
    } else {
        // Backlog served: follow. Without changes the feed is idle and only
        // heartbeats (blank lines) keep it open; without heartbeats CouchDB
        // ends the feed `timeout` ms after the last change.
        if (!co_await write_chunk(sock, st.stats.bytes, w.buf)) {
            co_return false;
        }
        st.stats.open_feeds.fetch_add(1, std::memory_order_relaxed);
        auto last_write = clock_type::now();
        bool alive = true;
        while (alive && remaining() > 0) {
            auto const now = clock_type::now();
            if (st.update_seq_now(db) > w.pos) {
                alive = co_await w.emit_to(target_now()) && co_await write_chunk(sock, st.stats.bytes, w.buf);
                last_write = clock_type::now();
                continue;
            }
            if (r.heartbeat > 0 && now - last_write >= std::chrono::milliseconds(r.heartbeat)) {
                std::string nl = "\n";
                alive = co_await write_chunk(sock, st.stats.bytes, nl);
                last_write = now;
                continue;
            }
            if (r.heartbeat == 0 && now - last_write >= std::chrono::milliseconds(r.timeout)) {
                break;
            }
            alive = co_await wait_until(last_write + std::chrono::milliseconds(r.heartbeat > 0 ? r.heartbeat : r.timeout));
        }
        st.stats.open_feeds.fetch_sub(1, std::memory_order_relaxed);
        if (!alive) {
            co_return false;
        }
        w.buf += '{';
        append_tail(w.buf);
    }
    if (!co_await write_chunk(sock, st.stats.bytes, w.buf)) {
        co_return false;
    }
    if (st.couch_like) {
        // CouchDB ends every feed with a lone newline chunk.
        std::string nl = "\n";
        if (!co_await write_chunk(sock, st.stats.bytes, nl)) {
            co_return false;
        }
    }
    co_return co_await write_raw(sock, "0\r\n\r\n");
}

} // namespace

asio::awaitable<bool> serve_changes(tcp::socket& sock, server_state& st, request const& req, std::size_t db,
                                    std::string_view query)
{
    auto const& cat = st.cat;
    auto const params = parse_query(query);
    auto const feed = param(params, "feed").empty() ? std::string_view{"normal"} : param(params, "feed");
    if (feed != "normal" && feed != "longpoll" && feed != "continuous") {
        co_return co_await send_json(sock, req, http::status::bad_request,
                                     error_body("bad_request", "bench-source supports feed=normal|longpoll|continuous"));
    }
    auto const since = cat.parse_since(param(params, "since"));
    if (!since) {
        co_return co_await send_json(sock, req, http::status::bad_request,
                                     error_body("bad_request", "Malformed sequence supplied in 'since' parameter."));
    }
    std::optional<std::uint64_t> limit;
    if (!param(params, "limit").empty()) {
        limit = to_uint(param(params, "limit"));
        if (!limit) {
            co_return co_await send_json(sock, req, http::status::bad_request,
                                         error_body("query_parse_error", "Invalid value for integer: limit"));
        }
    }
    // "now" is the current end of the database, which moves with writes.
    changes_request const r{db,
                            feed,
                            param(params, "since") == "now" ? st.update_seq_now(db) : *since,
                            limit,
                            param(params, "include_docs") == "true",
                            to_uint(param(params, "heartbeat")).value_or(0),
                            to_uint(param(params, "timeout")).value_or(60000),
                            std::max<std::uint64_t>(1, to_uint(param(params, "seq_interval")).value_or(1))};
    st.stats.changes_requests.fetch_add(1, std::memory_order_relaxed);

    // A feed that stays open holds its database's files in CouchDB: past the
    // cap, the answer of a CouchDB out of file handles.
    auto const lasting = feed != "normal";
    if (lasting && !st.gate.try_open()) {
        co_return co_await send_json(sock, req, http::status::internal_server_error,
                                     error_body("emfile", "Too many open files"));
    }
    struct gate_release {
        feed_gate* gate;
        ~gate_release()
        {
            if (gate != nullptr) {
                gate->close();
            }
        }
    } const release{lasting ? &st.gate : nullptr};

    if (!co_await write_chunked_head(sock, req)) {
        co_return false;
    }
    auto const ok = lasting ? co_await unless_client_leaves(sock, stream_changes(sock, st, r))
                            : co_await stream_changes(sock, st, r);
    co_return ok && req.keep_alive();
}

} // namespace bench_source
