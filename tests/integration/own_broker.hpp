#pragma once

// A real broker of a test's own, started with the fixture's script in its
// own state dir: a test may freeze it (a Kafka outage) without touching the
// broker the other tests share.

#include "helpers.hpp"

#include <boost/test/unit_test.hpp>

#include <csignal>
#include <cstdlib>
#include <string>

namespace integration {

class own_broker {
public:
    own_broker() : state_(test_support::make_temp_dir("own-broker")) {
        script_ = std::string(std::getenv("CKB_SOURCE_DIR")) + "/tests/servers/kafka-broker.sh";
        BOOST_REQUIRE_MESSAGE(run("start"), "own broker: " << read_log(state_ + "/start.log"));
        auto env = test_support::read_file(state_ + "/kafka.env");
        brokers_ = env.substr(env.find('=') + 1);
        while (!brokers_.empty() && (brokers_.back() == '\n' || brokers_.back() == '\r')) {
            brokers_.pop_back();
        }
    }
    ~own_broker() {
        (void)signal(SIGCONT);
        run("stop");
    }
    own_broker(own_broker const&) = delete;
    own_broker& operator=(own_broker const&) = delete;

    std::string const& brokers() const { return brokers_; }
    // Freezes the broker (SIGSTOP) at once: its connections stay open and
    // nothing answers, as in a network partition (until it is stopped).
    void freeze() { BOOST_REQUIRE(signal(SIGSTOP)); }

private:
    bool signal(int sig) {
        try {
            return ::kill(std::stoi(test_support::read_file(state_ + "/kafka.pid")), sig) == 0;
        } catch (std::exception const&) {
            return false; // not started
        }
    }
    bool run(std::string const& action) {
        // An empty CKB_TEST_KAFKA_BROKERS: the script starts a broker even
        // when the tests were pointed at an external one.
        test_support::child_process p("/bin/bash", {script_, action, state_}, state_ + "/" + action + ".log",
                                      {{"CKB_TEST_KAFKA_BROKERS", ""}});
        return p.wait_for_exit(std::chrono::seconds(300)).value_or(-1) == 0;
    }

    std::string state_, script_, brokers_;
};

} // namespace integration
