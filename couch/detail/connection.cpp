#include "couch/detail/connection.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/x509v3.h>

#include <stdexcept>

namespace couch::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

bool connection::open() { return (plain || tls) && tcp().socket().is_open(); }

void connection::close() {
    if (!plain && !tls) {
        return;
    }
    error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp().socket().close(ignored);
}

void connection::reset() {
    close();
    tls.reset();
    plain.reset();
}

std::unique_ptr<asio::ssl::context> make_tls_context(client_config const& cfg, parsed_url const& url) {
    if (!url.tls) {
        return nullptr;
    }
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    ctx->set_default_verify_paths();
    if (!cfg.ca_file.empty()) {
        // A bad file is a startup failure; say which file (Asio's own
        // message names only the call).
        error_code ec;
        ctx->load_verify_file(cfg.ca_file, ec);
        if (ec) {
            throw std::invalid_argument("cannot load CA file '" + cfg.ca_file + "' for " + url.redacted + ": " +
                                        ec.message());
        }
    }
    ctx->set_verify_mode(cfg.tls_verify ? asio::ssl::verify_peer : asio::ssl::verify_none);
    return ctx;
}

asio::awaitable<connect_result> connect(connection& c, asio::any_io_executor ex, parsed_url const& url,
                                        asio::ssl::context* tls, bool verify, std::chrono::milliseconds timeout) {
    connect_result out;
    auto& ec = out.ec;
    c.reset();
    tcp::resolver resolver(ex);
    auto const results =
        co_await resolver.async_resolve(url.host, url.port, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        co_return out;
    }
    if (tls != nullptr) {
        c.tls.emplace(ex, *tls);
    } else {
        c.plain.emplace(ex);
    }
    c.tcp().expires_after(timeout);
    co_await c.tcp().async_connect(results, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !c.tls) {
        co_return out;
    }
    auto* const ssl = c.tls->native_handle();
    error_code not_ip;
    asio::ip::make_address(url.host, not_ip);
    // SNI carries DNS names only (RFC 6066 section 3), never an IP literal.
    if (not_ip && !SSL_set_tlsext_host_name(ssl, url.host.c_str())) {
        ec = error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
        co_return out;
    }
    if (verify) {
        // OpenSSL's own name check instead of a verify callback: a wrong name
        // is then reported as such (SSL_get_verify_result says "hostname
        // mismatch"), not as a bare "verify failed".
        auto* const param = SSL_get0_param(ssl);
        int const ok = not_ip ? X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), url.host.size())
                              : X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
        if (ok != 1) {
            ec = error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
            co_return out;
        }
    }
    c.tcp().expires_after(timeout);
    co_await c.tls->async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
    if (ec && verify) {
        if (auto const v = SSL_get_verify_result(ssl); v != X509_V_OK) {
            out.tls_rejected = X509_verify_cert_error_string(v);
        }
    }
    co_return out;
}

} // namespace couch::detail
