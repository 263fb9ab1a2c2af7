#include "common/redact.hpp"

namespace common {

std::string redact_url(std::string_view url) {
    auto scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos) {
        return std::string(url);
    }
    auto authority_begin = scheme_end + 3;
    auto authority_end = url.find_first_of("/?#", authority_begin);
    if (authority_end == std::string_view::npos) {
        authority_end = url.size();
    }
    auto authority = url.substr(authority_begin, authority_end - authority_begin);
    auto at = authority.rfind('@');
    if (at == std::string_view::npos) {
        return std::string(url);
    }
    std::string out;
    out.reserve(url.size());
    out.append(url.substr(0, authority_begin));
    out.append(authority.substr(at + 1));
    out.append(url.substr(authority_end));
    return out;
}

std::string redact_secret(std::string text, std::string_view secret) {
    if (secret.empty()) {
        return text;
    }
    std::string::size_type pos = 0;
    while ((pos = text.find(secret, pos)) != std::string::npos) {
        text.replace(pos, secret.size(), "***");
        pos += 3;
    }
    return text;
}

} // namespace common
