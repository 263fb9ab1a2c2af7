#include "bridge/app.hpp"
#include "bridge/kafka_checkpoints.hpp"
#include "bridge/config.hpp"
#include "bridge/tail.hpp"
#include "checkpoint/command.hpp"

#include "common/log.hpp"

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
        if (cfg.checkpoint_store == "kafka") {
            return bridge::run_kafka_checkpoints_command(cfg, parsed.checkpoint_args);
        }
        return checkpoint::run_checkpoints_command(cfg.checkpoint_dir, parsed.checkpoint_args, std::cout, std::cerr);
    }
    if (parsed.what == bridge::command::tail) {
        bridge::tail_options t;
        t.brokers = cfg.kafka_brokers;
        t.topics = parsed.tail_topics;
        t.properties = bridge::kafka_client_properties(cfg);
        t.max_records = parsed.tail_max_records;
        t.timeout = std::chrono::milliseconds(parsed.tail_timeout_ms);
        if (parsed.tail_fetch_docs) {
            t.fetch_docs = bridge::couch_client_config(cfg);
            t.fetch_batch = parsed.tail_fetch_batch;
        }
        return bridge::run_tail(t, std::cout, std::cerr);
    }
    try {
        return bridge::run_bridge(cfg);
    } catch (std::exception const& e) {
        spdlog::critical("fatal: {}", e.what());
        return 1;
    }
}
