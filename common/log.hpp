#pragma once

#include <string_view>

namespace common {

enum class log_format { text, json };

// Configures the process-wide spdlog default logger (stderr, one line per
// event). `level` is one of trace, debug, info, warn, error, critical, off.
// Throws std::invalid_argument for an unknown level. Call once at startup,
// before any other thread logs.
void init_logging(log_format format, std::string_view level);

// Parses "text" / "json"; throws std::invalid_argument otherwise.
log_format parse_log_format(std::string_view s);

} // namespace common
