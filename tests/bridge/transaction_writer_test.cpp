// The exactly-once writer (bridge/exactly_once.hpp) against librdkafka's mock
// cluster: a commit that meets an abort left unfinished by a timeout (group
// mode: the abort of a lost partition's transaction while Kafka was away)
// finishes that abort instead of retrying the commit, which librdkafka
// refuses at once (_CONFLICT) for as long as the abort is pending. The fault
// lab's group soak met the endless retry: 14 million "commit not done yet"
// lines in one bridge's log.
#include "bridge/exactly_once.hpp"
#include "checkpoint/kafka_store.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/producer.hpp"
#include "metrics/registry.hpp"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <boost/asio/system_executor.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <thread>

using namespace std::chrono_literals;

BOOST_AUTO_TEST_SUITE(transaction_writer)

BOOST_AUTO_TEST_CASE(a_commit_finishes_an_abort_left_unfinished_by_a_timeout) {
    kafka::embedded_cluster cluster(1);
    cluster.create_topic("txn-checkpoints", 1);
    metrics::registry registry;
    boost::asio::thread_pool reports(1);
    kafka::producer_config pc;
    pc.bootstrap_servers = cluster.bootstrap_servers();
    pc.transactional_id = "transaction-writer-test";
    kafka::producer producer(reports.get_executor(), pc, registry);
    BOOST_REQUIRE(producer.init_transactions(30s).ok());
    BOOST_REQUIRE(producer.begin_transaction().ok());
    checkpoint::kafka_store_options so;
    so.topic = "txn-checkpoints";
    so.timeout = 30s;
    auto store = checkpoint::kafka_store::open(producer, cluster.bootstrap_servers(), {}, so);

    bool fatal = false;
    bridge::transaction_writer::hooks h;
    h.in_flight = [] { return std::size_t{0}; };
    h.rewind_all = [](std::function<void()> done) { done(); };
    h.discard_dirty = [] {};
    h.on_fatal = [&fatal](std::string const&) { fatal = true; };
    bridge::transaction_writer writer(producer, *store, h, registry, 5s);
    checkpoint::key const k{"src", "db"};
    auto at = [](char const* seq) { return checkpoint::position{seq, 1, "test"}; };

    // A record in the open transaction, acknowledged: its partition joined
    // the transaction, so ending it needs the coordinator.
    std::promise<void> acked;
    BOOST_REQUIRE(!producer.try_produce(store->make_record(k, at("1")), boost::asio::system_executor(),
                                        [&acked](kafka::delivery_report const&) { acked.set_value(); }));
    BOOST_REQUIRE(acked.get_future().wait_for(30s) == std::future_status::ready);

    // The abort times out with the broker away and stays pending.
    BOOST_REQUIRE_EQUAL(rd_kafka_mock_broker_set_down(cluster.mock(), 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    auto const abort = producer.abort_transaction(500ms);
    BOOST_TEST_INFO("abort: " << abort.message);
    BOOST_REQUIRE(!abort.ok());
    BOOST_REQUIRE_EQUAL(rd_kafka_mock_broker_set_up(cluster.mock(), 1), RD_KAFKA_RESP_ERR_NO_ERROR);

    // The flusher's next tick, nothing dirty (as in the soak): a commit
    // alone. Before the fix it retried the refused commit without end (and
    // without a pause): a thread of its own, so that the test can say so
    // instead of hanging.
    std::promise<boost::system::error_code> written;
    auto result = written.get_future();
    std::thread([&] { written.set_value(writer.write({})); }).detach();
    if (result.wait_for(60s) != std::future_status::ready) {
        std::fprintf(stderr, "transaction_writer::write() still retrying the commit after 60 s\n");
        std::_Exit(1);
    }
    BOOST_TEST(result.get()); // the transaction ended aborted: not a checkpoint written
    BOOST_TEST_INFO("last error: " << writer.last_error_detail());
    BOOST_TEST(writer.last_error_detail().find("abort of this transaction is under way") != std::string::npos);
    BOOST_TEST(!fatal);

    // The next transaction begins and commits.
    writer.finish();
    BOOST_TEST(!writer.write({{k, at("3")}}));
    writer.finish();
    BOOST_TEST(!fatal);
    BOOST_TEST(store->get(k).value().seq_json == "3");
}

BOOST_AUTO_TEST_SUITE_END()
