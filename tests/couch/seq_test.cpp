#include "couch/seq.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

BOOST_AUTO_TEST_SUITE(seq)

BOOST_AUTO_TEST_CASE(string_seq_is_kept_byte_exact_and_sent_without_quotes) {
    auto s = couch::seq::from_json(boost::json::parse(R"("4-g1AAAACLeJzLYWBgYMpgTmHgz8tPSTV0MDQy1zMAQsMckEQiQ1L9_")"));
    BOOST_TEST(s.raw_json() == R"("4-g1AAAACLeJzLYWBgYMpgTmHgz8tPSTV0MDQy1zMAQsMckEQiQ1L9_")");
    BOOST_TEST(s.to_query_param() == "4-g1AAAACLeJzLYWBgYMpgTmHgz8tPSTV0MDQy1zMAQsMckEQiQ1L9_");
}

BOOST_AUTO_TEST_CASE(integer_seq_round_trips) {
    auto s = couch::seq::from_json(boost::json::parse("42"));
    BOOST_TEST(s.raw_json() == "42");
    BOOST_TEST(s.to_query_param() == "42");
    BOOST_TEST(couch::since::from(s).to_query_param() == "42");
    BOOST_TEST(couch::since::now().to_query_param() == "now");
    BOOST_TEST(couch::since::beginning().to_query_param() == "0");
}

BOOST_AUTO_TEST_CASE(non_scalar_seq_is_rejected) {
    BOOST_CHECK_THROW(couch::seq::from_json(boost::json::parse("[1,2]")), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
