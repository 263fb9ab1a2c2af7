// The group member's lease: a member that hears nothing from its group
// coordinator stops acting on its partitions (lease_valid() false) before
// the coordinator could evict it, and acts again once the coordinator
// answers. The coordinator is librdkafka's mock cluster, whose broker is set
// down and up again; the statistics reader is checked on hand-written text
// in librdkafka's statistics shape.
#include "kafka/embedded_cluster.hpp"
#include "kafka/group_member.hpp"
#include "metrics/registry.hpp"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

using namespace std::chrono_literals;

namespace {

bool eventually(std::function<bool()> const& condition, std::chrono::seconds limit) {
    auto const deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) {
            return true;
        }
        std::this_thread::sleep_for(50ms);
    }
    return condition();
}

} // namespace

BOOST_AUTO_TEST_SUITE(group_lease)

BOOST_AUTO_TEST_CASE(reads_the_coordinator_silence_from_statistics) {
    using kafka::detail::coordinator_silence;
    auto const stats = R"({"name":"c#consumer-1","type":"consumer","brokers":{
        "127.0.0.1:9092/1":{"name":"127.0.0.1:9092/1","nodeid":1,"state":"UP","rxidle":10},
        "GroupCoordinator":{"name":"GroupCoordinator","nodeid":-1,"source":"logical","state":"DOWN","rxidle":2500000}}})";
    BOOST_TEST(coordinator_silence(stats).value() == std::chrono::microseconds(2500000));
    // No coordinator yet, nothing received yet, not statistics at all.
    BOOST_TEST(!coordinator_silence(R"({"brokers":{"h:1/1":{"rxidle":5}}})").has_value());
    BOOST_TEST(!coordinator_silence(R"({"brokers":{"GroupCoordinator":{"rxidle":-1}}})").has_value());
    BOOST_TEST(!coordinator_silence("not json").has_value());
    BOOST_TEST(!coordinator_silence(R"([1,2])").has_value());
}

BOOST_AUTO_TEST_CASE(a_member_cut_off_from_its_coordinator_holds_until_it_answers_again) {
    kafka::embedded_cluster cluster(1);
    cluster.create_topic("lease-assign", 4);
    metrics::registry registry;
    std::atomic<int> assigned{0};
    kafka::group_events events;
    events.assigned = [&assigned](std::vector<std::int32_t> const& parts) {
        assigned += static_cast<int>(parts.size());
    };
    events.revoked = [&assigned](std::vector<std::int32_t> const& parts, bool) {
        assigned -= static_cast<int>(parts.size());
    };
    kafka::group_member_config config;
    config.bootstrap_servers = cluster.bootstrap_servers();
    config.group = "lease-group";
    config.topic = "lease-assign";
    config.session_timeout = 6000ms;
    kafka::group_member member(config, events, registry);

    BOOST_REQUIRE_MESSAGE(eventually([&] { return assigned.load() == 4 && member.lease_valid(); }, 30s),
                          "the member never got its partitions and a lease");
    // Its thread runs on: only the coordinator's silence can end the lease.
    BOOST_REQUIRE_EQUAL(rd_kafka_mock_broker_set_down(cluster.mock(), 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    auto const cut = std::chrono::steady_clock::now();
    BOOST_TEST_REQUIRE(eventually([&] { return !member.lease_valid(); }, 10s));
    auto const held_after = std::chrono::steady_clock::now() - cut;
    BOOST_TEST_MESSAGE("lease ended " << std::chrono::duration_cast<std::chrono::milliseconds>(held_after).count()
                                      << " ms after the coordinator went down");
    // Before the coordinator's own eviction (the session timeout).
    BOOST_TEST(held_after < config.session_timeout);

    BOOST_REQUIRE_EQUAL(rd_kafka_mock_broker_set_up(cluster.mock(), 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    BOOST_TEST(eventually([&] { return member.lease_valid(); }, 60s));
}

BOOST_AUTO_TEST_SUITE_END()
