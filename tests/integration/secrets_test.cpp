// Credentials never appear in logs, /metrics, /status, /readyz or
// --print-config, whether the password comes in the URL, by flag or from the
// environment: the CouchDB password, and the Kafka SASL password against the
// real SASL_SSL broker (kafka_secure_broker fixture), right and wrong.
#include "bridge_process.hpp"

#include "tests/support/couch_http.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <csignal>
#include <thread>

namespace {

std::string const password = "Pa55-w0rd-XYZZY";

std::string with_userinfo(std::string const& url) {
    auto p = url.find("://") + 3;
    return url.substr(0, p) + "bridge:" + password + "@" + url.substr(p);
}

std::string get(unsigned short port, std::string const& path) {
    auto r = test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", path);
    return r.body;
}

// Runs the bridge on a database that does not exist (so errors naming the
// server are logged and shown), collects everything it exposes once /status
// shows that error and /readyz contains `must_see`, stops it. Kafka is the
// embedded cluster unless `args` name brokers.
std::string everything_exposed(std::vector<std::string> const& args,
                               std::vector<std::pair<std::string, std::string>> const& env,
                               std::string const& must_see = {}) {
    auto dir = test_support::make_temp_dir("secrets");
    auto port = test_support::free_port();
    std::vector<std::string> all{"--db", test_support::unique_name("missing-db"), "--checkpoint-dir", dir,
                                 "--http-listen", "127.0.0.1:" + std::to_string(port), "--log-level", "trace"};
    if (std::find(args.begin(), args.end(), "--kafka-brokers") == args.end()) {
        all.insert(all.end(), {"--kafka-brokers", "embedded"});
    }
    all.insert(all.end(), args.begin(), args.end());
    test_support::child_process bridge(integration::bridge_binary(), all, dir + ".log", env);
    std::string seen;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    // Until /status shows the missing database's error, keep looking.
    while (std::chrono::steady_clock::now() < deadline) {
        try {
            auto status = get(port, "/status");
            auto readyz = get(port, "/readyz");
            if (status.find("\"last_error\":\"") != std::string::npos &&
                readyz.find(must_see) != std::string::npos) {
                seen += status;
                seen += get(port, "/metrics");
                seen += readyz;
                break;
            }
        } catch (std::exception const&) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    BOOST_TEST_REQUIRE(!seen.empty(), "the bridge never reported the missing database; log: " << dir << ".log");
    bridge.signal(SIGTERM);
    bridge.wait_for_exit(std::chrono::seconds(30));
    seen += test_support::read_file(dir + ".log");

    test_support::child_process print(integration::bridge_binary(), [&] {
        auto a = all;
        a.push_back("--print-config");
        return a;
    }(), dir + ".print", env);
    print.wait_for_exit(std::chrono::seconds(30));
    seen += test_support::read_file(dir + ".print");
    return seen;
}

} // namespace

BOOST_AUTO_TEST_SUITE(secrets)

BOOST_AUTO_TEST_CASE(password_in_url_is_never_shown) {
    auto seen = everything_exposed({"--couch-url", with_userinfo(test_support::couch_url())}, {});
    BOOST_TEST(seen.find("missing-db") != std::string::npos); // we did look at real output
    BOOST_TEST(seen.find(password) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(password_by_flag_is_never_shown) {
    auto seen = everything_exposed(
        {"--couch-url", test_support::couch_url(), "--couch-user", "bridge", "--couch-password", password}, {});
    BOOST_TEST(seen.find("missing-db") != std::string::npos);
    BOOST_TEST(seen.find(password) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(password_from_environment_is_never_shown) {
    auto seen = everything_exposed({"--couch-url", test_support::couch_url()},
                                   {{"COUCH_BRIDGE_COUCH_USER", "bridge"}, {"COUCH_BRIDGE_COUCH_PASSWORD", password}});
    BOOST_TEST(seen.find("missing-db") != std::string::npos);
    BOOST_TEST(seen.find(password) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(kafka_sasl_password_by_flag_is_never_shown) {
    auto const kafka_password = test_support::secure_kafka("CKB_TEST_KAFKA_SASL_PASSWORD");
    auto seen = everything_exposed(
        {"--couch-url", test_support::couch_url(), "--kafka-brokers",
         test_support::secure_kafka("CKB_TEST_KAFKA_SASL_SSL_BROKERS"), "--kafka-security-protocol", "sasl_ssl",
         "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username",
         test_support::secure_kafka("CKB_TEST_KAFKA_SASL_USER"), "--kafka-sasl-password", kafka_password,
         "--kafka-ca-file", test_support::secure_kafka("CKB_TEST_KAFKA_CA_FILE")},
        {});
    BOOST_TEST(seen.find("missing-db") != std::string::npos);
    BOOST_TEST(seen.find("kafka-sasl-password = ***") != std::string::npos); // --print-config was looked at
    BOOST_TEST(seen.find(kafka_password) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(wrong_kafka_sasl_password_from_environment_is_never_shown) {
    std::string const wrong = "Wr0ng-kafka-PW-QUUXX";
    auto seen = everything_exposed(
        {"--couch-url", test_support::couch_url(), "--kafka-brokers",
         test_support::secure_kafka("CKB_TEST_KAFKA_SASL_SSL_BROKERS"), "--kafka-security-protocol", "sasl_ssl",
         "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username",
         test_support::secure_kafka("CKB_TEST_KAFKA_SASL_USER"), "--kafka-ca-file",
         test_support::secure_kafka("CKB_TEST_KAFKA_CA_FILE")},
        {{"COUCH_BRIDGE_KAFKA_SASL_PASSWORD", wrong}}, "Authentication failed");
    BOOST_TEST(seen.find("_AUTHENTICATION") != std::string::npos); // the failure was shown
    BOOST_TEST(seen.find(wrong) == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
