// The feed's HTTPS (certificate and host-name verification, ca_file,
// tls_verify=false), cookie auth (POST /_session, AuthSession cookie, renewal
// on 401) and rewind() while I/O is in flight, against a small in-test server
// (plain or TLS) that answers each request with a script, in the style of
// feed_test.cpp. /_session answers are CouchDB 3.4.3's recorded bytes (09*).
// The TLS CA and server certificates are made at test time with OpenSSL's C
// API, so nothing outside libssl is needed.
#include "couch/changes_feed.hpp"
#include "couch/databases.hpp"
#include "couch/http_session.hpp"
#include "metrics/registry.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/test/unit_test.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

#include "wire.hpp"

namespace {

using namespace couch_test;

// --- throwaway certificates -------------------------------------------------

template <class T, void (*F)(T*)>
struct ossl_deleter {
    void operator()(T* p) const { F(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, ossl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, ossl_deleter<X509, X509_free>>;
using bio_ptr = std::unique_ptr<BIO, ossl_deleter<BIO, BIO_free_all>>;

void ossl_check(bool ok, char const* what) {
    if (!ok) {
        throw std::runtime_error(std::string("OpenSSL failed: ") + what);
    }
}

pkey_ptr make_key() {
    pkey_ptr k(EVP_EC_gen("P-256"));
    ossl_check(k != nullptr, "EVP_EC_gen");
    return k;
}

void add_ext(X509* cert, X509* issuer, int nid, char const* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    ossl_check(ext != nullptr, value);
    ossl_check(X509_add_ext(cert, ext, -1) == 1, "X509_add_ext");
    X509_EXTENSION_free(ext);
}

// A certificate for `key` named `cn`, signed by issuer/issuer_key (self-signed
// when issuer is null). `san` is a subjectAltName value for a leaf, empty for a CA.
x509_ptr make_cert(EVP_PKEY* key, char const* cn, X509* issuer, EVP_PKEY* issuer_key, std::string const& san) {
    static long serial = 1;
    x509_ptr x(X509_new());
    ossl_check(x != nullptr, "X509_new");
    X509_set_version(x.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x.get()), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x.get()), 7 * 86400);
    ossl_check(X509_set_pubkey(x.get(), key) == 1, "X509_set_pubkey");
    X509_NAME* name = X509_get_subject_name(x.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<unsigned char const*>(cn), -1, -1, 0);
    X509* const signer = issuer != nullptr ? issuer : x.get();
    X509_set_issuer_name(x.get(), X509_get_subject_name(signer));
    add_ext(x.get(), signer, NID_subject_key_identifier, "hash");
    if (san.empty()) {
        add_ext(x.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x.get(), signer, NID_key_usage, "critical,digitalSignature");
        add_ext(x.get(), signer, NID_ext_key_usage, "serverAuth");
        add_ext(x.get(), signer, NID_subject_alt_name, san.c_str());
    }
    ossl_check(X509_sign(x.get(), issuer_key, EVP_sha256()) > 0, "X509_sign");
    return x;
}

template <class F>
std::string to_pem(F write) {
    bio_ptr b(BIO_new(BIO_s_mem()));
    ossl_check(b != nullptr && write(b.get()) == 1, "PEM write");
    char* data = nullptr;
    long const n = BIO_get_mem_data(b.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

struct tls_material {
    std::string ca_pem, cert_pem, key_pem;
};

// A fresh CA and a server certificate it signed for `san`.
tls_material make_tls_material(std::string const& san) {
    auto ca_key = make_key();
    auto ca = make_cert(ca_key.get(), "couch-kafka-bridge test CA", nullptr, ca_key.get(), "");
    auto key = make_key();
    auto cert = make_cert(key.get(), "couch test server", ca.get(), ca_key.get(), san);
    tls_material m;
    m.ca_pem = to_pem([&](BIO* b) { return PEM_write_bio_X509(b, ca.get()); });
    m.cert_pem = to_pem([&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); });
    m.key_pem = to_pem([&](BIO* b) { return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr); });
    return m;
}

std::string write_temp(std::string const& name, std::string const& text) {
    auto const path = test_support::make_temp_dir("couchtls") + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
}

std::unique_ptr<ssl::context> server_context(tls_material const& m) {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    ctx->use_certificate_chain(asio::buffer(m.cert_pem));
    ctx->use_private_key(asio::buffer(m.key_pem), ssl::context::pem);
    return ctx;
}

// --- scripted server (plain or TLS) --------------------------------------------

struct action {
    enum kind { write, close, hold } k;
    std::string bytes;
};
using script = std::vector<action>;
action w(std::string s) { return {action::write, std::move(s)}; }
action close_now() { return {action::close, {}}; }
action hold() { return {action::hold, {}}; }

std::string const db_info_200 = status_response(200, R"({"db_name":"db","update_seq":"999-x"})");

struct seen_request {
    std::string method, target, cookie, authorization, content_type, body;
    bool changes() const { return target.find("/_changes") != std::string::npos; }
    bool session() const { return target.find("/_session") != std::string::npos; }
};

std::string header_value(std::string const& head, std::string const& name) {
    auto const at = head.find("\r\n" + name + ": ");
    if (at == std::string::npos) {
        return {};
    }
    auto const from = at + name.size() + 4;
    return head.substr(from, head.find("\r\n", from) - from);
}

// Answers every request (on a connection kept by a script ending in hold()) with the
// script `handler` returns for it; records every request. With a TLS context
// it speaks HTTPS and counts failed handshakes.
class test_server {
public:
    using handler = std::function<script(seen_request const&)>;
    test_server(asio::io_context& io, handler h, ssl::context* tls = nullptr)
        : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), handler_(std::move(h)), tls_(tls) {
        asio::co_spawn(io, accept_loop(), asio::detached);
    }
    unsigned short port() const { return acceptor_.local_endpoint().port(); }
    std::string url(std::string const& host = "127.0.0.1") const {
        return std::string(tls_ ? "https" : "http") + "://u:s3cret@" + host + ":" + std::to_string(port());
    }
    void stop() {
        boost::system::error_code ec;
        acceptor_.close(ec);
        for (auto* s : sockets_) {
            s->close(ec);
        }
    }
    std::size_t count(std::function<bool(seen_request const&)> const& pred) const {
        return static_cast<std::size_t>(std::count_if(requests.begin(), requests.end(), pred));
    }
    std::vector<seen_request> requests;
    int handshake_failures = 0;
    int connections = 0; // connections accepted

private:
    asio::awaitable<void> accept_loop() {
        for (;;) {
            boost::system::error_code ec;
            auto sock = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
                co_return;
            }
            asio::co_spawn(acceptor_.get_executor(), session(std::move(sock)), asio::detached);
        }
    }
    asio::awaitable<void> session(tcp::socket sock) {
        ++connections;
        if (tls_ == nullptr) {
            sockets_.push_back(&sock);
            for (;;) { // (not `while (co_await ...)`: GCC 12 miscompiles it)
                bool const more = co_await serve(sock, sock);
                if (!more) {
                    break;
                }
            }
            std::erase(sockets_, &sock);
            co_return;
        }
        ssl::stream<tcp::socket> s(std::move(sock), *tls_);
        sockets_.push_back(&s.next_layer());
        boost::system::error_code ec;
        co_await s.async_handshake(ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            ++handshake_failures;
        } else {
            for (;;) { // (not `while (co_await ...)`: GCC 12 miscompiles it)
                bool const more = co_await serve(s, s.next_layer());
                if (!more) {
                    break;
                }
            }
        }
        std::erase(sockets_, &s.next_layer());
    }
    // One request; true when its script ended in hold() with the
    // connection open, which may then carry the next request (keep-alive).
    template <class Stream>
    asio::awaitable<bool> serve(Stream& s, tcp::socket& raw) {
        boost::system::error_code ec;
        std::string in;
        char buf[4096];
        auto read_more = [&]() -> asio::awaitable<bool> {
            auto n = co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
            in.append(buf, n);
            co_return !ec;
        };
        while (in.find("\r\n\r\n") == std::string::npos) {
            if (!co_await read_more()) {
                co_return false;
            }
        }
        auto const head_end = in.find("\r\n\r\n") + 4;
        auto const head = in.substr(0, head_end);
        auto const len_text = header_value(head, "Content-Length");
        std::size_t const len = len_text.empty() ? 0 : std::stoul(len_text);
        while (in.size() < head_end + len) {
            if (!co_await read_more()) {
                co_return false;
            }
        }
        seen_request r;
        r.method = head.substr(0, head.find(' '));
        r.target = head.substr(head.find(' ') + 1, head.find(" HTTP/") - head.find(' ') - 1);
        r.cookie = header_value(head, "Cookie");
        r.authorization = header_value(head, "Authorization");
        r.content_type = header_value(head, "Content-Type");
        r.body = in.substr(head_end, len);
        requests.push_back(r);
        for (auto const& a : handler_(r)) {
            switch (a.k) {
            case action::write:
                co_await asio::async_write(s, asio::buffer(a.bytes), asio::redirect_error(asio::use_awaitable, ec));
                break;
            case action::close:
                raw.close(ec);
                co_return false;
            case action::hold:
                co_return raw.is_open();
            }
            if (ec) {
                co_return false;
            }
        }
        co_return false;
    }
    tcp::acceptor acceptor_;
    handler handler_;
    ssl::context* tls_;
    std::vector<tcp::socket*> sockets_;
};

// --- the feed under test ----------------------------------------------------------

couch::feed_options fast_options(couch::since since = couch::since::beginning()) {
    couch::feed_options o;
    o.database = "db";
    o.since = std::move(since);
    o.heartbeat = 5s; // no stalls in these tests
    o.backoff_initial = 20ms;
    o.backoff_max = 100ms;
    o.slow_retry = 100ms;
    o.batch_limit = 2;
    o.seq_interval = 0;
    o.request_timeout = 20s;
    return o;
}

// Captures everything logged through spdlog's default logger while alive.
struct log_capture {
    std::ostringstream os;
    std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
    log_capture() {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(os);
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
    }
    ~log_capture() { spdlog::set_default_logger(previous); }
    log_capture(log_capture const&) = delete;
    log_capture& operator=(log_capture const&) = delete;
    std::string text() const { return os.str(); }
};

struct outcome {
    std::vector<std::string> ids, seqs;
    couch::feed_status status;
    std::string error, metrics, logs;
    bool timed_out = false;
};

// Reads rows until `want` arrived or `until` holds for the status, then stops
// the feed and the server; every assertion happens after run() returns.
// `on_rows` runs on the strand after each batch (e.g. to rewind).
outcome drive(test_server& server, asio::io_context& io, couch::client_config cfg, couch::feed_options options,
              std::size_t want, std::function<bool(couch::feed_status const&)> until = {}) {
    outcome out;
    log_capture logs;
    metrics::registry reg;
    auto strand = asio::make_strand(io);
    couch::changes_feed feed(strand, std::move(cfg), std::move(options), reg);
    bool finished = false;
    auto finish = [&] {
        if (!finished) {
            finished = true;
            feed.stop();
            out.status = feed.status();
            server.stop();
        }
    };
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            while (out.ids.size() < want) {
                auto rows = co_await feed.next();
                for (auto& r : rows) {
                    out.ids.push_back(r.id);
                    out.seqs.push_back(r.seq.raw_json());
                }
            }
        } catch (std::exception const& e) {
            out.error = e.what();
        }
        finish();
    }, asio::detached);
    asio::steady_timer watch(strand);
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        auto const deadline = std::chrono::steady_clock::now() + 60s; // safety net only
        while (!finished) {
            if (until && until(feed.status())) {
                finish();
                break;
            }
            if (std::chrono::steady_clock::now() > deadline) {
                out.timed_out = true;
                finish();
                break;
            }
            watch.expires_after(10ms);
            co_await watch.async_wait(asio::use_awaitable);
        }
    }, asio::detached);
    io.run();
    out.metrics = reg.expose();
    out.logs = logs.text();
    return out;
}

bool contains(std::string const& s, std::string_view part) { return s.find(part) != std::string::npos; }

// Nothing secret anywhere an operator looks: status, logs, metrics.
void check_no_secrets(outcome const& out, std::vector<std::string> const& secrets) {
    for (auto const& secret : secrets) {
        BOOST_TEST(!contains(out.status.last_error, secret), "last_error shows " << secret << ": " << out.status.last_error);
        BOOST_TEST(!contains(out.logs, secret), "logs show " << secret << ": " << out.logs);
        BOOST_TEST(!contains(out.metrics, secret), "metrics show " << secret);
    }
}

// A plain feed script: one catch-up batch, then a continuous feed with `live`.
test_server::handler simple_couch(std::vector<std::pair<std::string, std::string>> batch, std::string last,
                                  std::vector<std::pair<std::string, std::string>> live) {
    return [=](seen_request const& r) -> script {
        if (!r.changes()) {
            return {w(db_info_200), hold()};
        }
        if (contains(r.target, "feed=normal")) {
            return {w(status_response(200, normal_body(batch, last, 0)))};
        }
        std::string lines;
        for (auto const& [id, seq] : live) {
            lines += row_line(id, seq);
        }
        return {w(chunked_200), w(chunk(lines)), hold()};
    };
}

// --- CouchDB 3.4.3 /_session recordings ---------------------------------------------

std::string recording(std::string const& name) {
    return test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + name);
}
std::string const recorded_cookie = "AuthSession=YWRtaW46NkIwMjU0RDM6cO8FJRbVs00iB5_rC8d_Z5YnRXuCXpNh6r3QCi7uXII";

// 09a with its cookie replaced by `cookie` (same header shape; the length of a
// header does not change Content-Length).
std::string session_ok(std::string const& cookie) {
    auto text = recording("09a_post_session.http");
    auto const at = text.find(recorded_cookie);
    BOOST_REQUIRE(at != std::string::npos);
    return text.replace(at, recorded_cookie.size(), cookie);
}

couch::client_config cookie_config(test_server const& server) {
    couch::client_config cfg;
    cfg.url = "http://127.0.0.1:" + std::to_string(server.port());
    cfg.user = "admin";
    cfg.password = "s3cret";
    cfg.auth = couch::client_config::auth_mode::cookie;
    return cfg;
}

} // namespace

BOOST_AUTO_TEST_SUITE(auth_tls)

// --- HTTPS ------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(https_with_ca_file_verifies_ip_and_dns_names) {
    auto const m = make_tls_material("DNS:localhost,IP:127.0.0.1");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    for (std::string const host : {"127.0.0.1", "localhost"}) {
        BOOST_TEST_CONTEXT("host " << host) {
            asio::io_context io;
            test_server server(io, simple_couch({{"a", "1-x"}}, "1-x", {{"b", "2-x"}, {"c", "3-x"}}), ctx.get());
            couch::client_config cfg;
            cfg.url = server.url(host);
            cfg.ca_file = ca_file;
            auto const out = drive(server, io, cfg, fast_options(), 3);
            BOOST_TEST(!out.timed_out);
            BOOST_TEST(out.error.empty(), out.error);
            BOOST_TEST((out.ids == std::vector<std::string>{"a", "b", "c"}));
            BOOST_TEST(server.handshake_failures == 0);
            BOOST_REQUIRE(!server.requests.empty());
            // Basic auth travels inside TLS, as it does over plain HTTP.
            BOOST_TEST(server.requests[0].authorization == "Basic dTpzM2NyZXQ=");
        }
    }
}

BOOST_AUTO_TEST_CASE(https_untrusted_certificate_is_refused_by_default) {
    auto const m = make_tls_material("DNS:localhost,IP:127.0.0.1");
    auto ctx = server_context(m);
    asio::io_context io;
    test_server server(io, simple_couch({{"a", "1-x"}}, "1-x", {}), ctx.get());
    couch::client_config cfg;
    cfg.url = server.url(); // no ca_file: the test CA is in no trust store
    auto const out = drive(server, io, cfg, fast_options(), 1,
                           [](couch::feed_status const& s) { return s.reconnects >= 2; });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.ids.empty());
    BOOST_TEST(server.requests.empty()); // no request (and so no credentials) ever sent
    BOOST_TEST(server.handshake_failures >= 1);
    BOOST_TEST(contains(out.status.last_error, "certificate"), out.status.last_error);
    BOOST_TEST(contains(out.status.last_error, "database 'db'"), out.status.last_error);
    check_no_secrets(out, {"s3cret"});
}

BOOST_AUTO_TEST_CASE(https_host_name_mismatch_is_refused) {
    auto const m = make_tls_material("DNS:couch.example.org");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    for (std::string const host : {"127.0.0.1", "localhost"}) {
        BOOST_TEST_CONTEXT("host " << host) {
            asio::io_context io;
            test_server server(io, simple_couch({{"a", "1-x"}}, "1-x", {}), ctx.get());
            couch::client_config cfg;
            cfg.url = server.url(host);
            cfg.ca_file = ca_file; // trusted, but for another name
            auto const out = drive(server, io, cfg, fast_options(), 1,
                                   [](couch::feed_status const& s) { return s.reconnects >= 2; });
            BOOST_TEST(!out.timed_out);
            BOOST_TEST(out.ids.empty());
            BOOST_TEST(server.requests.empty());
            BOOST_TEST(contains(out.status.last_error, "mismatch"), out.status.last_error);
            check_no_secrets(out, {"s3cret"});
        }
    }
}

BOOST_AUTO_TEST_CASE(tls_verify_false_accepts_an_untrusted_certificate_for_another_name) {
    auto const m = make_tls_material("DNS:couch.example.org");
    auto ctx = server_context(m);
    asio::io_context io;
    test_server server(io, simple_couch({{"a", "1-x"}}, "1-x", {{"b", "2-x"}}), ctx.get());
    couch::client_config cfg;
    cfg.url = server.url();
    cfg.tls_verify = false;
    auto const out = drive(server, io, cfg, fast_options(), 2);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b"}));
    BOOST_TEST(server.handshake_failures == 0);
}

BOOST_AUTO_TEST_CASE(unreadable_ca_file_is_a_startup_error_naming_the_file) {
    asio::io_context io;
    metrics::registry reg;
    couch::client_config cfg;
    cfg.url = "https://u:s3cret@127.0.0.1:1";
    cfg.ca_file = test_support::make_temp_dir("couchtls") + "/missing-ca.pem";
    std::string message;
    try {
        couch::changes_feed feed(io.get_executor(), cfg, fast_options(), reg);
    } catch (std::exception const& e) {
        message = e.what();
    }
    BOOST_TEST(contains(message, "missing-ca.pem"), message);
    BOOST_TEST(!contains(message, "s3cret"), message);

    auto const garbage = write_temp("garbage.pem", "not a certificate\n");
    cfg.ca_file = garbage;
    message.clear();
    try {
        couch::changes_feed feed(io.get_executor(), cfg, fast_options(), reg);
    } catch (std::exception const& e) {
        message = e.what();
    }
    BOOST_TEST(contains(message, "garbage.pem"), message);
}

BOOST_AUTO_TEST_CASE(https_with_cookie_auth) {
    auto const m = make_tls_material("IP:127.0.0.1");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    asio::io_context io;
    auto couch = simple_couch({{"a", "1-x"}}, "1-x", {{"b", "2-x"}});
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            return {w(recording("09a_post_session.http"))};
        }
        if (r.cookie != recorded_cookie) {
            return {w(recording("09e_changes_with_bogus_cookie.http"))};
        }
        return couch(r);
    }, ctx.get());
    auto cfg = cookie_config(server);
    cfg.url = "https://127.0.0.1:" + std::to_string(server.port());
    cfg.ca_file = ca_file;
    auto const out = drive(server, io, cfg, fast_options(), 2);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b"}));
    BOOST_TEST(server.count([](auto const& r) { return r.session(); }) == 1u);
}

// --- cookie auth -------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(cookie_login_then_the_cookie_alone_on_every_request) {
    asio::io_context io;
    int changes = 0;
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            return {w(recording("09a_post_session.http"))};
        }
        if (r.cookie != recorded_cookie) { // CouchDB: an unknown cookie is anonymous
            return {w(recording("09e_changes_with_bogus_cookie.http"))};
        }
        if (!r.changes()) {
            return {w(db_info_200), hold()};
        }
        if (++changes == 1) {
            return {w(recording("09b_changes_with_session_cookie.http"))}; // 3 rows, pending 9
        }
        if (changes == 2) {
            return {w(status_response(200, normal_body({{"d", "5-x"}}, "5-x", 0)))};
        }
        return {w(chunked_200), w(chunk(row_line("e", "6-x"))), hold()};
    });
    auto opt = fast_options();
    opt.batch_limit = 3;
    auto const out = drive(server, io, cookie_config(server), opt, 5);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST((out.ids == std::vector<std::string>{"97ce7c4fb05742a7bcfa5c0ce2a4fced",
                                                    "241a8987881b4a7f98408d5c6153e4aa", "_design/x", "d", "e"}));
    BOOST_REQUIRE_GE(server.requests.size(), 3u);
    auto const& login = server.requests[0];
    BOOST_TEST(login.method == "POST");
    BOOST_TEST(login.target == "/_session");
    BOOST_TEST(contains(login.content_type, "application/json"), login.content_type);
    BOOST_TEST(login.body == R"({"name":"admin","password":"s3cret"})");
    BOOST_TEST(login.authorization.empty());
    for (std::size_t i = 1; i < server.requests.size(); ++i) {
        BOOST_TEST_CONTEXT("request " << i << " " << server.requests[i].target) {
            BOOST_TEST(server.requests[i].cookie == recorded_cookie); // name=value only, no attributes
            BOOST_TEST(server.requests[i].authorization.empty());     // never the password again
        }
    }
    BOOST_TEST(server.count([](auto const& r) { return r.session(); }) == 1u); // one login is enough
    std::vector<std::string> changes_targets;
    for (auto const& r : server.requests) {
        if (r.changes()) {
            changes_targets.push_back(r.target);
        }
    }
    BOOST_REQUIRE_GE(changes_targets.size(), 2u);
    BOOST_TEST(contains(changes_targets[1], "since=4-g1AAAA"), changes_targets[1]); // 09b's last_seq
    check_no_secrets(out, {"s3cret", recorded_cookie.substr(12)});
}

BOOST_AUTO_TEST_CASE(cookie_expired_is_renewed_on_401_without_an_unauthorized_state) {
    asio::io_context io;
    std::string const first = "AuthSession=Zmlyc3Q6Y29va2ll", second = "AuthSession=c2Vjb25kOmNvb2tpZQ";
    int logins = 0;
    std::string valid; // the one cookie the server accepts at this moment
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            valid = ++logins == 1 ? first : second;
            return {w(session_ok(valid))};
        }
        if (r.cookie != valid) {
            return {w(recording("09e_changes_with_bogus_cookie.http"))};
        }
        if (!r.changes()) {
            return {w(db_info_200), hold()};
        }
        if (contains(r.target, "feed=normal")) {
            return {w(status_response(200, r.target.ends_with("since=0") ? normal_body({{"a", "1-x"}}, "1-x", 0)
                                                                         : normal_body({}, "2-x", 0)))};
        }
        // The continuous feed: one row, then the session "expires" and the server ends the response.
        valid = "expired";
        return {w(chunked_200), w(chunk(row_line(r.cookie == first ? "b" : "c", r.cookie == first ? "2-x" : "3-x"))),
                w("0\r\n\r\n"), hold()};
    });
    bool saw_unauthorized = false;
    auto const out = drive(server, io, cookie_config(server), fast_options(), 3, [&](couch::feed_status const& s) {
        saw_unauthorized = saw_unauthorized || s.state == couch::feed_state::unauthorized;
        return false;
    });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST((out.ids == std::vector<std::string>{"a", "b", "c"}));
    BOOST_TEST(logins == 2);
    BOOST_TEST(!saw_unauthorized);
    BOOST_TEST(contains(out.metrics, R"(couch_bridge_couch_reconnects_total{database="db",reason="unauthorized"} 0)"),
               out.metrics);
    // After the 401 the same request went out again with the new cookie.
    bool retried_with_second = false;
    for (auto const& r : server.requests) {
        retried_with_second = retried_with_second || (r.changes() && r.cookie == second);
    }
    BOOST_TEST(retried_with_second);
    check_no_secrets(out, {"s3cret", "Zmlyc3Q6Y29va2ll", "c2Vjb25kOmNvb2tpZQ"});
}

BOOST_AUTO_TEST_CASE(cookie_wrong_password_is_unauthorized_with_couchdbs_reason) {
    asio::io_context io;
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            return {w(recording("09d_post_session_wrong_password.http"))};
        }
        return {w(recording("09e_changes_with_bogus_cookie.http"))};
    });
    auto const out = drive(server, io, cookie_config(server), fast_options(), 1, [&](couch::feed_status const& s) {
        return s.state == couch::feed_state::unauthorized && s.reconnects >= 2;
    });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.ids.empty());
    BOOST_TEST(contains(out.status.last_error, "Name or password is incorrect"), out.status.last_error);
    BOOST_TEST(contains(out.status.last_error, "database 'db'"), out.status.last_error);
    // Retried slowly with a new login each time; no _changes without a session.
    BOOST_TEST(server.count([](auto const& r) { return r.session(); }) >= 2u);
    BOOST_TEST(server.count([](auto const& r) { return r.changes(); }) == 0u);
    check_no_secrets(out, {"s3cret"});
}

BOOST_AUTO_TEST_CASE(cookie_login_transport_failure_is_transient_not_unauthorized) {
    asio::io_context io;
    int logins = 0;
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            if (++logins == 1) {
                return {close_now()}; // e.g. a proxy restarting
            }
            return {w(recording("09a_post_session.http"))};
        }
        return simple_couch({{"a", "1-x"}}, "1-x", {})(r);
    });
    auto const out = drive(server, io, cookie_config(server), fast_options(), 1);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a"}));
    BOOST_TEST(logins == 2);
    BOOST_TEST(contains(out.metrics, R"(couch_bridge_couch_reconnects_total{database="db",reason="unauthorized"} 0)"),
               out.metrics);
    BOOST_TEST(contains(out.metrics, R"(couch_bridge_couch_reconnects_total{database="db",reason="closed"} 1)"),
               out.metrics);
}

// A 401 that survives one renewal makes the feed `unauthorized`; once the
// operator fixes the permissions on the server it must recover by itself,
// even though the cookie it holds has expired in the meantime.
BOOST_AUTO_TEST_CASE(cookie_unauthorized_streak_recovers_with_a_fresh_login) {
    asio::io_context io;
    int logins = 0, refusals = 0;
    int fixed_at_login = 0; // cookies from logins after this one are accepted (0: none yet)
    test_server server(io, [&](seen_request const& r) -> script {
        if (r.session()) {
            ++logins;
            return {w(session_ok("AuthSession=login" + std::to_string(logins)))};
        }
        int const n = r.cookie.starts_with("AuthSession=login") ? std::stoi(r.cookie.substr(17)) : 0;
        if (fixed_at_login == 0 || n <= fixed_at_login) {
            if (++refusals == 3) {
                fixed_at_login = logins; // permissions granted; older sessions stay invalid
            }
            return {w(recording("09e_changes_with_bogus_cookie.http"))};
        }
        return simple_couch({{"a", "1-x"}}, "1-x", {})(r);
    });
    bool saw_unauthorized = false;
    auto const out = drive(server, io, cookie_config(server), fast_options(), 1, [&](couch::feed_status const& s) {
        saw_unauthorized = saw_unauthorized || s.state == couch::feed_state::unauthorized;
        return false;
    });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST((out.ids == std::vector<std::string>{"a"}));
    BOOST_TEST(saw_unauthorized);
    BOOST_TEST(logins > fixed_at_login);
}

// --- rewind() with I/O in flight -----------------------------------------------------

// The owner rewinds (e.g. after a delivery failure) while next() waits in a
// read of the continuous feed: that next() must go on from the new position,
// with no rows of the old connection and no error.
void rewind_during_read(bool tls) {
    auto const m = make_tls_material("IP:127.0.0.1");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    asio::io_context io;
    int changes = 0;
    test_server server(io, [&](seen_request const& r) -> script {
        if (!r.changes()) {
            return {w(db_info_200), hold()};
        }
        switch (++changes) {
        case 1:
            return {w(status_response(200, normal_body({{"a", "1-x"}}, "1-x", 0)))};
        case 2: // b, then nothing: next() waits in a read
            return {w(chunked_200), w(chunk(row_line("b", "2-x"))), hold()};
        case 3:
            return {w(status_response(200, normal_body({{"b", "2-x"}}, "2-x", 0)))};
        default:
            return {w(chunked_200), w(chunk(row_line("c", "3-x"))), hold()};
        }
    }, tls ? ctx.get() : nullptr);
    metrics::registry reg;
    auto strand = asio::make_strand(io);
    couch::client_config cfg;
    cfg.url = server.url();
    cfg.ca_file = ca_file;
    couch::changes_feed feed(strand, cfg, fast_options(), reg);
    std::vector<std::string> ids;
    std::string error;
    bool waiting = false, rewound = false, done = false, timed_out = false;
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            while (ids.size() < 4) {
                waiting = ids.size() == 2; // after b: the next read has nothing to read
                auto rows = co_await feed.next();
                for (auto& r : rows) {
                    ids.push_back(r.id);
                }
            }
        } catch (std::exception const& e) {
            error = e.what();
        }
        done = true;
        feed.stop();
        server.stop();
    }, asio::detached);
    asio::steady_timer t(strand);
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        auto const deadline = std::chrono::steady_clock::now() + 60s; // safety net only
        while (!done) {
            if (waiting && !rewound) {
                rewound = true; // the reader is suspended in next(), in the socket read
                feed.rewind(couch::since::from(couch::seq::from_raw_json("\"1-x\"")));
            }
            if (std::chrono::steady_clock::now() > deadline) {
                timed_out = true;
                feed.stop();
                server.stop();
                break;
            }
            t.expires_after(10ms);
            co_await t.async_wait(asio::use_awaitable);
        }
    }, asio::detached);
    io.run();
    BOOST_TEST(!timed_out);
    BOOST_TEST(rewound);
    BOOST_TEST(error.empty(), error);
    BOOST_TEST((ids == std::vector<std::string>{"a", "b", "b", "c"}));
    BOOST_REQUIRE_GE(server.requests.size(), 4u);
    std::vector<std::string> changes_targets;
    for (auto const& r : server.requests) {
        if (r.changes()) {
            changes_targets.push_back(r.target);
        }
    }
    BOOST_REQUIRE_GE(changes_targets.size(), 3u);
    BOOST_TEST(contains(changes_targets[2], "feed=normal"), changes_targets[2]);
    BOOST_TEST(contains(changes_targets[2], "since=1-x"), changes_targets[2]);
    BOOST_TEST(server.handshake_failures == 0);
}

BOOST_AUTO_TEST_CASE(rewind_while_a_read_is_in_flight) { rewind_during_read(false); }

BOOST_AUTO_TEST_CASE(rewind_while_a_tls_read_is_in_flight) { rewind_during_read(true); }

// A rewind while the db-info request (made before resuming from a seq) has no
// answer yet must not wait for that request's deadline.
BOOST_AUTO_TEST_CASE(rewind_while_the_db_check_is_in_flight) {
    asio::io_context io;
    int db_checks = 0;
    test_server server(io, [&](seen_request const& r) -> script {
        if (!r.changes() && ++db_checks == 1) {
            return {hold()}; // the first one never gets an answer
        }
        return simple_couch({{"a", "1-x"}}, "1-x", {{"b", "2-x"}})(r);
    });
    metrics::registry reg;
    auto strand = asio::make_strand(io);
    couch::client_config cfg;
    cfg.url = server.url();
    auto opt = fast_options(couch::since::from(couch::seq::from_raw_json("\"7-x\"")));
    opt.request_timeout = 600s; // far beyond the test's safety net
    couch::changes_feed feed(strand, cfg, opt, reg);
    std::vector<std::string> ids;
    std::string error;
    bool rewound = false, done = false, timed_out = false;
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            while (ids.size() < 2) {
                auto rows = co_await feed.next();
                for (auto& r : rows) {
                    ids.push_back(r.id);
                }
            }
        } catch (std::exception const& e) {
            error = e.what();
        }
        done = true;
        feed.stop();
        server.stop();
    }, asio::detached);
    asio::steady_timer t(strand);
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        auto const deadline = std::chrono::steady_clock::now() + 60s; // safety net only
        while (!done) {
            if (!rewound && !server.requests.empty()) {
                rewound = true; // the server holds GET /db: the feed waits for its answer
                feed.rewind(couch::since::beginning());
            }
            if (std::chrono::steady_clock::now() > deadline) {
                timed_out = true;
                feed.stop();
                server.stop();
                break;
            }
            t.expires_after(10ms);
            co_await t.async_wait(asio::use_awaitable);
        }
    }, asio::detached);
    io.run();
    BOOST_TEST(!timed_out);
    BOOST_TEST(rewound);
    BOOST_TEST(error.empty(), error);
    BOOST_TEST((ids == std::vector<std::string>{"a", "b"}));
    BOOST_REQUIRE_GE(server.requests.size(), 2u);
    BOOST_TEST(server.requests[0].target == "/db");
    BOOST_TEST(contains(server.requests[1].target, "since=0"), server.requests[1].target);
}

// The server-wide requests of discovery set TLS up the same way (couch/detail/connection).
BOOST_AUTO_TEST_CASE(discovery_requests_over_https_verify_the_server) {
    auto const m = make_tls_material("DNS:localhost,IP:127.0.0.1");
    auto const ca_file = write_temp("ca.pem", m.ca_pem);
    auto ctx = server_context(m);
    for (bool const trusted : {true, false}) {
        BOOST_TEST_CONTEXT("trusted " << trusted) {
            asio::io_context io;
            test_server server(
                io, [](seen_request const&) { return script{w(status_response(200, R"(["a","b"])")), close_now()}; },
                ctx.get());
            couch::client_config cfg;
            cfg.url = server.url("localhost");
            cfg.ca_file = trusted ? ca_file : std::string();
            couch::http_session session(io.get_executor(), cfg, 10s);
            couch::all_dbs_listing got;
            asio::co_spawn(io, couch::list_all_dbs(session), [&](std::exception_ptr, couch::all_dbs_listing r) {
                got = std::move(r);
                server.stop();
            });
            io.run_for(20s);
            if (trusted) {
                BOOST_TEST(got.error.empty(), got.error);
                BOOST_TEST((got.names == std::vector<std::string>{"a", "b"}));
                BOOST_REQUIRE(!server.requests.empty());
                BOOST_TEST(server.requests[0].authorization == "Basic dTpzM2NyZXQ=");
            } else {
                BOOST_TEST(contains(got.error, "TLS certificate of https://localhost:"), got.error);
                BOOST_TEST(contains(got.error, "not accepted"), got.error);
                BOOST_TEST(!contains(got.error, "s3cret"));
                BOOST_TEST(server.requests.empty()); // no request, so no credentials, ever sent
            }
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
