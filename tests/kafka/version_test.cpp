#include "kafka/version.hpp"

#include <boost/test/unit_test.hpp>

BOOST_AUTO_TEST_SUITE(version)

BOOST_AUTO_TEST_CASE(linked_librdkafka_is_new_enough_for_mock_cluster_and_idempotence) {
    auto v = kafka::librdkafka_version();
    BOOST_TEST_MESSAGE("librdkafka " << v);
    auto major = std::stoi(v.substr(0, v.find('.')));
    BOOST_TEST(major >= 2);
}

BOOST_AUTO_TEST_SUITE_END()
