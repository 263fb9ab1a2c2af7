#include "kafka/embedded_cluster.hpp"
#include "kafka/error.hpp"
#include "kafka/producer.hpp"
#include "metrics/registry.hpp"
#include "kafka_test_util.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <librdkafka/rdkafka_mock.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// What one completion saw; written by the completion, read after run() returned.
struct outcome {
    int calls = 0;
    bool on_expected_executor = false;
    kafka::delivery_report report;
};

struct fixture {
    kafka::embedded_cluster cluster{1};
    metrics::registry registry;
    asio::io_context ioc;
    std::string topic = test_support::unique_name("ckb-kafka-unit");

    kafka::producer_config config(std::vector<std::pair<std::string, std::string>> props = {}) {
        return {cluster.bootstrap_servers(), std::move(props), {}};
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(producer)

// Strands of both kinds: a pipeline's (of any_io_executor) is kept by the
// producer as a strand, any other executor type-erased.
using strand_inner_executors = boost::mpl::list<asio::io_context::executor_type, asio::any_io_executor>;

BOOST_FIXTURE_TEST_CASE_TEMPLATE(completions_arrive_once_on_the_executor_given_at_produce_time, inner,
                                 strand_inner_executors, fixture) {
    cluster.create_topic(topic, 3);
    kafka::producer p(ioc.get_executor(), config(), registry);
    constexpr int per_strand = 300;
    std::vector<outcome> outcomes(2 * per_strand);
    std::mutex mutex;
    std::atomic<int> completed{0};
    std::atomic<int> refused{0};
    auto strand_a = asio::strand<inner>(ioc.get_executor());
    auto strand_b = asio::strand<inner>(ioc.get_executor());
    auto produce_from = [&](auto strand, int first) {
        asio::post(strand, [&, strand, first] {
            for (int i = first; i < first + per_strand; ++i) {
                auto ec = p.try_produce({topic, "doc-" + std::to_string(i), "value", {}}, strand,
                                        [&, strand, i](kafka::delivery_report const& r) {
                                            {
                                                std::lock_guard lock(mutex);
                                                auto& o = outcomes[static_cast<std::size_t>(i)];
                                                ++o.calls;
                                                o.on_expected_executor = strand.running_in_this_thread();
                                                o.report = r;
                                            }
                                            if (++completed == 2 * per_strand) {
                                                ioc.stop();
                                            }
                                        });
                if (ec) {
                    ++refused;
                }
            }
        });
    };
    produce_from(strand_a, 0);
    produce_from(strand_b, per_strand);
    BOOST_REQUIRE(kafka_test::run_until_stopped(ioc, 2));
    BOOST_TEST(refused.load() == 0);
    // Any late duplicate completion would be queued by now; let it run.
    ioc.poll();

    std::map<std::int32_t, std::set<std::int64_t>> offsets;
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
        auto const& o = outcomes[i];
        BOOST_TEST_CONTEXT("message " << i) {
            BOOST_TEST(o.calls == 1);
            BOOST_TEST(o.on_expected_executor);
            BOOST_TEST(!o.report.ec, o.report.ec.message());
            BOOST_TEST((o.report.partition >= 0 && o.report.partition < 3));
            BOOST_TEST(o.report.offset >= 0);
            BOOST_TEST(offsets[o.report.partition].insert(o.report.offset).second);
        }
    }
    BOOST_TEST(p.in_flight() == 0u);
    BOOST_TEST(p.flush(10s) == 0u);
    auto text = registry.expose();
    BOOST_TEST(kafka_test::sample(text, "couch_bridge_kafka_produced_total{topic=\"" + topic + "\"}") ==
               2.0 * per_strand);
    BOOST_TEST(kafka_test::sample(text, "couch_bridge_kafka_in_flight_messages") == 0.0);
    BOOST_TEST(kafka_test::sample(text, "couch_bridge_kafka_delivery_latency_seconds_count") == 2.0 * per_strand);
}

BOOST_FIXTURE_TEST_CASE(key_value_and_headers_round_trip, fixture) {
    cluster.create_topic(topic, 2);
    kafka::producer p(ioc.get_executor(), config(), registry);
    constexpr int n = 20;
    std::vector<kafka::delivery_report> reports(n);
    int completed = 0;
    for (int i = 0; i < n; ++i) {
        kafka::record r{topic,
                        "doc-" + std::to_string(i),
                        R"({"document_id":"doc-)" + std::to_string(i) + R"("})",
                        {{"database", "cases"}, {"seq", "\"" + std::to_string(i) + "-g1AAAA\""}, {"rev", "1-abc"}}};
        auto ec = p.try_produce(r, ioc.get_executor(), [&, i](kafka::delivery_report const& rep) {
            reports[static_cast<std::size_t>(i)] = rep;
            if (++completed == n) {
                ioc.stop();
            }
        });
        BOOST_REQUIRE(!ec);
    }
    BOOST_REQUIRE(kafka_test::run_until_stopped(ioc, 1));

    auto got = kafka_test::consume(cluster.bootstrap_servers(), topic, 2, n);
    BOOST_REQUIRE(got.size() == static_cast<std::size_t>(n));
    for (auto const& c : got) {
        BOOST_TEST_CONTEXT("key " << c.key) {
            BOOST_REQUIRE(c.key.rfind("doc-", 0) == 0);
            auto i = std::stoi(c.key.substr(4));
            auto const& rep = reports[static_cast<std::size_t>(i)];
            BOOST_TEST(!rep.ec);
            BOOST_TEST(rep.partition == c.partition);
            BOOST_TEST(rep.offset == c.offset);
            BOOST_TEST(c.value == R"({"document_id":"doc-)" + std::to_string(i) + R"("})");
            BOOST_REQUIRE(c.headers.size() == 3u);
            BOOST_TEST(c.headers[0].first == "database");
            BOOST_TEST(c.headers[0].second == "cases");
            BOOST_TEST(c.headers[1].first == "seq");
            BOOST_TEST(c.headers[1].second == "\"" + std::to_string(i) + "-g1AAAA\"");
            BOOST_TEST(c.headers[2].first == "rev");
            BOOST_TEST(c.headers[2].second == "1-abc");
        }
    }
}

BOOST_FIXTURE_TEST_CASE(queue_full_is_back_pressure_and_wait_for_space_resumes, fixture) {
    cluster.create_topic(topic, 1);
    // A slow broker keeps the tiny queue full while the coroutine produces.
    rd_kafka_mock_broker_set_rtt(cluster.mock(), 1, 30);
    kafka::producer p(ioc.get_executor(), config({{"queue.buffering.max.messages", "4"}}), registry);
    constexpr int n = 40;
    int delivered = 0;
    int failed = 0;
    int queue_full_seen = 0;
    int other_refusals = 0;
    auto strand = asio::make_strand(ioc);
    asio::co_spawn(
        strand,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < n; ++i) {
                for (;;) {
                    auto ec = p.try_produce({topic, "k" + std::to_string(i), "v", {}}, strand,
                                            [&](kafka::delivery_report const& r) {
                                                (r.ec ? failed : delivered) += 1;
                                                if (delivered + failed == n) {
                                                    ioc.stop();
                                                }
                                            });
                    if (!ec) {
                        break;
                    }
                    if (!kafka::producer::is_queue_full(ec)) {
                        ++other_refusals;
                        co_return;
                    }
                    ++queue_full_seen;
                    co_await p.wait_for_space();
                }
            }
        },
        asio::detached);
    BOOST_REQUIRE(kafka_test::run_until_stopped(ioc, 2));
    BOOST_TEST(other_refusals == 0);
    BOOST_TEST(queue_full_seen > 0);
    BOOST_TEST(delivered == n);
    BOOST_TEST(failed == 0);
    BOOST_TEST(kafka_test::sample(registry.expose(), "couch_bridge_kafka_queue_full_total") ==
               static_cast<double>(queue_full_seen));
}

BOOST_FIXTURE_TEST_CASE(broker_down_reports_failures_not_success, fixture) {
    cluster.create_topic(topic, 1);
    kafka::producer p(ioc.get_executor(), config({{"message.timeout.ms", "1500"}}), registry);
    rd_kafka_mock_broker_set_down(cluster.mock(), 1);
    constexpr int n = 10;
    std::vector<kafka::delivery_report> reports;
    for (int i = 0; i < n; ++i) {
        auto ec = p.try_produce({topic, "k", "v", {}}, ioc.get_executor(), [&](kafka::delivery_report const& r) {
            reports.push_back(r);
            if (reports.size() == static_cast<std::size_t>(n)) {
                ioc.stop();
            }
        });
        BOOST_REQUIRE(!ec);
    }
    BOOST_REQUIRE(kafka_test::run_until_stopped(ioc, 1));
    BOOST_REQUIRE(reports.size() == static_cast<std::size_t>(n));
    for (auto const& r : reports) {
        BOOST_TEST(bool(r.ec));
        BOOST_TEST(r.offset == -1);
        BOOST_TEST(&r.ec.category() == &kafka::error_category());
        BOOST_TEST(!r.ec.message().empty());
        BOOST_TEST_MESSAGE("failure: " << kafka::error_name(r.ec) << ": " << r.ec.message());
    }
    BOOST_TEST(kafka_test::sample(registry.expose(), "couch_bridge_kafka_produce_errors_total{reason=\"" +
                                                         kafka::error_name(reports.front().ec) + "\"}") >= 1.0);
    BOOST_TEST(p.in_flight() == 0u);
}

namespace {

// Produces one record and runs the loop until its report arrived.
kafka::delivery_report produce_one(asio::io_context& ioc, kafka::producer& p, kafka::record const& r) {
    kafka::delivery_report out;
    bool done = false;
    auto ec = p.try_produce(r, ioc.get_executor(), [&](kafka::delivery_report const& rep) {
        out = rep;
        done = true;
        ioc.stop();
    });
    if (ec) {
        out.ec = ec;
        return out;
    }
    if (!kafka_test::run_until_stopped(ioc, 1) || !done) {
        throw std::runtime_error("no delivery report within the safety net");
    }
    return out;
}

} // namespace

BOOST_FIXTURE_TEST_CASE(retriable_broker_errors_are_retried_permanent_ones_reported, fixture) {
    cluster.create_topic(topic, 1);
    kafka::producer p(ioc.get_executor(), config(), registry);
    constexpr std::int16_t produce_api = 0;
    // Leadership moved twice: librdkafka refreshes metadata and retries.
    rd_kafka_mock_push_request_errors(cluster.mock(), produce_api, 2, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
    auto retried = produce_one(ioc, p, {topic, "k", "retried", {}});
    BOOST_TEST(!retried.ec, retried.ec.message());
    BOOST_TEST(retried.offset >= 0);

    // A permanent error fails the record, with the broker's error.
    rd_kafka_mock_push_request_errors(cluster.mock(), produce_api, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    auto refused = produce_one(ioc, p, {topic, "k", "refused", {}});
    BOOST_TEST(refused.ec == kafka::make_error_code(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE), refused.ec.message());
    BOOST_TEST(kafka_test::sample(registry.expose(),
                                  "couch_bridge_kafka_produce_errors_total{reason=\"MSG_SIZE_TOO_LARGE\"}") == 1.0);

    // And the producer carries on.
    auto later = produce_one(ioc, p, {topic, "k", "later", {}});
    BOOST_TEST(!later.ec, later.ec.message());
    BOOST_TEST(later.offset > retried.offset);
}

BOOST_FIXTURE_TEST_CASE(oversized_record_is_refused_at_once, fixture) {
    kafka::producer p(ioc.get_executor(), config({{"message.max.bytes", "10000"}}), registry);
    bool called = false;
    auto ec = p.try_produce({topic, "k", std::string(20000, 'x'), {}}, ioc.get_executor(),
                            [&](kafka::delivery_report const&) { called = true; });
    BOOST_TEST(ec == kafka::make_error_code(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE), ec.message());
    BOOST_TEST(p.in_flight() == 0u);
    ioc.poll();
    BOOST_TEST(!called);
}

BOOST_FIXTURE_TEST_CASE(fatal_error_rebuilds_and_fails_outstanding_messages, fixture) {
    cluster.create_topic(topic, 1);
    kafka::producer p(ioc.get_executor(), config(), registry);
    // Keep the first messages outstanding: nothing can be acknowledged.
    rd_kafka_mock_broker_set_down(cluster.mock(), 1);
    constexpr int n = 5;
    std::vector<kafka::delivery_report> first;
    kafka::delivery_report after;
    bool after_done = false;
    for (int i = 0; i < n; ++i) {
        BOOST_REQUIRE(!p.try_produce({topic, "k", "v", {}}, ioc.get_executor(), [&](kafka::delivery_report const& r) {
            first.push_back(r);
            if (first.size() == static_cast<std::size_t>(n)) {
                ioc.stop();
            }
        }));
    }
    p.trigger_fatal_error_for_test("test: fabricated idempotence failure");
    BOOST_REQUIRE(kafka_test::run_until_stopped(ioc, 1));
    BOOST_REQUIRE(first.size() == static_cast<std::size_t>(n));
    for (auto const& r : first) {
        BOOST_TEST(bool(r.ec), "an outstanding message of the failed instance must fail");
    }
    BOOST_TEST(p.rebuilds() == 1u);
    BOOST_TEST(kafka_test::sample(registry.expose(), "couch_bridge_kafka_producer_rebuilds_total") == 1.0);

    // The new instance works.
    rd_kafka_mock_broker_set_up(cluster.mock(), 1);
    BOOST_REQUIRE(!p.try_produce({topic, "k", "after", {}}, ioc.get_executor(), [&](kafka::delivery_report const& r) {
        after = r;
        after_done = true;
        ioc.stop();
    }));
    BOOST_REQUIRE(kafka_test::run_until_stopped(ioc, 1));
    BOOST_REQUIRE(after_done);
    BOOST_TEST(!after.ec, after.ec.message());
    BOOST_TEST(after.offset >= 0);
}

BOOST_FIXTURE_TEST_CASE(destructor_fails_what_is_still_outstanding, fixture) {
    cluster.create_topic(topic, 1);
    std::vector<kafka::delivery_report> reports;
    {
        kafka::producer p(ioc.get_executor(), config(), registry);
        rd_kafka_mock_broker_set_down(cluster.mock(), 1);
        for (int i = 0; i < 3; ++i) {
            BOOST_REQUIRE(!p.try_produce({topic, "k", "v", {}}, ioc.get_executor(),
                                         [&](kafka::delivery_report const& r) { reports.push_back(r); }));
        }
        BOOST_TEST(p.flush(200ms) == 3u);
    }
    // The producer is gone; its completions were posted with an error.
    ioc.run();
    BOOST_REQUIRE(reports.size() == 3u);
    for (auto const& r : reports) {
        BOOST_TEST(bool(r.ec));
    }
}

BOOST_FIXTURE_TEST_CASE(invalid_property_is_a_clear_startup_error, fixture) {
    auto message_of = [&](std::vector<std::pair<std::string, std::string>> props) -> std::string {
        try {
            kafka::producer p(ioc.get_executor(), config(std::move(props)), registry);
        } catch (std::invalid_argument const& e) {
            return e.what();
        }
        return "(no exception)";
    };
    auto unknown = message_of({{"no.such.property", "1"}});
    BOOST_TEST(unknown.find("no.such.property") != std::string::npos, unknown);
    auto bad_value = message_of({{"linger.ms", "soon"}});
    BOOST_TEST(bad_value.find("linger.ms") != std::string::npos, bad_value);
    // Accepted one by one, refused as a combination by librdkafka.
    auto conflict = message_of({{"acks", "1"}});
    BOOST_TEST(conflict.find("acks") != std::string::npos, conflict);
}

BOOST_FIXTURE_TEST_CASE(empty_topic_is_refused_without_taking_the_completion, fixture) {
    kafka::producer p(ioc.get_executor(), config(), registry);
    bool called = false;
    auto ec = p.try_produce({"", "k", "v", {}}, ioc.get_executor(), [&](kafka::delivery_report const&) {
        called = true;
    });
    BOOST_TEST(bool(ec));
    BOOST_TEST(!kafka::producer::is_queue_full(ec));
    BOOST_TEST(p.in_flight() == 0u);
    ioc.poll();
    BOOST_TEST(!called);
}

BOOST_FIXTURE_TEST_CASE(missing_topics_lists_only_absent_ones, fixture) {
    cluster.create_topic(topic, 1);
    kafka::producer p(ioc.get_executor(), config(), registry);
    auto absent = topic + "-absent";
    auto missing = p.missing_topics({topic, absent}, 10s);
    BOOST_REQUIRE(missing.size() == 1u);
    BOOST_TEST(missing.front() == absent);
    // Asking did not create it.
    BOOST_TEST(p.missing_topics({absent}, 10s).size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(embedded_cluster_creates_topics_admin_api_failure_is_reported, fixture) {
    kafka::producer p(ioc.get_executor(), config(), registry);
    auto second = topic + "-b";
    cluster.create_topics({topic, second}, 3);
    cluster.create_topics({topic}, 3); // exists already: fine
    BOOST_TEST(p.missing_topics({topic, second}, 10s).empty());
    // The mock cluster has no CreateTopics: the admin call must fail, not
    // pretend success.
    auto third = topic + "-c";
    auto ec = p.create_topics({third}, 3, 1, 1s);
    BOOST_TEST(bool(ec));
    BOOST_TEST_MESSAGE("create_topics on the mock cluster: " << ec.message());
    BOOST_TEST(p.missing_topics({third}, 10s).size() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
