// The ConsumerProtocol Assignment decoder, on bytes written by hand from the
// protocol's definition (int16 version, int32 topic count, then per topic an
// int16-length string and an int32 count of int32 partitions, then user
// data as int32-length bytes).
#include "kafka/group_members.hpp"

#include <boost/test/unit_test.hpp>

#include <string>

namespace {

std::string bytes(std::initializer_list<int> b) {
    std::string s;
    for (int x : b) {
        s.push_back(static_cast<char>(x));
    }
    return s;
}

} // namespace

BOOST_AUTO_TEST_SUITE(group_members)

BOOST_AUTO_TEST_CASE(decodes_topics_and_partitions_and_ignores_user_data) {
    auto const a = bytes({0, 1,                    // version 1
                          0, 0, 0, 2,              // two topics
                          0, 1, 'a',               // "a"
                          0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 1, 0, // [3, 256]
                          0, 2, 'b', 'c',          // "bc"
                          0, 0, 0, 0,              // no partitions
                          0, 0, 0, 3, 9, 9, 9});   // user data (3 bytes)
    auto const got = kafka::parse_consumer_assignment(a);
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(got->size() == 2u);
    BOOST_TEST((got->at("a") == std::vector<std::int32_t>{3, 256}));
    BOOST_TEST(got->at("bc").empty());
}

BOOST_AUTO_TEST_CASE(an_empty_assignment_is_no_partitions) {
    auto const got = kafka::parse_consumer_assignment("");
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(got->empty());
}

BOOST_AUTO_TEST_CASE(malformed_bytes_are_refused_not_misread) {
    // Truncated inside a partition.
    BOOST_TEST(!kafka::parse_consumer_assignment(bytes({0, 0, 0, 0, 0, 1, 0, 1, 'a', 0, 0, 0, 1, 0, 0})).has_value());
    // A negative topic count.
    BOOST_TEST(!kafka::parse_consumer_assignment(bytes({0, 0, 0xff, 0xff, 0xff, 0xff})).has_value());
    // A string longer than what is left.
    BOOST_TEST(!kafka::parse_consumer_assignment(bytes({0, 0, 0, 0, 0, 1, 0, 9, 'a'})).has_value());
    // A partition count far beyond the bytes.
    BOOST_TEST(!kafka::parse_consumer_assignment(bytes({0, 0, 0, 0, 0, 1, 0, 1, 'a', 0x7f, 0, 0, 0})).has_value());
    // A negative partition.
    BOOST_TEST(
        !kafka::parse_consumer_assignment(bytes({0, 0, 0, 0, 0, 1, 0, 1, 'a', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}))
             .has_value());
}

BOOST_AUTO_TEST_SUITE_END()
