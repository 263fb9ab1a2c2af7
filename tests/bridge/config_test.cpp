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

BOOST_AUTO_TEST_CASE(read_coalescing_flag) {
    BOOST_TEST(parse({}).cfg.couch_read_coalesce.count() == 2000);
    auto r = parse({"--couch-read-coalesce-us", "0"});
    BOOST_TEST(r.exit_code == 0);
    BOOST_TEST(r.cfg.couch_read_coalesce.count() == 0);
    BOOST_TEST(parse({"--couch-read-coalesce-us", "500"}).cfg.couch_read_coalesce.count() == 500);
    BOOST_TEST(parse({"--couch-read-coalesce-us", "-1"}).exit_code != 0);
    BOOST_TEST(parse({"--couch-read-coalesce-us", "1000000"}).exit_code != 0);
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

BOOST_AUTO_TEST_CASE(max_open_feeds_and_idle_close) {
    auto const d = parse({});
    BOOST_TEST(d.cfg.max_open_feeds == 100);
    BOOST_TEST(d.cfg.idle_close.count() == 300000);
    auto const r = parse({"--max-open-feeds", "10", "--idle-close", "500"});
    BOOST_TEST(r.exit_code == 0);
    BOOST_TEST(r.cfg.max_open_feeds == 10);
    BOOST_TEST(r.cfg.idle_close.count() == 500);
    BOOST_TEST(bridge::describe(r.cfg).find("max-open-feeds = 10\nidle-close = 500\n") != std::string::npos);
    BOOST_TEST(parse({"--idle-close", "5"}).exit_code != 0); // below 100 ms
    BOOST_TEST(parse({"--max-open-feeds", "-1"}).exit_code != 0);
}

BOOST_AUTO_TEST_CASE(discovery_patterns_repeat_and_a_bad_regex_is_a_clear_error) {
    auto r = parse({"--db-pattern", "tenant-[0-9]+", "--db-pattern", "hq_.*", "--exclude-db-pattern", "hq_test.*",
                    "--discovery-interval", "1000", "--db", "extra"});
    BOOST_TEST(r.exit_code == 0);
    BOOST_TEST((r.cfg.db_patterns == std::vector<std::string>{"tenant-[0-9]+", "hq_.*"}));
    BOOST_TEST((r.cfg.exclude_db_patterns == std::vector<std::string>{"hq_test.*"}));
    BOOST_TEST(r.cfg.discovery_interval.count() == 1000);
    BOOST_TEST((r.cfg.databases == std::vector<std::string>{"extra"}));
    BOOST_TEST(parse({}).cfg.discovery_interval.count() == 10000);
    BOOST_TEST(bridge::describe(r.cfg).find("db-pattern = tenant-[0-9]+,hq_.*") != std::string::npos);

    std::ostringstream captured;
    auto* old = std::cerr.rdbuf(captured.rdbuf());
    auto bad = parse({"--db-pattern", "tenant-(["});
    auto bad_exclude = parse({"--db-pattern", "a.*", "--exclude-db-pattern", "*x"});
    std::cerr.rdbuf(old);
    BOOST_TEST(bad.exit_code != 0);
    BOOST_TEST(bad_exclude.exit_code != 0);
    BOOST_TEST(captured.str().find("--db-pattern") != std::string::npos, captured.str());
    BOOST_TEST(captured.str().find("'tenant-([' is not a valid ECMAScript regular expression") != std::string::npos,
               captured.str());
    BOOST_TEST(captured.str().find("--exclude-db-pattern") != std::string::npos, captured.str());
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

// Runs parse() with stdout and stderr captured (help and errors print there).
struct captured_parse {
    bridge::parse_result result;
    std::string out;
    std::string err;
};
captured_parse parse_captured(std::vector<char const*> args) {
    std::ostringstream out;
    std::ostringstream err;
    auto* old_out = std::cout.rdbuf(out.rdbuf());
    auto* old_err = std::cerr.rdbuf(err.rdbuf());
    auto r = parse(std::move(args));
    std::cout.rdbuf(old_out);
    std::cerr.rdbuf(old_err);
    return {std::move(r), out.str(), err.str()};
}

BOOST_AUTO_TEST_CASE(options_after_a_subcommand_work_as_before_it) {
    auto after = parse({"checkpoints", "list", "--checkpoint-dir", "/var/lib/x"});
    BOOST_TEST(after.exit_code == 0);
    BOOST_TEST((after.what == bridge::command::checkpoints));
    BOOST_TEST(after.cfg.checkpoint_dir == "/var/lib/x");
    BOOST_TEST((after.checkpoint_args == std::vector<std::string>{"list"}));

    auto before = parse({"--checkpoint-dir", "/var/lib/x", "checkpoints", "list"});
    BOOST_TEST(before.cfg.checkpoint_dir == "/var/lib/x");
    BOOST_TEST((before.checkpoint_args == after.checkpoint_args));

    auto set = parse({"checkpoints", "set", "--db", "d1", "--checkpoint-dir", "/c", "--seq", "\"4-g1AA\"",
                      "--source", "http://db:5984"});
    BOOST_TEST(set.exit_code == 0);
    BOOST_TEST(set.cfg.checkpoint_dir == "/c");
    BOOST_TEST((set.checkpoint_args ==
                std::vector<std::string>{"set", "--db", "d1", "--seq", "\"4-g1AA\"", "--source", "http://db:5984"}));

    auto del = parse({"checkpoints", "delete", "--db=d2", "--checkpoint-dir=/c"});
    BOOST_TEST(del.exit_code == 0);
    BOOST_TEST((del.checkpoint_args == std::vector<std::string>{"delete", "--db", "d2"}));

    auto tail = parse({"tail", "--topic", "case", "--kafka-brokers", "k:9092", "--max-records", "3"});
    BOOST_TEST(tail.exit_code == 0);
    BOOST_TEST((tail.what == bridge::command::tail));
    BOOST_TEST(tail.cfg.kafka_brokers == "k:9092");
    BOOST_TEST((tail.tail_topics == std::vector<std::string>{"case"}));
    BOOST_TEST(tail.tail_max_records == 3u);
    BOOST_TEST(!tail.tail_fetch_docs);

    auto fetch = parse({"tail", "--topic", "case", "--fetch-docs", "--couch-url", "http://c:5984", "--fetch-batch",
                        "7"});
    BOOST_TEST(fetch.exit_code == 0);
    BOOST_TEST(fetch.tail_fetch_docs);
    BOOST_TEST(fetch.tail_fetch_batch == 7u);
    BOOST_TEST(fetch.cfg.couch_url == "http://c:5984");
}

BOOST_AUTO_TEST_CASE(each_subcommand_has_its_help) {
    struct expectation {
        std::vector<char const*> args;
        char const* mentions;
    };
    std::vector<expectation> const cases{
        {{"checkpoints", "--help"}, "delete"},   {{"checkpoints", "list", "--help"}, "--source"},
        {{"checkpoints", "set", "--help"}, "--seq"}, {{"checkpoints", "delete", "--help"}, "--db"},
        {{"tail", "--help"}, "--fetch-docs"},     {{"--help"}, "--kafka-sasl-password"},
    };
    for (auto const& c : cases) {
        auto r = parse_captured(c.args);
        BOOST_TEST_CONTEXT(c.args.front() << " ... " << c.args.back()) {
            BOOST_TEST((r.result.what == bridge::command::help_or_version_shown));
            BOOST_TEST(r.result.exit_code == 0);
            BOOST_TEST(r.out.find(c.mentions) != std::string::npos, r.out);
        }
    }
}

BOOST_AUTO_TEST_CASE(subcommand_usage_errors_say_what_is_wrong) {
    auto no_verb = parse_captured({"checkpoints"});
    BOOST_TEST(no_verb.result.exit_code != 0);
    BOOST_TEST(!no_verb.err.empty());
    auto no_seq = parse_captured({"checkpoints", "set", "--db", "d"});
    BOOST_TEST(no_seq.result.exit_code != 0);
    BOOST_TEST(no_seq.err.find("--seq") != std::string::npos, no_seq.err);
    auto unknown = parse_captured({"checkpoints", "list", "--no-such-flag"});
    BOOST_TEST(unknown.result.exit_code != 0);
    BOOST_TEST(unknown.err.find("--no-such-flag") != std::string::npos, unknown.err);
    auto no_topic = parse_captured({"tail", "--kafka-brokers", "k:9092"});
    BOOST_TEST(no_topic.result.exit_code != 0);
    BOOST_TEST(no_topic.err.find("--topic") != std::string::npos, no_topic.err);
}

BOOST_AUTO_TEST_CASE(kafka_security_flags_map_to_librdkafka_properties_and_pass_through_wins) {
    auto ca = std::filesystem::temp_directory_path() / ("ckb-ca-" + std::to_string(::getpid()) + ".pem");
    std::ofstream(ca) << "not read by the parser\n";
    ::setenv("COUCH_BRIDGE_KAFKA_SASL_PASSWORD", "from-env", 1);
    auto r = parse({"--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", "SCRAM-SHA-512",
                    "--kafka-sasl-username", "bridge", "--kafka-ca-file", ca.c_str(), "--kafka-property",
                    "sasl.mechanism=PLAIN"});
    ::unsetenv("COUCH_BRIDGE_KAFKA_SASL_PASSWORD");
    BOOST_TEST(r.exit_code == 0);
    BOOST_TEST(r.cfg.kafka_security_protocol == "sasl_ssl"); // case-insensitive, normalised
    auto props = bridge::kafka_client_properties(r.cfg);
    std::vector<std::pair<std::string, std::string>> const expected{
        {"security.protocol", "sasl_ssl"}, {"sasl.mechanism", "SCRAM-SHA-512"}, {"sasl.username", "bridge"},
        {"sasl.password", "from-env"},     {"ssl.ca.location", ca.string()},    {"sasl.mechanism", "PLAIN"}};
    BOOST_TEST((props == expected)); // applied in order: the explicit property comes last and wins
    auto text = bridge::describe(r.cfg);
    BOOST_TEST(text.find("from-env") == std::string::npos);
    BOOST_TEST(text.find("kafka-sasl-password = ***") != std::string::npos);
    BOOST_TEST(bridge::kafka_client_properties(parse({}).cfg).empty()); // nothing set, librdkafka's defaults
    std::filesystem::remove(ca);
}

BOOST_AUTO_TEST_CASE(the_catch_up_producer_lingers_long_and_closes_batches_by_the_window) {
    using props = std::vector<std::pair<std::string, std::string>>;
    // Defaults: 250 ms, and batches of 20,000 / 200 records.
    auto const defaults = parse({});
    BOOST_TEST(defaults.cfg.kafka_catch_up_linger.count() == 250);
    BOOST_TEST((bridge::catch_up_lane_properties(defaults.cfg) ==
                props{{"batch.num.messages", "100"}, {"linger.ms", "250"}}));
    // The batch follows the window, at least one record and at most
    // librdkafka's default; an explicit batch.num.messages comes later and
    // wins, while an explicit linger.ms is the following producer's (the
    // lane's own comes last).
    auto const tuned = parse({"--max-in-flight", "1000", "--kafka-catch-up-linger-ms", "200", "--kafka-property",
                              "linger.ms=3", "--kafka-property", "batch.num.messages=7"});
    BOOST_TEST(tuned.exit_code == 0);
    BOOST_TEST((bridge::catch_up_lane_properties(tuned.cfg) == props{{"batch.num.messages", "5"},
                                                                      {"linger.ms", "3"},
                                                                      {"batch.num.messages", "7"},
                                                                      {"linger.ms", "200"}}));
    BOOST_TEST(bridge::catch_up_lane_properties(parse({"--max-in-flight", "50"}).cfg).front().second == "1");
    BOOST_TEST(bridge::catch_up_lane_properties(parse({"--max-in-flight", "9000000"}).cfg).front().second ==
               "10000");
}

BOOST_AUTO_TEST_CASE(bad_kafka_security_values_name_their_flag) {
    auto protocol = parse_captured({"--kafka-security-protocol", "tls"});
    BOOST_TEST(protocol.result.exit_code != 0);
    BOOST_TEST(protocol.err.find("--kafka-security-protocol") != std::string::npos, protocol.err);
    auto ca = parse_captured({"--kafka-ca-file", "/no/such/ca.pem"});
    BOOST_TEST(ca.result.exit_code != 0);
    BOOST_TEST(ca.err.find("--kafka-ca-file") != std::string::npos, ca.err);
}

BOOST_AUTO_TEST_SUITE_END()
