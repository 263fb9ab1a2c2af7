#include "metrics/registry.hpp"

#include <boost/test/unit_test.hpp>

BOOST_AUTO_TEST_SUITE(registry)

BOOST_AUTO_TEST_CASE(counter_with_labels_is_exposed_with_help_and_type) {
    metrics::registry r;
    auto& c = r.add_counter("couch_bridge_rows_read_total", "Rows read", {{"database", "a\"b"}});
    c.inc();
    c.inc(2);
    auto text = r.expose();
    BOOST_TEST(text == "# HELP couch_bridge_rows_read_total Rows read\n"
                       "# TYPE couch_bridge_rows_read_total counter\n"
                       "couch_bridge_rows_read_total{database=\"a\\\"b\"} 3\n");
}

BOOST_AUTO_TEST_CASE(histogram_buckets_are_cumulative) {
    metrics::registry r;
    auto& h = r.add_histogram("lat_seconds", "Latency", {0.1, 1.0});
    h.observe(0.05);
    h.observe(0.5);
    h.observe(5);
    auto text = r.expose();
    BOOST_TEST(text.find("lat_seconds_bucket{le=\"0.10000000000000001\"} 1\n") != std::string::npos);
    BOOST_TEST(text.find("lat_seconds_bucket{le=\"1\"} 2\n") != std::string::npos);
    BOOST_TEST(text.find("lat_seconds_bucket{le=\"+Inf\"} 3\n") != std::string::npos);
    BOOST_TEST(text.find("lat_seconds_count 3\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(same_name_other_type_is_rejected) {
    metrics::registry r;
    r.add_counter("x_total", "X");
    BOOST_CHECK_THROW(r.add_gauge("x_total", "X"), std::logic_error);
}

BOOST_AUTO_TEST_SUITE_END()
