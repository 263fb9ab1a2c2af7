#include "couch/json_text.hpp"

#include <algorithm>

namespace couch {
namespace {

std::size_t skip_ws(std::string_view s, std::size_t i) noexcept {
    while (i < s.size() && is_json_ws(s[i])) {
        ++i;
    }
    return i;
}

// Index just past the JSON string starting at s[i] == '"', or npos.
std::size_t skip_string(std::string_view s, std::size_t i) noexcept {
    for (++i; i < s.size(); ++i) {
        if (s[i] == '\\') {
            ++i;
        } else if (s[i] == '"') {
            return i + 1;
        }
    }
    return std::string_view::npos;
}

// Index just past the JSON value starting at s[i], or npos. Structural only.
std::size_t skip_value(std::string_view s, std::size_t i) noexcept {
    if (i >= s.size()) {
        return std::string_view::npos;
    }
    if (s[i] == '"') {
        return skip_string(s, i);
    }
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < s.size()) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, i);
                if (i == std::string_view::npos) {
                    return i;
                }
                continue;
            }
            if (c == '{' || c == '[') {
                ++depth;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) {
                    return i + 1;
                }
            }
            ++i;
        }
        return std::string_view::npos;
    }
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_json_ws(s[i])) {
        ++i;
    }
    return i;
}

} // namespace

std::string describe_id(std::string_view id) {
    if (id.empty()) {
        return "doc id unknown";
    }
    return "doc id '" + std::string(id) + "'";
}

std::string_view find_member_raw(std::string_view s, std::string_view key) {
    std::size_t i = skip_ws(s, 0);
    if (i >= s.size() || s[i] != '{') {
        return {};
    }
    ++i;
    while (true) {
        i = skip_ws(s, i);
        if (i >= s.size() || s[i] != '"') {
            return {};
        }
        std::size_t const key_end = skip_string(s, i);
        if (key_end == std::string_view::npos) {
            return {};
        }
        std::string_view const k = s.substr(i + 1, key_end - i - 2);
        i = skip_ws(s, key_end);
        if (i >= s.size() || s[i] != ':') {
            return {};
        }
        i = skip_ws(s, i + 1);
        std::size_t const value_end = skip_value(s, i);
        if (value_end == std::string_view::npos || value_end == i) {
            return {};
        }
        if (k == key) {
            return s.substr(i, value_end - i);
        }
        i = skip_ws(s, value_end);
        if (i >= s.size() || s[i] != ',') {
            return {};
        }
        ++i;
    }
}

std::string sniff_doc_id(std::string_view partial) {
    constexpr std::string_view key = "\"id\":\"";
    partial = partial.substr(0, std::min<std::size_t>(partial.size(), 1u << 16));
    auto const pos = partial.find(key);
    if (pos == std::string_view::npos) {
        return {};
    }
    std::string id;
    for (std::size_t i = pos + key.size(); i < partial.size() && id.size() < 512; ++i) {
        char const c = partial[i];
        if (c == '\\' && i + 1 < partial.size()) {
            id.push_back(partial[++i]);
        } else if (c == '"') {
            return id;
        } else {
            id.push_back(c);
        }
    }
    return id;
}

} // namespace couch
