#include "kafka/producer.hpp"
#include "metrics/registry.hpp"
#include "kafka_test_util.hpp"
#include "kafka/murmur2.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <map>
#include <set>

namespace asio = boost::asio;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_SUITE(real_broker)

// Against a real Apache Kafka broker: the idempotent producer's records land
// in the partition the Java client would choose for their key (checked with
// an independent murmur2), and come back intact.
BOOST_AUTO_TEST_CASE(keyed_records_land_where_the_java_partitioner_puts_them) {
    auto brokers = test_support::kafka_brokers();
    auto topic = test_support::unique_name("ckb-kafka-placement");
    constexpr int partitions = 6;
    metrics::registry registry;
    asio::io_context ioc;
    kafka::producer p(ioc.get_executor(), {brokers, {}, {}}, registry);

    BOOST_REQUIRE(p.missing_topics({topic}, 30s) == std::vector<std::string>{topic});
    auto ec = p.create_topics({topic}, partitions, 1, 30s);
    BOOST_REQUIRE_MESSAGE(!ec, ec.message());
    // Creating it again is fine.
    ec = p.create_topics({topic}, partitions, 1, 30s);
    BOOST_TEST(!ec, ec.message());
    BOOST_TEST(p.missing_topics({topic}, 30s).empty());

    constexpr int n = 120;
    std::vector<kafka::delivery_report> reports(n);
    int completed = 0;
    for (int i = 0; i < n; ++i) {
        // Keys shaped like CouchDB ids, of every length modulo 4.
        std::string key = "doc-" + std::string(static_cast<std::size_t>(i % 4), 'x') + std::to_string(i * 7919);
        auto refused = p.try_produce({topic, key, "value-" + std::to_string(i), {{"database", "db"}}},
                                     ioc.get_executor(), [&, i](kafka::delivery_report const& r) {
                                         reports[static_cast<std::size_t>(i)] = r;
                                         if (++completed == n) {
                                             ioc.stop();
                                         }
                                     });
        BOOST_REQUIRE(!refused);
    }
    BOOST_REQUIRE(kafka_test::run_until_stopped(ioc, 1));
    BOOST_TEST(p.flush(10s) == 0u);

    auto got = kafka_test::consume(brokers, topic, partitions, n);
    BOOST_REQUIRE(got.size() == static_cast<std::size_t>(n));
    std::map<std::string, int> seen;
    std::set<int> partitions_used;
    for (auto const& c : got) {
        BOOST_TEST_CONTEXT("key " << c.key) {
            BOOST_TEST(c.partition == kafka::java_partition_for_key(c.key, partitions));
            BOOST_TEST(c.value.rfind("value-", 0) == 0u);
            auto i = std::stoi(c.value.substr(6));
            BOOST_TEST(!reports[static_cast<std::size_t>(i)].ec);
            BOOST_TEST(reports[static_cast<std::size_t>(i)].partition == c.partition);
            BOOST_TEST(reports[static_cast<std::size_t>(i)].offset == c.offset);
            BOOST_REQUIRE(c.headers.size() == 1u);
            BOOST_TEST(c.headers[0].second == "db");
            ++seen[c.key];
            partitions_used.insert(c.partition);
        }
    }
    // Exactly once each (idempotent producer, no retries needed here), and
    // the keys spread over several partitions, so placement was really tested.
    BOOST_TEST(seen.size() == static_cast<std::size_t>(n));
    BOOST_TEST(partitions_used.size() > 3u);
}

BOOST_AUTO_TEST_CASE(missing_topics_reports_a_topic_that_does_not_exist) {
    metrics::registry registry;
    asio::io_context ioc;
    kafka::producer p(ioc.get_executor(), {test_support::kafka_brokers(), {}, {}}, registry);
    auto absent = test_support::unique_name("ckb-kafka-absent");
    auto missing = p.missing_topics({absent}, 30s);
    BOOST_REQUIRE(missing.size() == 1u);
    BOOST_TEST(missing.front() == absent);
}

BOOST_AUTO_TEST_SUITE_END()
