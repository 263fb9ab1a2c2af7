#include "metrics/http_server.hpp"

#include "metrics/process.hpp"
#include "tests/metrics/exposition_parser.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
// Safety net for every client operation; never reached when things work.
constexpr auto client_timeout = 60s;

struct reply {
    beast::error_code ec;
    unsigned status = 0;
    std::string body;
    std::string content_type;
    std::string allow;
    std::string content_length;
    bool keep_alive = false;
};

asio::awaitable<beast::error_code> connect(beast::tcp_stream& s, std::uint16_t port) {
    s.expires_after(client_timeout);
    auto [ec] = co_await s.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), use_tuple);
    co_return ec;
}

asio::awaitable<reply> request_on(beast::tcp_stream& s, http::verb verb, std::string target) {
    reply r;
    http::request<http::empty_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    s.expires_after(client_timeout);
    auto [wec, wn] = co_await http::async_write(s, req, use_tuple);
    (void)wn;
    if (wec) {
        r.ec = wec;
        co_return r;
    }
    beast::flat_buffer buf;
    http::response_parser<http::string_body> p;
    if (verb == http::verb::head) {
        p.skip(true);
    }
    auto [rec, rn] = co_await http::async_read(s, buf, p, use_tuple);
    (void)rn;
    r.ec = rec;
    if (!rec) {
        auto const& res = p.get();
        r.status = res.result_int();
        r.body = res.body();
        r.content_type = std::string(res[http::field::content_type]);
        r.allow = std::string(res[http::field::allow]);
        r.content_length = std::string(res[http::field::content_length]);
        r.keep_alive = res.keep_alive();
    }
    co_return r;
}

asio::awaitable<reply> fetch(std::uint16_t port, http::verb verb, std::string target) {
    beast::tcp_stream s(co_await asio::this_coro::executor);
    if (auto ec = co_await connect(s, port)) {
        reply r;
        r.ec = ec;
        co_return r;
    }
    co_return co_await request_on(s, verb, std::move(target));
}

asio::awaitable<reply> get(std::uint16_t port, std::string target) {
    return fetch(port, http::verb::get, std::move(target));
}

// Reads until the peer closes (or the safety net fires); returns the error
// that ended it and what arrived before.
asio::awaitable<std::pair<beast::error_code, std::string>> read_until_close(beast::tcp_stream& s) {
    std::string data;
    char buf[1024];
    s.expires_after(client_timeout);
    for (;;) {
        auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
        data.append(buf, n);
        if (ec) {
            co_return std::pair{ec, data};
        }
    }
}

asio::awaitable<beast::error_code> send_raw(beast::tcp_stream& s, std::string bytes) {
    s.expires_after(client_timeout);
    auto [ec, n] = co_await asio::async_write(s, asio::buffer(bytes), use_tuple);
    (void)n;
    co_return ec;
}

asio::awaitable<void> pause(std::chrono::milliseconds d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(use_tuple);
}

// One io_context, one registry, one server on 127.0.0.1:0. run() drives a
// test coroutine to completion, then stops the server; assertions happen
// afterwards on the test thread.
struct server_fixture {
    metrics::registry reg;
    asio::io_context ioc;
    std::optional<metrics::http_server> server;

    explicit server_fixture(metrics::http_server_options opts = {}) {
        server.emplace(ioc.get_executor(), "127.0.0.1:0", reg, opts);
    }

    void run(asio::awaitable<void> body) {
        server->start();
        bool done = false;
        std::exception_ptr error;
        asio::co_spawn(ioc, std::move(body), [&](std::exception_ptr e) {
            error = e;
            done = true;
            server->stop();
        });
        ioc.run_for(300s); // safety net; returns as soon as the server has stopped
        BOOST_TEST_REQUIRE(done);
        if (error) {
            std::rethrow_exception(error);
        }
    }
};

asio::awaitable<void> keep_alive_client(std::uint16_t port, int requests, std::vector<reply>* out) {
    beast::tcp_stream s(co_await asio::this_coro::executor);
    if (auto ec = co_await connect(s, port)) {
        reply r;
        r.ec = ec;
        out->push_back(r);
        co_return;
    }
    for (int i = 0; i < requests; ++i) {
        // Alternate so that scrapes (collectors, the registry lock) run
        // concurrently with counting handlers.
        out->push_back(co_await request_on(s, http::verb::get, i % 2 == 0 ? "/count" : "/metrics"));
    }
}

bool closed_without_timeout(beast::error_code const& ec) {
    return ec && ec != beast::error::timeout;
}

} // namespace

BOOST_AUTO_TEST_SUITE(http_server)

BOOST_AUTO_TEST_CASE(metrics_endpoint_serves_the_whole_registry_in_text_format) {
    server_fixture f;
    metrics::register_process_metrics(f.reg);
    metrics::register_build_info(f.reg, {{"version", "0.1.0"}, {"librdkafka", "2.0.2"}, {"rocksdb", "7.8.3"}});
    f.reg.add_counter("couch_bridge_rows_read_total", "Rows read.", {{"database", "a\"b"}}).inc(7);
    reply r;
    f.run([](std::uint16_t port, reply* out) -> asio::awaitable<void> {
        *out = co_await get(port, "/metrics");
    }(f.server->port(), &r));
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.status == 200u);
    BOOST_TEST(r.content_type == "text/plain; version=0.0.4; charset=utf-8");
    BOOST_TEST(r.body.find("couch_bridge_rows_read_total{database=\"a\\\"b\"} 7\n") != std::string::npos);
    auto families = metrics_test::parse_with_prometheus_client(r.body);
    std::map<std::string, std::string> types;
    for (auto const& fam : families) {
        types[fam.name] = fam.type;
    }
    BOOST_TEST(types["couch_bridge_rows_read"] == "counter");
    BOOST_TEST(types["couch_bridge_build_info"] == "gauge");
    BOOST_TEST(types["process_cpu_seconds"] == "counter");
    BOOST_TEST(types["process_resident_memory_bytes"] == "gauge");
    BOOST_TEST(types["process_start_time_seconds"] == "gauge");
    BOOST_TEST(types["process_open_fds"] == "gauge");
}

BOOST_AUTO_TEST_CASE(custom_handlers_head_404_405_and_500) {
    server_fixture f;
    f.server->handle("/status", [] {
        return metrics::http_response{200, "application/json", R"({"databases":{}})"};
    });
    f.server->handle("/readyz", [] { return metrics::http_response{503, "text/plain; charset=utf-8", "not ready\n"}; });
    f.server->handle("/boom", []() -> metrics::http_response { throw std::runtime_error("handler bug"); });
    struct results {
        reply health, status, query, ready, head, missing, post, boom, after_boom, metrics;
    } res;
    f.run([](std::uint16_t port, results* out) -> asio::awaitable<void> {
        out->health = co_await get(port, "/healthz");
        out->status = co_await get(port, "/status");
        out->query = co_await get(port, "/status?verbose=1");
        out->ready = co_await get(port, "/readyz");
        out->head = co_await fetch(port, http::verb::head, "/metrics");
        out->missing = co_await get(port, "/nope");
        out->post = co_await fetch(port, http::verb::post, "/metrics");
        out->boom = co_await get(port, "/boom");
        out->after_boom = co_await get(port, "/status");
        out->metrics = co_await get(port, "/metrics");
    }(f.server->port(), &res));
    BOOST_TEST(res.health.status == 200u);
    BOOST_TEST(res.health.body == "ok\n");
    BOOST_TEST(res.status.status == 200u);
    BOOST_TEST(res.status.content_type == "application/json");
    BOOST_TEST(res.status.body == R"({"databases":{}})");
    BOOST_TEST(res.query.status == 200u);
    BOOST_TEST(res.ready.status == 503u);
    BOOST_TEST(res.ready.body == "not ready\n");
    BOOST_TEST(!res.head.ec);
    BOOST_TEST(res.head.status == 200u);
    BOOST_TEST(res.head.body.empty());
    BOOST_TEST(!res.head.content_length.empty());
    BOOST_TEST(res.head.content_length != "0");
    BOOST_TEST(res.missing.status == 404u);
    BOOST_TEST(res.post.status == 405u);
    BOOST_TEST(res.post.allow == "GET, HEAD");
    BOOST_TEST(res.boom.status == 500u);
    BOOST_TEST(res.boom.body.find("handler bug") == std::string::npos); // no internals leak to clients
    BOOST_TEST(res.after_boom.status == 200u);
    BOOST_TEST(res.metrics.body.find("couch_bridge_http_requests_total{path=\"other\",code=\"404\"} 1\n") !=
               std::string::npos);
    BOOST_TEST(res.metrics.body.find("couch_bridge_http_requests_total{path=\"/boom\",code=\"500\"} 1\n") !=
               std::string::npos);
}

BOOST_AUTO_TEST_CASE(keep_alive_serves_two_requests_on_one_connection) {
    server_fixture f;
    struct results {
        beast::error_code connect;
        reply first, second;
    } res;
    f.run([](std::uint16_t port, results* out) -> asio::awaitable<void> {
        beast::tcp_stream s(co_await asio::this_coro::executor);
        out->connect = co_await connect(s, port);
        out->first = co_await request_on(s, http::verb::get, "/metrics");
        out->second = co_await request_on(s, http::verb::get, "/metrics");
    }(f.server->port(), &res));
    BOOST_TEST(!res.connect);
    BOOST_TEST(!res.first.ec);
    BOOST_TEST(res.first.status == 200u);
    BOOST_TEST(res.first.keep_alive);
    BOOST_TEST(!res.second.ec);
    BOOST_TEST(res.second.status == 200u);
}

BOOST_AUTO_TEST_CASE(slow_client_does_not_block_others_and_is_dropped) {
    metrics::http_server_options opts;
    opts.read_timeout = 1s; // short so the test does not wait 10 s for the drop
    server_fixture f(opts);
    struct results {
        reply other;
        beast::error_code slow_end;
        std::string slow_got;
    } res;
    f.run([](std::uint16_t port, results* out) -> asio::awaitable<void> {
        beast::tcp_stream slow(co_await asio::this_coro::executor);
        co_await connect(slow, port);
        co_await send_raw(slow, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        out->other = co_await get(port, "/metrics");
        std::tie(out->slow_end, out->slow_got) = co_await read_until_close(slow);
    }(f.server->port(), &res));
    BOOST_TEST(!res.other.ec);
    BOOST_TEST(res.other.status == 200u);
    BOOST_TEST(closed_without_timeout(res.slow_end), "slow client ended with: " << res.slow_end.message());
    BOOST_TEST(res.slow_got.empty());
}

BOOST_AUTO_TEST_CASE(garbage_and_oversized_requests_get_400_and_server_keeps_serving) {
    server_fixture f;
    struct results {
        beast::error_code garbage_end, big_end;
        std::string garbage_got, big_got;
        reply next;
    } res;
    f.run([](std::uint16_t port, results* out) -> asio::awaitable<void> {
        {
            beast::tcp_stream s(co_await asio::this_coro::executor);
            co_await connect(s, port);
            // A TLS-ish preamble with a NUL in it, then CRLFs.
            static constexpr char garbage[] = "\x16\x03\x01\x02\x00 not http at all\r\n\r\n";
            co_await send_raw(s, std::string(garbage, sizeof garbage - 1));
            std::tie(out->garbage_end, out->garbage_got) = co_await read_until_close(s);
        }
        {
            beast::tcp_stream s(co_await asio::this_coro::executor);
            co_await connect(s, port);
            co_await send_raw(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n");
            std::tie(out->big_end, out->big_got) = co_await read_until_close(s);
        }
        out->next = co_await get(port, "/metrics");
    }(f.server->port(), &res));
    BOOST_TEST(closed_without_timeout(res.garbage_end));
    BOOST_TEST(res.garbage_got.rfind("HTTP/1.1 400", 0) == 0u, "got: " << res.garbage_got);
    BOOST_TEST(closed_without_timeout(res.big_end));
    // The server answers 400 once the header limit is hit; if the client is
    // still sending by then, the close may reset the connection first.
    BOOST_TEST((res.big_got.empty() || res.big_got.rfind("HTTP/1.1 400", 0) == 0u), "got: " << res.big_got);
    BOOST_TEST(!res.next.ec);
    BOOST_TEST(res.next.status == 200u);
}

BOOST_AUTO_TEST_CASE(connections_beyond_the_cap_are_closed) {
    metrics::http_server_options opts;
    opts.max_connections = 2;
    server_fixture f(opts);
    struct results {
        reply a, b;
        beast::error_code third_end;
        std::string third_got;
        bool served_after_release = false;
        std::string metrics_body;
    } res;
    f.run([](std::uint16_t port, results* out) -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        auto a = std::make_unique<beast::tcp_stream>(ex);
        beast::tcp_stream b(ex);
        co_await connect(*a, port);
        co_await connect(b, port);
        // A served request proves each connection holds a session slot.
        out->a = co_await request_on(*a, http::verb::get, "/metrics");
        out->b = co_await request_on(b, http::verb::get, "/metrics");
        {
            beast::tcp_stream third(ex);
            co_await connect(third, port);
            co_await send_raw(third, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            std::tie(out->third_end, out->third_got) = co_await read_until_close(third);
        }
        a.reset(); // frees a slot, asynchronously on the server's side
        for (int attempt = 0; attempt < 600 && !out->served_after_release; ++attempt) {
            beast::tcp_stream s(ex);
            co_await connect(s, port);
            auto r = co_await request_on(s, http::verb::get, "/metrics");
            if (!r.ec && r.status == 200) {
                out->served_after_release = true;
                out->metrics_body = r.body;
            } else {
                co_await pause(50ms);
            }
        }
    }(f.server->port(), &res));
    BOOST_TEST(res.a.status == 200u);
    BOOST_TEST(res.b.status == 200u);
    BOOST_TEST(closed_without_timeout(res.third_end));
    BOOST_TEST(res.third_got.empty());
    BOOST_TEST(res.served_after_release);
    BOOST_TEST(res.metrics_body.find("couch_bridge_http_connections_rejected_total ") != std::string::npos);
    BOOST_TEST(res.metrics_body.find("couch_bridge_http_connections_rejected_total 0\n") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(stop_closes_idle_connections) {
    server_fixture f;
    struct results {
        reply first;
        beast::error_code end;
    } res;
    f.run([](std::uint16_t port, metrics::http_server* server, results* out) -> asio::awaitable<void> {
        beast::tcp_stream s(co_await asio::this_coro::executor);
        co_await connect(s, port);
        out->first = co_await request_on(s, http::verb::get, "/metrics");
        server->stop();
        std::string ignored;
        std::tie(out->end, ignored) = co_await read_until_close(s);
    }(f.server->port(), &*f.server, &res));
    BOOST_TEST(res.first.status == 200u);
    BOOST_TEST(closed_without_timeout(res.end), "ended with: " << res.end.message());
}

BOOST_AUTO_TEST_CASE(parallel_clients_on_a_multithreaded_io_context) {
    metrics::registry reg;
    metrics::register_process_metrics(reg);
    asio::io_context ioc;
    metrics::http_server server(ioc.get_executor(), "127.0.0.1:0", reg);
    std::atomic<int> hits{0};
    server.handle("/count", [&hits] {
        hits.fetch_add(1);
        return metrics::http_response{200, "text/plain; charset=utf-8", "ok\n"};
    });
    server.start();
    constexpr int clients = 8;
    constexpr int per_client = 6;
    std::vector<std::vector<reply>> results(clients);
    std::vector<std::exception_ptr> errors(clients);
    std::atomic<int> finished{0};
    for (int i = 0; i < clients; ++i) {
        asio::co_spawn(asio::make_strand(ioc), keep_alive_client(server.port(), per_client, &results[i]),
                       [&, i](std::exception_ptr e) {
                           errors[i] = e;
                           if (finished.fetch_add(1) + 1 == clients) {
                               server.stop();
                           }
                       });
    }
    std::thread second([&ioc] { ioc.run_for(300s); });
    ioc.run_for(300s);
    second.join();
    BOOST_TEST_REQUIRE(finished.load() == clients);
    for (int i = 0; i < clients; ++i) {
        BOOST_TEST(!errors[i]);
        BOOST_TEST_REQUIRE(results[i].size() == std::size_t(per_client));
        for (auto const& r : results[i]) {
            BOOST_TEST(!r.ec);
            BOOST_TEST(r.status == 200u);
        }
    }
    BOOST_TEST(hits.load() == clients * per_client / 2);
}

BOOST_AUTO_TEST_CASE(bind_failures_and_bad_addresses_throw_clear_errors) {
    metrics::registry reg;
    asio::io_context ioc;
    metrics::http_server first(ioc.get_executor(), "127.0.0.1:0", reg);
    auto taken = "127.0.0.1:" + std::to_string(first.port());
    try {
        metrics::http_server second(ioc.get_executor(), taken, reg);
        BOOST_FAIL("binding a taken port did not throw");
    } catch (std::runtime_error const& e) {
        std::string what = e.what();
        BOOST_TEST(what.find("cannot listen on " + taken + ": ") == 0u, what);
        BOOST_TEST(what.find("in use") != std::string::npos, what);
    }
    BOOST_CHECK_THROW(metrics::http_server(ioc.get_executor(), "no-port", reg), std::runtime_error);
    BOOST_CHECK_THROW(metrics::http_server(ioc.get_executor(), "127.0.0.1:99999", reg), std::runtime_error);
    BOOST_CHECK_THROW(metrics::http_server(ioc.get_executor(), "::1:80", reg), std::runtime_error);
    BOOST_CHECK_THROW(first.handle("no-slash", [] { return metrics::http_response{}; }), std::logic_error);
    first.start();
    BOOST_CHECK_THROW(first.handle("/late", [] { return metrics::http_response{}; }), std::logic_error);
    BOOST_CHECK_THROW(first.start(), std::logic_error);
}

BOOST_AUTO_TEST_SUITE_END()
