#include "couch/url.hpp"

#include "common/redact.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace couch {

std::string base64(std::string_view in) {
    static constexpr char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (unsigned char c : in) {
        acc = (acc << 8) | c;
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out.push_back(tbl[(acc >> bits) & 63]);
        }
    }
    if (bits > 0) {
        out.push_back(tbl[(acc << (6 - bits)) & 63]);
    }
    while (out.size() % 4 != 0) {
        out.push_back('=');
    }
    return out;
}

namespace {

std::string percent_decode(std::string_view s) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        if (c >= 'A' && c <= 'F') {
            return c - 'A' + 10;
        }
        return -1;
    };
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
            i += 2;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

} // namespace

parsed_url parse_url(client_config const& cfg) {
    parsed_url u;
    std::string_view s = cfg.url;
    u.redacted = common::redact_url(s);
    if (s.starts_with("https://")) {
        u.tls = true;
        s.remove_prefix(8);
    } else if (s.starts_with("http://")) {
        s.remove_prefix(7);
    } else {
        throw std::invalid_argument("CouchDB URL must start with http:// or https://: " + u.redacted);
    }
    auto const authority_end = std::min(s.find_first_of("/?#"), s.size());
    std::string_view authority = s.substr(0, authority_end);
    std::string_view path = s.substr(authority_end);
    path = path.substr(0, std::min(path.find_first_of("?#"), path.size()));
    if (auto at = authority.rfind('@'); at != std::string_view::npos) {
        auto const userinfo = authority.substr(0, at);
        auto const colon = userinfo.find(':');
        u.user = percent_decode(userinfo.substr(0, colon));
        if (colon != std::string_view::npos) {
            u.password = percent_decode(userinfo.substr(colon + 1));
        }
        authority.remove_prefix(at + 1);
    }
    std::string_view port;
    if (authority.starts_with("[")) {
        auto const close = authority.find(']');
        if (close == std::string_view::npos) {
            throw std::invalid_argument("bad IPv6 host in CouchDB URL " + u.redacted);
        }
        u.host = std::string(authority.substr(1, close - 1));
        if (authority.substr(close + 1).starts_with(":")) {
            port = authority.substr(close + 2);
        }
    } else {
        auto const colon = authority.find(':');
        u.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) {
            port = authority.substr(colon + 1);
        }
    }
    if (u.host.empty()) {
        throw std::invalid_argument("no host in CouchDB URL " + u.redacted);
    }
    u.port = port.empty() ? (u.tls ? "443" : "80") : std::string(port);
    while (path.ends_with("/")) {
        path.remove_suffix(1);
    }
    u.prefix = std::string(path);
    if (!cfg.user.empty()) {
        u.user = cfg.user;
        u.password = cfg.password;
    }
    return u;
}


} // namespace couch
