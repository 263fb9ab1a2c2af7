#include "tests/support/couch_http.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <stdexcept>

namespace test_support {

namespace http = boost::beast::http;

http_result couch_request(std::string const& base_url, std::string const& method, std::string const& target,
                          std::string const& body, std::string const& authorization) {
    auto rest = base_url.substr(base_url.find("://") + 3);
    auto slash = rest.find('/');
    auto authority = rest.substr(0, slash);
    std::string userinfo;
    if (auto at = authority.rfind('@'); at != std::string::npos) {
        userinfo = authority.substr(0, at);
        authority = authority.substr(at + 1);
    }
    auto colon = authority.rfind(':');
    auto host = authority.substr(0, colon);
    auto port = colon == std::string::npos ? std::string("80") : authority.substr(colon + 1);

    boost::asio::io_context ioc;
    boost::asio::ip::tcp::resolver resolver(ioc);
    boost::beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(30));
    stream.connect(resolver.resolve(host, port));
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, host);
    req.set(http::field::content_type, "application/json");
    if (!userinfo.empty()) {
        std::string enc(boost::beast::detail::base64::encoded_size(userinfo.size()), '\0');
        enc.resize(boost::beast::detail::base64::encode(enc.data(), userinfo.data(), userinfo.size()));
        req.set(http::field::authorization, "Basic " + enc);
    }
    if (!authorization.empty()) {
        req.set(http::field::authorization, authorization);
    }
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    boost::beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    return {res.result_int(), res.body()};
}

std::string url_encode(std::string const& s) {
    static char const hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

void couch_create_db(std::string const& base_url, std::string const& db) {
    auto r = couch_request(base_url, "PUT", "/" + url_encode(db));
    if (r.status != 201 && r.status != 412 && r.status != 202) {
        throw std::runtime_error("PUT /" + db + " -> " + std::to_string(r.status) + " " + r.body);
    }
}

std::string couch_put_doc(std::string const& base_url, std::string const& db, std::string const& id,
                          boost::json::object doc) {
    auto r = couch_request(base_url, "PUT", "/" + url_encode(db) + "/" + url_encode(id), boost::json::serialize(doc));
    if (r.status != 201 && r.status != 202) {
        throw std::runtime_error("PUT " + db + "/" + id + " -> " + std::to_string(r.status) + " " + r.body);
    }
    return std::string(boost::json::parse(r.body).at("rev").as_string());
}

std::string couch_delete_doc(std::string const& base_url, std::string const& db, std::string const& id,
                             std::string const& rev) {
    auto r = couch_request(base_url, "DELETE", "/" + url_encode(db) + "/" + url_encode(id) + "?rev=" + url_encode(rev));
    if (r.status != 200 && r.status != 202) {
        throw std::runtime_error("DELETE " + db + "/" + id + " -> " + std::to_string(r.status) + " " + r.body);
    }
    return std::string(boost::json::parse(r.body).at("rev").as_string());
}

} // namespace test_support
