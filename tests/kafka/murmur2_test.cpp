#include "kafka/murmur2.hpp"

#include <boost/test/unit_test.hpp>

BOOST_AUTO_TEST_SUITE(murmur2)

// Reference values computed with Apache Kafka 3.9.1's own
// org.apache.kafka.common.utils.Utils.murmur2 (a throwaway Java program run
// against the kafka-clients jar the test broker uses), not with librdkafka.
// They cover every tail length (0..3 extra bytes) and multi-block keys.
BOOST_AUTO_TEST_CASE(matches_the_java_client) {
    BOOST_TEST(kafka::java_murmur2("") == 275646681);
    BOOST_TEST(kafka::java_murmur2("a") == -1563381124);
    BOOST_TEST(kafka::java_murmur2("ab") == 316155434);
    BOOST_TEST(kafka::java_murmur2("abc") == 479470107);
    BOOST_TEST(kafka::java_murmur2("abcd") == -1323649548);
    BOOST_TEST(kafka::java_murmur2("21") == -973932308);
    BOOST_TEST(kafka::java_murmur2("foobar") == -790332482);
    BOOST_TEST(kafka::java_murmur2("doc-0") == -1299782194);
    BOOST_TEST(kafka::java_murmur2("a-little-bit-long-string") == -985981536);
    BOOST_TEST(kafka::java_murmur2("0c7c9e1e-ffee-4b44-b7b1-1b0c3a000001") == -136141980);
}

BOOST_AUTO_TEST_CASE(partition_is_positive_hash_modulo_count) {
    // (hash & 0x7fffffff) % 6, from the same Java run.
    BOOST_TEST(kafka::java_partition_for_key("", 6) == 3);
    BOOST_TEST(kafka::java_partition_for_key("a", 6) == 4);
    BOOST_TEST(kafka::java_partition_for_key("abcd", 6) == 2);
    BOOST_TEST(kafka::java_partition_for_key("21", 6) == 0);
    BOOST_TEST(kafka::java_partition_for_key("doc-0", 6) == 4);
    BOOST_TEST(kafka::java_partition_for_key("0c7c9e1e-ffee-4b44-b7b1-1b0c3a000001", 6) == 2);
}

BOOST_AUTO_TEST_SUITE_END()
