#include "common/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <stdexcept>
#include <string>

namespace common {

log_format parse_log_format(std::string_view s) {
    if (s == "text") {
        return log_format::text;
    }
    if (s == "json") {
        return log_format::json;
    }
    throw std::invalid_argument("unknown log format '" + std::string(s) + "' (expected text or json)");
}

void init_logging(log_format format, std::string_view level) {
    auto lvl = spdlog::level::from_str(std::string(level));
    // from_str maps anything unknown to "off"; only accept "off" when asked for.
    if (lvl == spdlog::level::off && level != "off") {
        throw std::invalid_argument("unknown log level '" + std::string(level) +
                                    "' (expected trace, debug, info, warn, error, critical or off)");
    }
    auto logger = spdlog::stderr_logger_mt("couch-kafka-bridge");
    if (format == log_format::json) {
        // Messages are escaped by the caller through common::json_escape where
        // they carry untrusted text; the pattern only adds fixed fields.
        logger->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":"%v"})", spdlog::pattern_time_type::utc);
    } else {
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %-5l %v", spdlog::pattern_time_type::utc);
    }
    logger->set_level(lvl);
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(std::move(logger));
}

} // namespace common
