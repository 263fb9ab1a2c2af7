#pragma once

// What the TLS, cookie-auth and rewind tests of the feed share: throwaway
// certificates made with OpenSSL's C API, a small scripted server (plain or
// TLS) that records every request, and a driver that runs one feed against
// it. /_session answers are CouchDB 3.4.3's recorded bytes (09*).
#include "couch/changes_feed.hpp"
#include "couch/databases.hpp"
#include "couch/http_session.hpp"
#include "metrics/registry.hpp"
#include "tests/support/test_env.hpp"

#include "feed_driver.hpp"

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


#include "wire.hpp"

// Its own namespace: fault_server.hpp's couch_test has scripts of another shape.
namespace feed_test {

using namespace couch_test; // wire.hpp

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// --- throwaway certificates -------------------------------------------------

template <class T, void (*F)(T*)>
struct ossl_deleter {
    void operator()(T* p) const { F(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, ossl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, ossl_deleter<X509, X509_free>>;
using bio_ptr = std::unique_ptr<BIO, ossl_deleter<BIO, BIO_free_all>>;

inline void ossl_check(bool ok, char const* what) {
    if (!ok) {
        throw std::runtime_error(std::string("OpenSSL failed: ") + what);
    }
}

inline pkey_ptr make_key() {
    pkey_ptr k(EVP_EC_gen("P-256"));
    ossl_check(k != nullptr, "EVP_EC_gen");
    return k;
}

inline void add_ext(X509* cert, X509* issuer, int nid, char const* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    ossl_check(ext != nullptr, value);
    ossl_check(X509_add_ext(cert, ext, -1) == 1, "X509_add_ext");
    X509_EXTENSION_free(ext);
}

// A certificate for `key` named `cn`, signed by issuer/issuer_key (self-signed
// when issuer is null). `san` is a subjectAltName value for a leaf, empty for a CA.
inline x509_ptr make_cert(EVP_PKEY* key, char const* cn, X509* issuer, EVP_PKEY* issuer_key, std::string const& san) {
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
inline std::string to_pem(F write) {
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
inline tls_material make_tls_material(std::string const& san) {
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

inline std::string write_temp(std::string const& name, std::string const& text) {
    auto const path = test_support::make_temp_dir("couchtls") + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
}

inline std::unique_ptr<ssl::context> server_context(tls_material const& m) {
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
inline action w(std::string s) { return {action::write, std::move(s)}; }
inline action close_now() { return {action::close, {}}; }
inline action hold() { return {action::hold, {}}; }

inline std::string const db_info_200 = status_response(200, R"({"db_name":"db","update_seq":"999-x"})");

struct seen_request {
    std::string method, target, cookie, authorization, content_type, body;
    bool changes() const { return target.find("/_changes") != std::string::npos; }
    bool session() const { return target.find("/_session") != std::string::npos; }
};

inline std::string header_value(std::string const& head, std::string const& name) {
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

inline couch::feed_options fast_options(couch::since since = couch::since::beginning()) {
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

struct outcome : couch_feed_driver::feed_run {
    std::string metrics, logs;
};

// Reads rows until `want` arrived or `until` holds for the status, then stops
// the feed and the server; every assertion happens after run() returns.
inline outcome drive(test_server& server, asio::io_context& io, couch::client_config cfg, couch::feed_options options,
                     std::size_t want, std::function<bool(couch::feed_status const&)> until = {}) {
    outcome out;
    log_capture logs;
    metrics::registry reg;
    auto strand = asio::make_strand(io);
    couch::changes_feed feed(strand, std::move(cfg), std::move(options), reg);
    couch_feed_driver::run_feed(io, strand, feed, [&] { server.stop(); }, want, std::move(until), 10ms, out);
    out.metrics = reg.expose();
    out.logs = logs.text();
    return out;
}

inline bool contains(std::string const& s, std::string_view part) { return s.find(part) != std::string::npos; }

// Nothing secret anywhere an operator looks: status, logs, metrics.
inline void check_no_secrets(outcome const& out, std::vector<std::string> const& secrets) {
    for (auto const& secret : secrets) {
        BOOST_TEST(!contains(out.status.last_error, secret), "last_error shows " << secret << ": " << out.status.last_error);
        BOOST_TEST(!contains(out.logs, secret), "logs show " << secret << ": " << out.logs);
        BOOST_TEST(!contains(out.metrics, secret), "metrics show " << secret);
    }
}

// A plain feed script: one catch-up batch, then a continuous feed with `live`.
inline test_server::handler simple_couch(std::vector<std::pair<std::string, std::string>> batch, std::string last,
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

inline std::string recording(std::string const& name) {
    return test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + name);
}
inline std::string const recorded_cookie = "AuthSession=YWRtaW46NkIwMjU0RDM6cO8FJRbVs00iB5_rC8d_Z5YnRXuCXpNh6r3QCi7uXII";

// 09a with its cookie replaced by `cookie` (same header shape; the length of a
// header does not change Content-Length).
inline std::string session_ok(std::string const& cookie) {
    auto text = recording("09a_post_session.http");
    auto const at = text.find(recorded_cookie);
    BOOST_REQUIRE(at != std::string::npos);
    return text.replace(at, recorded_cookie.size(), cookie);
}

inline couch::client_config cookie_config(test_server const& server) {
    couch::client_config cfg;
    cfg.url = "http://127.0.0.1:" + std::to_string(server.port());
    cfg.user = "admin";
    cfg.password = "s3cret";
    cfg.auth = couch::client_config::auth_mode::cookie;
    return cfg;
}

} // namespace feed_test
