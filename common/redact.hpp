#pragma once

#include <string>
#include <string_view>

namespace common {

// Returns `url` with any userinfo ("user:password@") removed, so that the
// result can go into logs, metrics, /status and error messages. Works on
// anything that looks like scheme://[userinfo@]host...; other strings come
// back unchanged.
std::string redact_url(std::string_view url);

// Replaces every occurrence of `secret` in `text` with "***". An empty secret
// leaves the text unchanged.
std::string redact_secret(std::string text, std::string_view secret);

} // namespace common
