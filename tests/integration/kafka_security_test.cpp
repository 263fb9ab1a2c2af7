// Kafka security against a real broker (the kafka_secure_broker fixture: SSL
// and SASL_SSL/SCRAM-SHA-512 listeners, certificates made at start). The
// right settings publish; a wrong password, a wrong CA and a wrong protocol
// each give a clear error, a metric and /readyz 503.
#include "bridge_process.hpp"

#include "tests/support/couch_http.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <set>
#include <sstream>
#include <thread>

namespace json = boost::json;
using test_support::secure_kafka;

namespace {

using env_list = std::vector<std::pair<std::string, std::string>>;

std::vector<std::string> sasl_ssl_flags() {
    return {"--kafka-brokers",        secure_kafka("CKB_TEST_KAFKA_SASL_SSL_BROKERS"),
            "--kafka-security-protocol", "sasl_ssl",
            "--kafka-sasl-mechanism", "SCRAM-SHA-512",
            "--kafka-sasl-username",  secure_kafka("CKB_TEST_KAFKA_SASL_USER"),
            "--kafka-ca-file",        secure_kafka("CKB_TEST_KAFKA_CA_FILE")};
}

// A database with `n` CommCareCase documents, and a topic prefix of its own.
struct source {
    std::string db = test_support::unique_name("kafka-sec");
    std::string prefix = test_support::unique_name("ksec") + "-";
    explicit source(int n) {
        test_support::couch_create_db(test_support::couch_url(), db);
        for (int i = 0; i < n; ++i) {
            test_support::couch_put_doc(test_support::couch_url(), db, "doc-" + std::to_string(i),
                                        {{"doc_type", "CommCareCase"}, {"domain", "sec"}});
        }
    }
};

struct running_bridge {
    std::string dir = test_support::make_temp_dir("kafka-sec");
    unsigned short port = test_support::free_port();
    std::unique_ptr<test_support::child_process> process;

    running_bridge(source const& s, std::vector<std::string> const& kafka_flags, env_list const& env = {}) {
        std::vector<std::string> args{"--couch-url", test_support::couch_url(), "--db", s.db, "--checkpoint-dir",
                                      dir + "/ckpt", "--http-listen", "127.0.0.1:" + std::to_string(port),
                                      "--routing", "prefix:" + s.prefix, "--default-topic", s.prefix + "meta",
                                      "--checkpoint-interval", "200",
                                      // records stuck behind a refused connection need not be waited for
                                      "--shutdown-timeout", "1000"};
        args.insert(args.end(), kafka_flags.begin(), kafka_flags.end());
        process = std::make_unique<test_support::child_process>(integration::bridge_binary(), args, dir + ".log", env);
    }
    ~running_bridge() {
        if (process && process->running()) {
            process->signal(SIGTERM);
            process->wait_for_exit(std::chrono::seconds(30));
        }
    }
    test_support::http_result get(std::string const& path) const {
        return test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", path);
    }
    std::string log() const { return test_support::read_file(dir + ".log"); }
};

// Waits until /readyz answers `status` with `words` in its body (the
// pipeline's own "connecting" is a 503 too); returns the body.
std::string wait_readyz(running_bridge const& b, unsigned status, std::string const& words = {}) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    std::string last;
    while (std::chrono::steady_clock::now() < deadline) {
        try {
            auto r = b.get("/readyz");
            last = r.body;
            if (r.status == status && r.body.find(words) != std::string::npos) {
                return r.body;
            }
        } catch (std::exception const&) {
            // not listening yet
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    BOOST_FAIL("/readyz never answered " << status << "; last: " << last << "\nlog: " << b.dir << ".log");
    return {};
}

// The value of one sample line of /metrics (name with labels), or -1.
double metric(running_bridge const& b, std::string const& sample) {
    std::istringstream lines(b.get("/metrics").body);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind(sample + " ", 0) == 0) {
            return std::stod(line.substr(sample.size() + 1));
        }
    }
    return -1;
}

// Checks what a refused connection must show: /readyz 503 naming Kafka and
// librdkafka's words for the problem, the error counter by `reason` and the
// ready gauge, /status, and an error line in the log.
void expect_refused(running_bridge const& b, std::string const& reason, std::string const& words) {
    auto body = wait_readyz(b, 503, "kafka: cannot reach the cluster");
    BOOST_TEST(body.find(words) != std::string::npos, body);
    BOOST_TEST(metric(b, "couch_bridge_kafka_connection_errors_total{reason=\"" + reason + "\"}") >= 1);
    BOOST_TEST(metric(b, "couch_bridge_kafka_ready") == 0);
    auto status = json::parse(b.get("/status").body);
    BOOST_TEST(status.at("kafka").at("ready").as_bool() == false);
    BOOST_TEST(std::string(status.at("kafka").at("last_error").as_string()).find(words) != std::string::npos);
    auto log = b.log();
    auto line = log.find("error kafka producer: cannot reach the cluster: ");
    BOOST_TEST_REQUIRE(line != std::string::npos, log);
    BOOST_TEST(log.substr(line, log.find('\n', line) - line).find(words) != std::string::npos);
}

// Reads the records of `topic` back through the bridge's own `tail`, with
// the same security flags (so tail's consumer uses them too).
std::set<std::string> keys_read_back(std::vector<std::string> const& kafka_flags, std::string const& topic,
                                     std::size_t n, env_list const& env) {
    auto out = test_support::make_temp_dir("kafka-sec-tail") + "/out";
    std::vector<std::string> args{"tail", "--topic", topic, "--max-records", std::to_string(n), "--timeout-ms",
                                  "120000"};
    args.insert(args.end(), kafka_flags.begin(), kafka_flags.end());
    test_support::child_process tail(integration::bridge_binary(), args, out, env);
    auto code = tail.wait_for_exit(std::chrono::seconds(180));
    auto text = test_support::read_file(out);
    BOOST_TEST(code.value_or(-1) == 0, text);
    std::set<std::string> keys;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        boost::system::error_code ec;
        auto v = json::parse(line, ec);
        if (!ec && v.is_object()) {
            keys.insert(std::string(v.at("key").as_string()));
        }
    }
    return keys;
}

} // namespace

BOOST_AUTO_TEST_SUITE(kafka_security)

BOOST_AUTO_TEST_CASE(sasl_ssl_with_the_right_password_publishes) {
    source s(3);
    // The password through its environment twin, as operators are told to.
    env_list const env{{"COUCH_BRIDGE_KAFKA_SASL_PASSWORD", secure_kafka("CKB_TEST_KAFKA_SASL_PASSWORD")}};
    running_bridge b(s, sasl_ssl_flags(), env);
    auto keys = keys_read_back(sasl_ssl_flags(), s.prefix + "CommCareCase", 3, env);
    BOOST_TEST((keys == std::set<std::string>{"doc-0", "doc-1", "doc-2"}));
    wait_readyz(b, 200);
    BOOST_TEST(metric(b, "couch_bridge_kafka_ready") == 1);
    BOOST_TEST(metric(b, "couch_bridge_records_published_total{database=\"" + s.db + "\",topic=\"" + s.prefix +
                             "CommCareCase\"}") == 3);
    BOOST_TEST(json::parse(b.get("/status").body).at("kafka").at("ready").as_bool() == true);
}

BOOST_AUTO_TEST_CASE(ssl_with_the_right_ca_publishes) {
    source s(2);
    std::vector<std::string> const flags{"--kafka-brokers", secure_kafka("CKB_TEST_KAFKA_SSL_BROKERS"),
                                         "--kafka-security-protocol", "SSL", "--kafka-ca-file",
                                         secure_kafka("CKB_TEST_KAFKA_CA_FILE")};
    running_bridge b(s, flags);
    auto keys = keys_read_back(flags, s.prefix + "CommCareCase", 2, {});
    BOOST_TEST((keys == std::set<std::string>{"doc-0", "doc-1"}));
    wait_readyz(b, 200);
}

BOOST_AUTO_TEST_CASE(a_wrong_password_is_an_authentication_error) {
    source s(1);
    auto flags = sasl_ssl_flags();
    flags.insert(flags.end(), {"--kafka-sasl-password", "not-the-password"});
    running_bridge b(s, flags);
    expect_refused(b, "_AUTHENTICATION", "Authentication failed");
}

BOOST_AUTO_TEST_CASE(a_wrong_ca_is_a_tls_error) {
    source s(1);
    running_bridge b(s, {"--kafka-brokers", secure_kafka("CKB_TEST_KAFKA_SSL_BROKERS"), "--kafka-security-protocol",
                         "ssl", "--kafka-ca-file", secure_kafka("CKB_TEST_KAFKA_OTHER_CA_FILE")});
    expect_refused(b, "_SSL", "certificate verify failed");
}

BOOST_AUTO_TEST_CASE(a_wrong_protocol_says_so) {
    source s(1);
    // Plaintext to the TLS listener.
    running_bridge b(s, {"--kafka-brokers", secure_kafka("CKB_TEST_KAFKA_SSL_BROKERS"), "--kafka-security-protocol",
                         "plaintext"});
    expect_refused(b, "_ALL_BROKERS_DOWN", "security.protocol");
}

BOOST_AUTO_TEST_CASE(an_explicit_kafka_property_wins_over_the_convenience_flag) {
    source s(1);
    // The flag names the unrelated CA; the pass-through property the right one.
    auto flags = sasl_ssl_flags();
    flags[flags.size() - 1] = secure_kafka("CKB_TEST_KAFKA_OTHER_CA_FILE");
    flags.insert(flags.end(), {"--kafka-property", "ssl.ca.location=" + secure_kafka("CKB_TEST_KAFKA_CA_FILE")});
    env_list const env{{"COUCH_BRIDGE_KAFKA_SASL_PASSWORD", secure_kafka("CKB_TEST_KAFKA_SASL_PASSWORD")}};
    running_bridge b(s, flags, env);
    auto keys = keys_read_back(flags, s.prefix + "CommCareCase", 1, env);
    BOOST_TEST((keys == std::set<std::string>{"doc-0"}));
}

BOOST_AUTO_TEST_SUITE_END()
