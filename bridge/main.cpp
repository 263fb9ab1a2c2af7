#include "bridge/config.hpp"

#include "common/log.hpp"
#include "common/redact.hpp"

#include <spdlog/spdlog.h>

#include <exception>
#include <iostream>

int main(int argc, char** argv) {
    auto parsed = bridge::parse_command_line(argc, argv);
    if (parsed.what == bridge::command::help_or_version_shown) {
        return parsed.exit_code;
    }
    auto const& cfg = parsed.cfg;
    if (cfg.print_config) {
        std::cout << bridge::describe(cfg);
        return 0;
    }
    try {
        common::init_logging(common::parse_log_format(cfg.log_format), cfg.log_level);
    } catch (std::exception const& e) {
        std::cerr << "couch-kafka-bridge: " << e.what() << '\n';
        return 2;
    }
    if (parsed.what == bridge::command::checkpoints) {
        spdlog::error("the checkpoints subcommand has not landed yet");
        return 2;
    }
    spdlog::error("the pipeline has not landed yet: nothing to run (see --help)");
    return 2;
}
