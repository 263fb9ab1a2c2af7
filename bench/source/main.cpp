// bench-source: a synthetic CouchDB-protocol server for benchmarks.
//
// It serves `GET /`, `GET /_up`, `GET /_all_dbs`, `GET /{db}` and
// `GET /{db}/_changes` (feed=normal|longpoll|continuous, since, limit,
// include_docs, heartbeat, timeout, seq_interval) for K databases of N changes
// each, as fast as the socket takes them: documents are generated from a seed
// into a pool before the first request, and a response is a sequence of large
// chunks assembled by copying. `GET /_bench/stats` reports what was served.
//
// Not a CouchDB: no document writes, no filters, no auth. The data changes
// only through `POST /_bench/write?db=NAME&count=N` (N more changes to NAME,
// one `updated` event in `_db_updates`, answered with the new changes' ids)
// and --live-interval-ms; otherwise a continuous feed sends heartbeats forever
// once it has served the backlog (the "many idle databases" scenario). A
// write wakes the feeds of its database and of `_db_updates` at once.
//
// Fleets: `_all_dbs` pages with start_key/end_key/limit/skip, and
// `_db_updates` (feed=normal|continuous) lists the writes. --max-open-feeds
// caps the continuous and longpoll `_changes` feeds open at once, as a
// CouchDB out of file handles does: beyond it a feed is answered `500`
// `{"error":"emfile",...}`. A feed counts from its request until the client
// hangs up (noticed at once, not at the next heartbeat). `/_bench/stats`
// reports open and peak feeds and connections, and the refusals.
//
// --couchdb-like frames responses as CouchDB 3.4.3 does (see the recordings
// under tests/data/couchdb-3.4.3, e.g. 03b and 05c): a continuous feed sends
// every row `{…}\n` as its own chunk; a normal feed sends `{"results":[\n`
// alone, separates rows with `,\r\n` and flushes a chunk once it holds
// 1490 bytes (chttpd's chunked_response_buffer_size), then a final `\n`
// chunk. --row-rate paces every database to that many rows per second
// (default 6,000 with --couchdb-like, about what a real CouchDB served on
// this kind of machine), and seqs become opaque strings of ~130 characters.
#include "bench/source/catalog.hpp"
#include "bench/source/fleet_endpoints.hpp"
#include "bench/source/http.hpp"
#include "bench/source/live.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using asio::ip::tcp;
using namespace bench_source;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct server_stats {
    std::atomic<std::uint64_t> rows{0};
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> changes_requests{0};
    std::atomic<std::int64_t> open_connections{0};
    std::atomic<std::int64_t> peak_connections{0};
    std::atomic<std::uint64_t> connections_accepted{0};
    std::atomic<std::int64_t> open_feeds{0}; // continuous feeds past their backlog
};

// CouchDB's chunked_response_buffer_size: a normal feed flushes its
// buffered rows as a chunk once they reach this many bytes.
constexpr std::size_t couch_chunk_bytes = 1490;

using clock_type = std::chrono::steady_clock;

// Hands out the send times of one database's rows at a fixed rate, shared by
// every response of that database. Idle time earns at most `credit` of
// rows, so a reader that comes back does not get a burst.
class row_pacer {
public:
    // The time at which the next row may be sent (now or later); reserves it.
    clock_type::time_point reserve(std::chrono::nanoseconds period)
    {
        constexpr auto credit = std::chrono::milliseconds(5);
        std::lock_guard const lock(mutex_);
        auto const now = clock_type::now();
        auto const slot = std::max(next_, now - credit);
        next_ = slot + period;
        return slot;
    }

private:
    std::mutex mutex_;
    clock_type::time_point next_{};
};

struct server_state {
    catalog const& cat;
    live_state& live;
    feed_gate& gate;
    std::vector<std::string> const& names;        // by index
    std::vector<std::string> const& sorted_names; // in byte order, for _all_dbs

    server_stats stats;
    std::size_t batch_bytes;
    // Live mode: every database gains one change per interval after startup
    // (0: the data is static).
    std::uint64_t live_interval_ms = 0;
    // CouchDB framing (see the header comment).
    bool couch_like = false;
    // Rows per second per database (0: as fast as the socket takes them).
    double row_rate = 0;
    std::vector<row_pacer> pacers{};
    clock_type::time_point started = clock_type::now();

    std::chrono::nanoseconds row_period() const
    {
        return std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / row_rate));
    }

    // The current last seq of database `db`.
    std::uint64_t update_seq_now(std::size_t db) const
    {
        auto n = cat.changes_per_db() + live.writes(db);
        if (live_interval_ms > 0) {
            auto const ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                                  started)
                                .count();
            n += static_cast<std::uint64_t>(ms) / live_interval_ms;
        }
        return n;
    }

    // Live mode: when the next live change appears (a feed waiting for it
    // wakes then, not up to an interval later).
    clock_type::time_point next_live_tick() const
    {
        auto const interval = std::chrono::milliseconds(live_interval_ms);
        auto const ticks = (clock_type::now() - started) / interval;
        return started + (ticks + 1) * interval;
    }
};

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

// Serves one _changes request. Returns false when the connection must close.
asio::awaitable<bool> serve_changes(tcp::socket& sock, server_state& st, http::request<http::string_body> const& req,
                                    std::size_t db, std::string_view query)
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

std::string stats_body(server_state const& st)
{
    json::object o{{"rows_served", st.stats.rows.load()},
                   {"bytes_served", st.stats.bytes.load()},
                   {"requests", st.stats.requests.load()},
                   {"changes_requests", st.stats.changes_requests.load()},
                   {"open_connections", st.stats.open_connections.load()},
                   {"peak_open_connections", st.stats.peak_connections.load()},
                   {"connections_accepted", st.stats.connections_accepted.load()},
                   {"idle_continuous_feeds", st.stats.open_feeds.load()},
                   {"open_feeds", st.gate.open()},
                   {"peak_open_feeds", st.gate.peak()},
                   {"feed_cap", st.gate.cap()},
                   {"emfile_refusals", st.gate.refused()},
                   {"db_updates_seq", st.live.last_update_seq()}};
    return json::serialize(o) + "\n";
}

// POST /_bench/write?db=NAME&count=N: N more changes to NAME. Answers the
// database's new update_seq and the ids of the new changes.
asio::awaitable<bool> serve_write(tcp::socket& sock, server_state& st, http::request<http::string_body> const& req,
                                  std::string_view query)
{
    auto const q = parse_query(query);
    auto const db = st.cat.find_db(param(q, "db"));
    auto const count = param(q, "count").empty() ? std::optional<std::uint64_t>(1) : to_uint(param(q, "count"));
    if (!db) {
        co_return co_await send_json(sock, req, http::status::not_found,
                                     error_body("not_found", "Database does not exist."));
    }
    if (!count || *count == 0 || *count > 100000) {
        co_return co_await send_json(sock, req, http::status::bad_request,
                                     error_body("bad_request", "count must be 1..100000"));
    }
    // The ids first: the new changes are visible to feeds once written.
    auto const first = st.update_seq_now(*db) + 1;
    json::array ids;
    for (std::uint64_t n = first; n < first + *count; ++n) {
        ids.emplace_back(st.cat.doc_id(*db, n));
    }
    st.live.write(*db, *count);
    std::string seq;
    st.cat.append_seq(seq, st.update_seq_now(*db));
    co_return co_await send_json(sock, req, http::status::ok,
                                 R"({"ok":true,"update_seq":)" + seq + R"(,"ids":)" + json::serialize(ids) + "}\n");
}

// Answers one request. False: the connection must close.
asio::awaitable<bool> route(tcp::socket& sock, server_state& st, http::request<http::string_body> const& req,
                            std::string_view path, std::string_view query)
{
    auto const& cat = st.cat;
    if (req.method() == http::verb::post && path == "/_bench/write") {
        co_return co_await serve_write(sock, st, req, query);
    }
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
        co_return co_await send_json(sock, req, http::status::method_not_allowed,
                                     error_body("method_not_allowed", "bench-source only serves GET and HEAD"));
    }
    if (path == "/") {
        co_return co_await send_json(
            sock, req, http::status::ok,
            R"({"couchdb":"Welcome","version":"3.4.3","vendor":{"name":"couch-kafka-bridge bench-source"}})"
            "\n");
    }
    if (path == "/_up") {
        co_return co_await send_json(sock, req, http::status::ok, "{\"status\":\"ok\"}\n");
    }
    if (path == "/_all_dbs") {
        std::string error;
        auto body = all_dbs_body(st.sorted_names, parse_query(query), error);
        if (!body) {
            co_return co_await send_json(sock, req, http::status::bad_request, error_body("query_parse_error", error));
        }
        co_return co_await send_json(sock, req, http::status::ok, std::move(*body));
    }
    if (path == "/_db_updates") {
        co_return co_await serve_db_updates(sock, req, parse_query(query), st.live, st.names, st.stats.bytes);
    }
    if (path == "/_bench/stats") {
        co_return co_await send_json(sock, req, http::status::ok, stats_body(st));
    }
    auto const rest = path.substr(1);
    auto const slash = rest.find('/');
    auto const db_name = percent_decode(rest.substr(0, slash));
    auto const sub = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
    auto const db = cat.find_db(db_name);
    if (!db) {
        co_return co_await send_json(sock, req, http::status::not_found,
                                     error_body("not_found", "Database does not exist."));
    }
    if (sub.empty() || sub == "/") {
        auto const seq_now = st.update_seq_now(*db);
        std::string update_seq;
        cat.append_seq(update_seq, seq_now);
        std::string body = R"({"db_name":")" + db_name + R"(","doc_count":)" + std::to_string(seq_now) +
                           R"(,"doc_del_count":0,"update_seq":)" + update_seq +
                           R"(,"purge_seq":0,"compact_running":false})" + "\n";
        co_return co_await send_json(sock, req, http::status::ok, std::move(body));
    }
    if (sub == "/_changes" && req.method() == http::verb::get) {
        co_return co_await serve_changes(sock, st, req, *db, query);
    }
    co_return co_await send_json(sock, req, http::status::not_found, error_body("not_found", "missing"));
}

asio::awaitable<void> session(tcp::socket sock, server_state& st)
{
    st.stats.connections_accepted.fetch_add(1, std::memory_order_relaxed);
    raise_peak(st.stats.peak_connections, st.stats.open_connections.fetch_add(1, std::memory_order_relaxed) + 1);
    beast::error_code ignored;
    sock.set_option(tcp::no_delay(true), ignored);
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(1024 * 1024);
        auto [ec, n] = co_await http::async_read(sock, buffer, parser, tuple_awaitable);
        if (ec) {
            break; // EOF, reset or a malformed request: nothing to answer
        }
        auto const req = parser.release();
        st.stats.requests.fetch_add(1, std::memory_order_relaxed);
        std::string_view target = req.target();
        auto const qmark = target.find('?');
        auto const path = target.substr(0, qmark);
        auto const query = qmark == std::string_view::npos ? std::string_view{} : target.substr(qmark + 1);

        auto const keep = co_await route(sock, st, req, path, query);
        if (!keep || !req.keep_alive()) {
            break;
        }
    }
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    st.stats.open_connections.fetch_sub(1, std::memory_order_relaxed);
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, server_state& st)
{
    for (;;) {
        auto [ec, sock] = co_await acceptor.async_accept(asio::make_strand(acceptor.get_executor()), tuple_awaitable);
        if (ec == asio::error::operation_aborted) {
            co_return;
        }
        if (ec) {
            // EMFILE and friends: say so and keep accepting after a pause
            // rather than spinning or dying.
            std::cerr << "bench-source: accept failed: " << ec.message() << "\n";
            asio::steady_timer t(acceptor.get_executor(), std::chrono::milliseconds(100));
            co_await t.async_wait(tuple_awaitable);
            continue;
        }
        auto ex = sock.get_executor();
        asio::co_spawn(ex, session(std::move(sock), st), asio::detached);
    }
}

} // namespace

int main(int argc, char** argv)
{
    CLI::App app{"bench-source: synthetic CouchDB-protocol _changes server for benchmarks"};
    std::string listen = "127.0.0.1";
    unsigned short port = 0;
    std::string port_file;
    bench_source::catalog_options opt;
    std::string seqs = "integer";
    unsigned threads = 1;
    std::size_t batch_kib = 256;
    std::uint64_t live_interval_ms = 0;
    bool couch_like = false;
    std::optional<double> row_rate;
    std::size_t max_open_feeds = 0;
    app.add_option("--listen", listen, "Address to bind")->capture_default_str();
    app.add_option("--port", port, "Port to bind (0: any free port)")->capture_default_str();
    app.add_option("--port-file", port_file, "Write the bound port to this file once listening");
    app.add_option("--databases", opt.databases, "Number of databases")->capture_default_str();
    app.add_option("--db-prefix", opt.db_prefix, "Database names are <prefix>0000, <prefix>0001, ...")
        ->capture_default_str();
    app.add_option("--changes", opt.changes_per_db, "Changes per database")->capture_default_str();
    app.add_option("--seed", opt.docs.seed, "Seed of the generated documents")->capture_default_str();
    app.add_option("--pool", opt.docs.pool_size, "Distinct pre-generated document bodies")->capture_default_str();
    app.add_option("--doc-min-bytes", opt.docs.min_bytes, "Smallest document")->capture_default_str();
    app.add_option("--doc-max-bytes", opt.docs.max_bytes, "Largest document")->capture_default_str();
    app.add_option("--domains", opt.docs.domains, "Distinct domains")->capture_default_str();
    app.add_option("--deleted-permille", opt.deleted_permille, "Deletions per 1000 changes")->capture_default_str();
    app.add_option("--seqs", seqs, "Seq format: integer | opaque")
        ->check(CLI::IsMember({"integer", "opaque"}))
        ->capture_default_str();
    app.add_option("--threads", threads, "I/O threads")->check(CLI::Range(1U, 64U))->capture_default_str();
    app.add_option("--batch-kib", batch_kib, "Size of each written chunk")->check(CLI::Range(1U, 65536U))
        ->capture_default_str();
    app.add_option("--live-interval-ms", live_interval_ms,
                   "After startup every database gains one change per this many ms (0: static data)")
        ->capture_default_str();
    app.add_flag("--couchdb-like", couch_like,
                 "Frame responses as CouchDB 3.4.3 does (a chunk per continuous row, 1490-byte chunks for normal "
                 "feeds), opaque seqs of ~130 characters, rows paced by --row-rate");
    app.add_option("--row-rate", row_rate,
                   "Rows per second per database (0: unpaced; default 6000 with --couchdb-like, else 0)")
        ->check(CLI::Range(0.0, 1e9));
    app.add_option("--seq-bytes", opt.seq_bytes,
                   "Opaque seqs: pad to about this many characters (default 130 with --couchdb-like, else short)");
    app.add_option("--max-open-feeds", max_open_feeds,
                   "At most this many continuous and longpoll _changes feeds open at once; beyond it a feed is "
                   "answered 500 emfile, as by a CouchDB out of file handles (0: no cap)")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    if (couch_like) {
        seqs = "opaque";
        if (opt.seq_bytes == 0) {
            opt.seq_bytes = 130;
        }
    }
    opt.seqs = seqs == "opaque" ? bench_source::seq_format::opaque : bench_source::seq_format::integer;

    try {
        auto const started = std::chrono::steady_clock::now();
        catalog const cat(opt);
        auto const gen_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                                  started);
        std::vector<std::string> names;
        for (std::size_t i = 0; i < cat.databases(); ++i) {
            names.push_back(cat.db_name(i));
        }
        auto sorted_names = names;
        std::sort(sorted_names.begin(), sorted_names.end());
        live_state live(cat.databases());
        feed_gate gate(max_open_feeds);
        server_state st{cat, live, gate, names, sorted_names, {}, batch_kib * 1024, live_interval_ms};
        st.couch_like = couch_like;
        st.row_rate = row_rate.value_or(couch_like ? 6000.0 : 0.0);
        st.pacers = std::vector<row_pacer>(cat.databases());

        asio::io_context ioc{static_cast<int>(threads)};
        tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address(listen), port));
        acceptor.listen(asio::socket_base::max_listen_connections);
        auto const bound = acceptor.local_endpoint().port();
        std::cerr << "bench-source: listening on " << listen << ":" << bound << " (" << cat.databases()
                  << " databases x " << cat.changes_per_db() << " changes, " << cat.pool().size()
                  << " pre-generated documents in " << gen_ms.count() << " ms, average row "
                  << cat.average_row_bytes() << " bytes with include_docs, seqs " << seqs
                  << (couch_like ? ", CouchDB framing" : "") << ", row rate "
                  << (st.row_rate > 0 ? std::to_string(st.row_rate) + "/s per database" : std::string{"unpaced"})
                  << (max_open_feeds > 0 ? ", at most " + std::to_string(max_open_feeds) + " open feeds" : std::string{})
                  << ")" << std::endl;
        if (!port_file.empty()) {
            // Write then rename, so a reader never sees a half-written port.
            auto const tmp = port_file + ".tmp";
            std::ofstream(tmp) << bound << "\n";
            std::filesystem::rename(tmp, port_file);
        }

        asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&](beast::error_code const&, int) { ioc.stop(); });
        asio::co_spawn(ioc, accept_loop(acceptor, st), asio::detached);

        std::vector<std::thread> pool;
        for (unsigned i = 1; i < threads; ++i) {
            pool.emplace_back([&ioc] { ioc.run(); });
        }
        ioc.run();
        for (auto& t : pool) {
            t.join();
        }
        std::cerr << "bench-source: stopped after serving " << st.stats.rows.load() << " rows, "
                  << st.stats.bytes.load() << " bytes, " << st.stats.requests.load() << " requests" << std::endl;
    } catch (std::exception const& e) {
        std::cerr << "bench-source: " << e.what() << std::endl;
        return 1;
    }
    return 0;
}
