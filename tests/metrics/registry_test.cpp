#include "metrics/registry.hpp"

#include "tests/metrics/exposition_parser.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

std::size_t count_of(std::string const& text, std::string const& needle) {
    std::size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
        ++n;
    }
    return n;
}

} // namespace

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

BOOST_AUTO_TEST_CASE(label_values_and_help_are_escaped) {
    metrics::registry r;
    r.add_gauge("g", "line one\nback\\slash \"quoted\"", {{"v", "back\\slash \"q\"\nnext"}}).set(1);
    BOOST_TEST(r.expose() == "# HELP g line one\\nback\\\\slash \"quoted\"\n"
                             "# TYPE g gauge\n"
                             "g{v=\"back\\\\slash \\\"q\\\"\\nnext\"} 1\n");
}

BOOST_AUTO_TEST_CASE(help_and_type_appear_once_per_family) {
    metrics::registry r;
    r.add_counter("couch_bridge_rows_total", "Rows", {{"database", "a"}}).inc();
    r.add_counter("couch_bridge_rows_total", "Rows", {{"database", "b"}}).inc(2);
    r.add_counter("couch_bridge_rows_total", "Rows", {{"database", "a"}}).inc(); // same series again
    auto text = r.expose();
    BOOST_TEST(count_of(text, "# HELP couch_bridge_rows_total ") == 1u);
    BOOST_TEST(count_of(text, "# TYPE couch_bridge_rows_total counter") == 1u);
    BOOST_TEST(text.find("couch_bridge_rows_total{database=\"a\"} 2\n") != std::string::npos);
    BOOST_TEST(text.find("couch_bridge_rows_total{database=\"b\"} 2\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(histogram_buckets_are_cumulative_with_sum_count_and_inf) {
    metrics::registry r;
    auto& h = r.add_histogram("lat_seconds", "Latency", {0.1, 1.0}, {{"database", "d"}});
    h.observe(0.05);
    h.observe(0.1); // le is inclusive
    h.observe(0.5);
    h.observe(5);
    auto sum = metrics::format_value(0.05 + 0.1 + 0.5 + 5.0); // same order of additions
    BOOST_TEST(r.expose() == "# HELP lat_seconds Latency\n"
                             "# TYPE lat_seconds histogram\n"
                             "lat_seconds_bucket{database=\"d\",le=\"0.1\"} 2\n"
                             "lat_seconds_bucket{database=\"d\",le=\"1\"} 3\n"
                             "lat_seconds_bucket{database=\"d\",le=\"+Inf\"} 4\n"
                             "lat_seconds_sum{database=\"d\"} " + sum + "\n"
                             "lat_seconds_count{database=\"d\"} 4\n");
}

BOOST_AUTO_TEST_CASE(nan_observation_counts_only_in_inf_bucket) {
    metrics::registry r;
    auto& h = r.add_histogram("h_seconds", "H", {1.0});
    h.observe(std::numeric_limits<double>::quiet_NaN());
    auto counts = h.cumulative_counts();
    BOOST_TEST(counts.at(0) == 0u);
    BOOST_TEST(counts.at(1) == 1u);
    BOOST_TEST(std::isnan(h.sum()));
    BOOST_TEST(r.expose().find("h_seconds_sum NaN\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(values_are_formatted_as_the_format_wants) {
    BOOST_TEST(metrics::format_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
    BOOST_TEST(metrics::format_value(std::numeric_limits<double>::infinity()) == "+Inf");
    BOOST_TEST(metrics::format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
    BOOST_TEST(metrics::format_value(0.0) == "0");
    BOOST_TEST(metrics::format_value(-0.0) == "0");
    BOOST_TEST(metrics::format_value(42.0) == "42");
    BOOST_TEST(metrics::format_value(-3.0) == "-3");
    BOOST_TEST(metrics::format_value(0.1) == "0.1");
    BOOST_TEST(metrics::format_value(1.5e300) == "1.5e+300");
    // Round-trips exactly.
    double odd = 0.1 + 0.2;
    BOOST_TEST(std::stod(metrics::format_value(odd)) == odd);
}

BOOST_AUTO_TEST_CASE(counter_ignores_decrements) {
    metrics::counter c;
    c.inc(2);
    c.inc(-1);
    c.inc(std::numeric_limits<double>::quiet_NaN());
    BOOST_TEST(c.value() == 2.0);
}

BOOST_AUTO_TEST_CASE(same_name_other_type_is_rejected) {
    metrics::registry r;
    r.add_counter("x_total", "X");
    BOOST_CHECK_THROW(r.add_gauge("x_total", "X"), std::logic_error);
    BOOST_CHECK_THROW(r.add_counter("x_total", "other help"), std::logic_error);
}

BOOST_AUTO_TEST_CASE(invalid_names_and_label_sets_are_rejected) {
    metrics::registry r;
    BOOST_CHECK_THROW(r.add_counter("1abc", "X"), std::logic_error);
    BOOST_CHECK_THROW(r.add_counter("a-b", "X"), std::logic_error);
    BOOST_CHECK_THROW(r.add_counter("", "X"), std::logic_error);
    BOOST_CHECK_THROW(r.add_counter("ok_total", "X", {{"bad-label", "v"}}), std::logic_error);
    BOOST_CHECK_THROW(r.add_counter("ok_total", "X", {{"__reserved", "v"}}), std::logic_error);
    BOOST_CHECK_THROW(r.add_counter("ok_total", "X", {{"a", "1"}, {"a", "2"}}), std::logic_error);
    BOOST_CHECK_THROW(r.add_histogram("h", "H", {1.0}, {{"le", "x"}}), std::logic_error);
    BOOST_CHECK_THROW(r.add_histogram("h2", "H", {2.0, 1.0}), std::logic_error);
    BOOST_CHECK_THROW(r.add_histogram("h3", "H", {1.0, std::numeric_limits<double>::infinity()}), std::logic_error);
    r.add_counter("fam_total", "F", {{"database", "a"}});
    BOOST_CHECK_THROW(r.add_counter("fam_total", "F", {{"topic", "a"}}), std::logic_error);
    BOOST_CHECK_THROW(r.add_counter("fam_total", "F"), std::logic_error);
    BOOST_CHECK_NO_THROW(r.add_counter("ns:name_total", "colons are allowed in metric names"));
    // A rejected registration leaves nothing half-made behind.
    auto text = r.expose();
    BOOST_TEST(text.find("1abc") == std::string::npos);
    BOOST_TEST(text.find("bad-label") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(concurrent_updates_sum_exactly) {
    metrics::registry r;
    auto& c = r.add_counter("c_total", "C");
    auto& g = r.add_gauge("g", "G");
    auto& h = r.add_histogram("h_seconds", "H", {0.5});
    constexpr int threads = 4;
    constexpr int per_thread = 100000;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                c.inc();
                g.inc(t % 2 == 0 ? 1.0 : -1.0);
                h.observe(i % 2 == 0 ? 0.25 : 1.0);
                if (i % 10000 == 0) {
                    (void)r.expose(); // scraping while updating is allowed
                }
            }
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    BOOST_TEST(c.value() == double(threads) * per_thread);
    BOOST_TEST(g.value() == 0.0);
    BOOST_TEST(h.count() == std::uint64_t(threads) * per_thread);
    BOOST_TEST(h.cumulative_counts().at(0) == std::uint64_t(threads) * per_thread / 2);
    BOOST_TEST(h.sum() == threads * (per_thread / 2 * 0.25 + per_thread / 2 * 1.0));
}

BOOST_AUTO_TEST_CASE(collectors_run_before_each_expose) {
    metrics::registry r;
    auto& g = r.add_gauge("queue_depth", "Q");
    int calls = 0;
    r.on_collect([&] { g.set(++calls); });
    BOOST_TEST(r.expose().find("queue_depth 1\n") != std::string::npos);
    BOOST_TEST(r.expose().find("queue_depth 2\n") != std::string::npos);
}

// The whole exposition, read back by prometheus_client: every family and
// every sample must come back with the same name, labels and value.
BOOST_AUTO_TEST_CASE(independent_parser_reads_back_every_sample) {
    metrics::registry r;
    std::string nasty = "back\\slash \"quote\"\nnewline {brace} =,";
    r.add_counter("couch_bridge_rows_read_total", "Rows read from _changes.", {{"database", "cases"}}).inc(41);
    r.add_counter("couch_bridge_rows_read_total", "Rows read from _changes.", {{"database", nasty}}).inc(2);
    r.add_gauge("couch_bridge_in_flight", "Records in flight.\nSecond line \\ with backslash", {})
        .set(-2.5);
    r.add_gauge("couch_bridge_weird", "Special values.", {{"kind", "nan"}})
        .set(std::numeric_limits<double>::quiet_NaN());
    r.add_gauge("couch_bridge_weird", "Special values.", {{"kind", "inf"}})
        .set(std::numeric_limits<double>::infinity());
    r.add_gauge("couch_bridge_weird", "Special values.", {{"kind", "small"}}).set(1e-9);
    auto& h = r.add_histogram("couch_bridge_produce_latency_seconds", "Produce to ack.", {0.001, 0.01, 0.1, 1},
                              {{"database", "cases"}, {"topic", "case"}});
    for (double v : {0.0005, 0.005, 0.005, 0.05, 0.5, 5.0}) {
        h.observe(v);
    }
    r.add_histogram("couch_bridge_produce_latency_seconds", "Produce to ack.", {0.001, 0.01, 0.1, 1},
                    {{"database", "forms"}, {"topic", "form"}}); // never observed

    using labels_map = std::map<std::string, std::string>;
    struct expected_sample {
        std::string name;
        labels_map labels;
        double value;
    };
    std::vector<expected_sample> expected = {
        {"couch_bridge_rows_read_total", {{"database", "cases"}}, 41},
        {"couch_bridge_rows_read_total", {{"database", nasty}}, 2},
        {"couch_bridge_in_flight", {}, -2.5},
        {"couch_bridge_weird", {{"kind", "nan"}}, std::numeric_limits<double>::quiet_NaN()},
        {"couch_bridge_weird", {{"kind", "inf"}}, std::numeric_limits<double>::infinity()},
        {"couch_bridge_weird", {{"kind", "small"}}, 1e-9},
    };
    auto hist = [&](labels_map base, std::vector<double> cumulative, double sum) {
        std::vector<std::string> les = {"0.001", "0.01", "0.1", "1", "+Inf"};
        for (std::size_t i = 0; i < les.size(); ++i) {
            auto l = base;
            l["le"] = les[i];
            expected.push_back({"couch_bridge_produce_latency_seconds_bucket", l, cumulative[i]});
        }
        expected.push_back({"couch_bridge_produce_latency_seconds_sum", base, sum});
        expected.push_back({"couch_bridge_produce_latency_seconds_count", base, cumulative.back()});
    };
    hist({{"database", "cases"}, {"topic", "case"}}, {1, 3, 4, 5, 6}, h.sum());
    hist({{"database", "forms"}, {"topic", "form"}}, {0, 0, 0, 0, 0}, 0);

    auto families = metrics_test::parse_with_prometheus_client(r.expose());

    std::map<std::string, std::tuple<std::string, std::string>> want_families = {
        {"couch_bridge_rows_read", {"counter", "Rows read from _changes."}},
        {"couch_bridge_in_flight", {"gauge", "Records in flight.\nSecond line \\ with backslash"}},
        {"couch_bridge_weird", {"gauge", "Special values."}},
        {"couch_bridge_produce_latency_seconds", {"histogram", "Produce to ack."}},
    };
    BOOST_TEST(families.size() == want_families.size());
    std::vector<metrics_test::parsed_sample> got;
    for (auto const& f : families) {
        BOOST_TEST_CONTEXT("family " << f.name) {
            auto it = want_families.find(f.name);
            BOOST_TEST_REQUIRE((it != want_families.end()));
            BOOST_TEST(f.type == std::get<0>(it->second));
            BOOST_TEST(f.help == std::get<1>(it->second));
        }
        got.insert(got.end(), f.samples.begin(), f.samples.end());
    }
    BOOST_TEST(got.size() == expected.size());
    for (auto const& e : expected) {
        BOOST_TEST_CONTEXT("sample " << e.name << " " << e.labels.size() << " labels") {
            bool found = false;
            for (auto const& g : got) {
                if (g.name == e.name && g.labels == e.labels) {
                    found = true;
                    if (std::isnan(e.value)) {
                        BOOST_TEST(std::isnan(g.value));
                    } else {
                        BOOST_TEST(g.value == e.value);
                    }
                }
            }
            BOOST_TEST(found);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
