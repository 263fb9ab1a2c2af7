#include "metrics/process.hpp"

#include "tests/metrics/exposition_parser.hpp"

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <map>
#include <string>

namespace {

std::map<std::string, double> values_by_sample_name(metrics::registry const& r) {
    std::map<std::string, double> out;
    for (auto const& f : metrics_test::parse_with_prometheus_client(r.expose())) {
        for (auto const& s : f.samples) {
            if (s.labels.empty()) {
                out[s.name] = s.value;
            }
        }
    }
    return out;
}

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

} // namespace

BOOST_AUTO_TEST_SUITE(process)

BOOST_AUTO_TEST_CASE(process_metrics_are_present_and_plausible) {
    metrics::registry r;
    metrics::register_process_metrics(r);
    // Burn CPU until the kernel's tick-granular counter shows some (bounded
    // by a generous safety net, not a timing assertion).
    volatile double x = 0;
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (metrics::detail::read_process_snapshot().cpu_seconds < 0.02 && std::chrono::steady_clock::now() < give_up) {
        for (int i = 0; i < 100000; ++i) {
            x = x + 1;
        }
    }
    auto v = values_by_sample_name(r);
    for (char const* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                             "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                             "process_start_time_seconds"}) {
        BOOST_TEST_CONTEXT(name) {
            BOOST_TEST_REQUIRE(v.count(name) == 1u);
        }
    }
    BOOST_TEST(v["process_resident_memory_bytes"] > 0);
    BOOST_TEST(v["process_virtual_memory_bytes"] >= v["process_resident_memory_bytes"]);
    BOOST_TEST(v["process_open_fds"] >= 3); // stdin, stdout, stderr at least
    BOOST_TEST(v["process_max_fds"] >= v["process_open_fds"]);
    BOOST_TEST(v["process_cpu_seconds_total"] > 0);
    auto now = now_seconds();
    BOOST_TEST(v["process_start_time_seconds"] <= now + 5); // clock ticks round; allow a little
    BOOST_TEST(v["process_start_time_seconds"] > now - 3600);
    BOOST_TEST(v["couch_bridge_process_metrics_errors_total"] == 0);
}

BOOST_AUTO_TEST_CASE(cpu_seconds_never_decrease_across_scrapes) {
    metrics::registry r;
    metrics::register_process_metrics(r);
    auto first = values_by_sample_name(r)["process_cpu_seconds_total"];
    volatile double x = 0;
    for (int i = 0; i < 1000000; ++i) {
        x = x + 1;
    }
    auto second = values_by_sample_name(r)["process_cpu_seconds_total"];
    BOOST_TEST(second >= first);
    auto snap = metrics::detail::read_process_snapshot();
    BOOST_TEST(snap.cpu_seconds >= second - 0.01);
}

BOOST_AUTO_TEST_CASE(registering_twice_is_rejected) {
    metrics::registry r;
    metrics::register_process_metrics(r);
    BOOST_CHECK_THROW(metrics::register_process_metrics(r), std::logic_error);
}

BOOST_AUTO_TEST_CASE(build_info_is_a_gauge_of_one_with_the_given_labels) {
    metrics::registry r;
    metrics::register_build_info(r, {{"version", "0.1.0"}, {"librdkafka", "2.0.2"}, {"rocksdb", "7.8.3"}});
    auto families = metrics_test::parse_with_prometheus_client(r.expose());
    BOOST_TEST_REQUIRE(families.size() == 1u);
    BOOST_TEST(families[0].name == "couch_bridge_build_info");
    BOOST_TEST(families[0].type == "gauge");
    BOOST_TEST_REQUIRE(families[0].samples.size() == 1u);
    auto const& s = families[0].samples[0];
    BOOST_TEST(s.value == 1.0);
    BOOST_TEST(s.labels.at("version") == "0.1.0");
    BOOST_TEST(s.labels.at("librdkafka") == "2.0.2");
    BOOST_TEST(s.labels.at("rocksdb") == "7.8.3");
}

BOOST_AUTO_TEST_SUITE_END()
