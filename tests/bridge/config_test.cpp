#include "bridge/config.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>
#include <iostream>
#include <sstream>
#include <vector>

namespace {

bridge::parse_result parse(std::vector<char const*> args) {
    args.insert(args.begin(), "couch-kafka-bridge");
    return bridge::parse_command_line(static_cast<int>(args.size()), args.data());
}

} // namespace

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(repeatable_flags_and_defaults) {
    auto r = parse({"--db", "a", "--db", "b", "--kafka-property", "linger.ms=5"});
    BOOST_TEST(r.exit_code == 0);
    BOOST_TEST((r.cfg.databases == std::vector<std::string>{"a", "b"}));
    BOOST_TEST((r.cfg.kafka_properties == std::vector<std::string>{"linger.ms=5"}));
    BOOST_TEST(r.cfg.http_listen == "127.0.0.1:9108");
    BOOST_TEST(r.cfg.kafka_brokers == "embedded");
}

BOOST_AUTO_TEST_CASE(environment_twin_is_read_and_flag_wins) {
    ::setenv("COUCH_BRIDGE_KAFKA_BROKERS", "k1:9092,k2:9092", 1);
    auto from_env = parse({});
    BOOST_TEST(from_env.cfg.kafka_brokers == "k1:9092,k2:9092");
    auto from_flag = parse({"--kafka-brokers", "k3:9092"});
    BOOST_TEST(from_flag.cfg.kafka_brokers == "k3:9092");
    ::unsetenv("COUCH_BRIDGE_KAFKA_BROKERS");
}

BOOST_AUTO_TEST_CASE(invalid_values_fail_with_nonzero_exit) {
    BOOST_TEST(parse({"--initial-since", "yesterday"}).exit_code != 0);
    BOOST_TEST(parse({"--kafka-property", "novalue"}).exit_code != 0);
    BOOST_TEST(parse({"--http-listen", "localhost"}).exit_code != 0);
}

BOOST_AUTO_TEST_CASE(heartbeat_and_in_flight_window_flags) {
    auto defaults = parse({});
    BOOST_TEST(defaults.cfg.couch_heartbeat.count() == 10000);
    BOOST_TEST(defaults.cfg.max_in_flight == 20000u);
    auto r = parse({"--couch-heartbeat", "2000", "--max-in-flight", "64", "--max-in-flight-bytes", "1048576"});
    BOOST_TEST(r.exit_code == 0);
    BOOST_TEST(r.cfg.couch_heartbeat.count() == 2000);
    BOOST_TEST(r.cfg.max_in_flight == 64u);
    BOOST_TEST(r.cfg.max_in_flight_bytes == 1048576u);
    BOOST_TEST(parse({"--couch-heartbeat", "5"}).exit_code != 0);
    BOOST_TEST(parse({"--max-in-flight", "0"}).exit_code != 0);
}

BOOST_AUTO_TEST_CASE(config_file_is_read_and_flags_win_over_it) {
    auto path = std::filesystem::temp_directory_path() / ("ckb-config-test-" + std::to_string(::getpid()) + ".toml");
    {
        std::ofstream f(path);
        f << "kafka-brokers = \"file-broker:9092\"\n"
          << "db = [\"from-file-a\", \"from-file-b\"]\n"
          << "log-level = \"debug\"\n";
    }
    auto from_file = parse({"--config", path.c_str()});
    BOOST_TEST(from_file.exit_code == 0);
    BOOST_TEST(from_file.cfg.kafka_brokers == "file-broker:9092");
    BOOST_TEST((from_file.cfg.databases == std::vector<std::string>{"from-file-a", "from-file-b"}));
    BOOST_TEST(from_file.cfg.log_level == "debug");
    auto flag_wins = parse({"--config", path.c_str(), "--log-level", "warn"});
    BOOST_TEST(flag_wins.cfg.log_level == "warn");
    std::filesystem::remove(path);
}

BOOST_AUTO_TEST_CASE(invalid_value_error_names_the_flag) {
    std::ostringstream captured;
    auto* old = std::cerr.rdbuf(captured.rdbuf());
    auto r = parse({"--initial-since", "yesterday"});
    auto r2 = parse({"--log-format", "xml"});
    std::cerr.rdbuf(old);
    BOOST_TEST(r.exit_code != 0);
    BOOST_TEST(r2.exit_code != 0);
    BOOST_TEST(captured.str().find("--initial-since") != std::string::npos, captured.str());
    BOOST_TEST(captured.str().find("--log-format") != std::string::npos, captured.str());
}

BOOST_AUTO_TEST_CASE(describe_masks_secrets) {
    auto r = parse({"--couch-url", "http://admin:s3cret@db:5984", "--couch-password", "hunter2",
                    "--kafka-property", "sasl.password=topsecret"});
    auto text = bridge::describe(r.cfg);
    BOOST_TEST(text.find("s3cret") == std::string::npos);
    BOOST_TEST(text.find("hunter2") == std::string::npos);
    BOOST_TEST(text.find("topsecret") == std::string::npos);
    BOOST_TEST(text.find("couch-url = http://db:5984") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
