#include "checkpoint/version.hpp"

#include <boost/test/unit_test.hpp>

BOOST_AUTO_TEST_SUITE(version)

BOOST_AUTO_TEST_CASE(linked_rocksdb_reports_a_version) {
    auto v = checkpoint::rocksdb_version();
    BOOST_TEST_MESSAGE("RocksDB " << v);
    BOOST_TEST(std::stoi(v.substr(0, v.find('.'))) >= 6);
}

BOOST_AUTO_TEST_SUITE_END()
