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
//
// Files: changes.cpp serves _changes (framing, pacing, live changes),
// server_state.hpp holds what the handlers share, fleet_endpoints.cpp the
// fleet-wide endpoints, http.cpp the HTTP plumbing; here the routes, the
// connections and the command line.
#include "bench/source/catalog.hpp"
#include "bench/source/changes.hpp"
#include "bench/source/fleet_endpoints.hpp"
#include "bench/source/http.hpp"
#include "bench/source/live.hpp"
#include "bench/source/server_state.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
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
