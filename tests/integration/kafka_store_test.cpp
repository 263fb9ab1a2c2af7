// The Kafka checkpoint store and exactly-once fencing, end to end with the
// real binary, pouchdb-server and the real Kafka broker:
//  - positions in the compacted topic: a restart with an empty checkpoint
//    dir resumes from the topic without replaying, `checkpoints list` reads
//    it, `set` and `delete` write it;
//  - --checkpoint-migrate carries RocksDB positions into the topic;
//  - a corrupt or foreign record in the topic is skipped with a warning;
//  - a second bridge with the same transactional id fences the first, which
//    exits nonzero, and read_committed consumers see each change once;
//  - a read of the topic waits for a transaction open at its start instead
//    of stopping below it;
//  - a start whose brokers are out of reach answers /healthz and waits.
#include "bridge_process.hpp"
#include "helpers.hpp"

#include "kafka/producer.hpp"
#include "kafka/topic_reader.hpp"
#include "metrics/registry.hpp"
#include "tests/support/couch_http.hpp"
#include "tests/support/kafka_consume.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/test/unit_test.hpp>

#include <future>
#include <set>
#include <thread>

using namespace integration;

namespace {

struct kafka_store_case {
    std::string db = test_support::unique_name("ks");
    std::string topic = test_support::unique_name("ks-checkpoints");
    std::string dir = test_support::make_temp_dir("ks-ckpt");
    kafka_store_case() { test_support::couch_create_db(test_support::couch_url(), db); }

    bridge_options options(std::vector<std::string> extra = {}) const {
        bridge_options o{{db}, dir, test_support::kafka_brokers(),
                         {"--checkpoint-store", "kafka", "--checkpoint-topic", topic}};
        o.extra.insert(o.extra.end(), extra.begin(), extra.end());
        return o;
    }
    // `checkpoints <args>` on this topic; returns (exit code, output).
    std::pair<int, std::string> checkpoints(std::vector<std::string> args) const {
        static int n = 0;
        auto const out = dir + ".cmd" + std::to_string(++n);
        std::vector<std::string> all{"--kafka-brokers", test_support::kafka_brokers(), "--checkpoint-store", "kafka",
                                     "--checkpoint-topic", topic, "checkpoints"};
        all.insert(all.end(), args.begin(), args.end());
        test_support::child_process p(bridge_binary(), all, out);
        int code = p.wait_for_exit(60s).value_or(-1);
        return {code, test_support::read_file(out)};
    }
};

// Produces one raw record to `topic` and waits for its acknowledgement.
void produce_raw(std::string const& topic, std::string key, std::string value) {
    metrics::registry registry;
    boost::asio::io_context ioc;
    kafka::producer p(ioc.get_executor(), {test_support::kafka_brokers(), {}, {}}, registry);
    std::promise<boost::system::error_code> acked;
    auto ec = p.try_produce({topic, std::move(key), std::move(value), {}, false}, boost::asio::system_executor(),
                            [&acked](kafka::delivery_report const& r) { acked.set_value(r.ec); });
    BOOST_REQUIRE(!ec);
    std::thread loop([&ioc] { ioc.run_for(30s); });
    auto f = acked.get_future();
    BOOST_REQUIRE(f.wait_for(30s) == std::future_status::ready);
    BOOST_REQUIRE(!f.get());
    ioc.stop();
    loop.join();
}

} // namespace

BOOST_AUTO_TEST_SUITE(kafka_store)

BOOST_AUTO_TEST_CASE(restart_resumes_from_the_topic_and_the_command_reads_it) {
    kafka_store_case c;
    for (int i = 0; i < 5; ++i) {
        put_case(c.db, "a" + std::to_string(i));
    }
    auto port = test_support::free_port();
    auto bridge = start_bridge(c.options(), port);
    BOOST_REQUIRE_MESSAGE(wait_for_checkpoint(port, c.db, 5), read_log(c.dir + ".log"));
    // While the bridge runs, changing its checkpoints is refused (once its
    // mark in the consumer group is up: retried, with a harmless `set`).
    bool refused = false;
    std::string refusal;
    for (int i = 0; i < 60 && !refused; ++i) {
        auto [set_code, out] = c.checkpoints({"set", "--db", c.db, "--seq", "5"});
        refused = set_code == 1 && out.find("refusing to change the checkpoint topic") != std::string::npos;
        refusal = out;
        if (!refused) {
            std::this_thread::sleep_for(500ms);
        }
    }
    BOOST_TEST_INFO("last answer: " << refusal);
    BOOST_TEST(refused);
    BOOST_REQUIRE_EQUAL(stop(*bridge), 0);

    auto [code, listed] = c.checkpoints({"list"});
    BOOST_TEST_INFO("checkpoints list: " << listed);
    BOOST_TEST(code == 0);
    BOOST_TEST(listed.find(c.db) != std::string::npos);
    BOOST_TEST(listed.find("checkpoint topic " + c.topic) != std::string::npos);

    // A new, empty checkpoint dir: the position can only come from the topic.
    c.dir = test_support::make_temp_dir("ks-ckpt-new");
    for (int i = 0; i < 3; ++i) {
        put_case(c.db, "b" + std::to_string(i));
    }
    port = test_support::free_port();
    bridge = start_bridge(c.options(), port);
    auto got = wait_for_ids(test_support::kafka_brokers(), c.db, {"b0", "b1", "b2"});
    BOOST_REQUIRE(wait_for_checkpoint(port, c.db, 3));
    BOOST_REQUIRE_EQUAL(stop(*bridge), 0);
    got = ids_in_kafka(test_support::kafka_brokers(), c.db);
    BOOST_TEST_INFO("log: " << read_log(c.dir + ".log"));
    BOOST_TEST(got.size() == 8u); // 5 + 3, nothing replayed
    BOOST_TEST(got.count("a0") == 1u);

    // delete: the database starts from 0 again (every record once more).
    auto [del_code, deleted] = c.checkpoints({"delete", "--db", c.db});
    BOOST_TEST_INFO("checkpoints delete: " << deleted);
    BOOST_TEST(del_code == 0);
    auto [code2, listed2] = c.checkpoints({"list"});
    BOOST_TEST(listed2.find(c.db) == std::string::npos);
    // set: a seq that is not JSON is refused; a valid one is written.
    // (--source: the topic holds no position any more to take it from.)
    auto const source = test_support::couch_url();
    BOOST_TEST(c.checkpoints({"set", "--db", c.db, "--seq", "not-json", "--source", source}).first != 0);
    auto [set_code, set_out] = c.checkpoints({"set", "--db", c.db, "--seq", "3", "--source", source});
    BOOST_TEST_INFO("checkpoints set: " << set_out);
    BOOST_TEST(set_code == 0);
    BOOST_TEST(c.checkpoints({"list"}).second.find("\t3\t") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(migration_from_rocksdb_replays_nothing) {
    kafka_store_case c;
    for (int i = 0; i < 4; ++i) {
        put_case(c.db, "m" + std::to_string(i));
    }
    auto port = test_support::free_port();
    bridge_options rocks{{c.db}, c.dir, test_support::kafka_brokers(), {}};
    auto bridge = start_bridge(rocks, port);
    BOOST_REQUIRE(wait_for_checkpoint(port, c.db, 4));
    BOOST_REQUIRE_EQUAL(stop(*bridge), 0);

    put_case(c.db, "after");
    port = test_support::free_port();
    bridge = start_bridge(c.options({"--checkpoint-migrate"}), port);
    wait_for_ids(test_support::kafka_brokers(), c.db, {"after"});
    BOOST_REQUIRE(wait_for_checkpoint(port, c.db, 1));
    BOOST_REQUIRE_EQUAL(stop(*bridge), 0);
    BOOST_TEST_INFO("log: " << read_log(c.dir + ".log"));
    BOOST_TEST(read_log(c.dir + ".log").find("--checkpoint-migrate: copied 1 position(s)") != std::string::npos);
    auto got = ids_in_kafka(test_support::kafka_brokers(), c.db);
    BOOST_TEST(got.size() == 5u); // m0..m3 once, then "after"
    BOOST_TEST(got.count("m0") == 1u);
}

BOOST_AUTO_TEST_CASE(a_corrupt_or_foreign_record_is_skipped_with_a_warning) {
    kafka_store_case c;
    put_case(c.db, "c0");
    auto port = test_support::free_port();
    auto bridge = start_bridge(c.options(), port);
    BOOST_REQUIRE(wait_for_checkpoint(port, c.db, 1));
    BOOST_REQUIRE_EQUAL(stop(*bridge), 0);

    produce_raw(c.topic, "not a key", "whatever");
    produce_raw(c.topic, "[\"" + test_support::couch_url() + "\",\"other\"]", "{\"seq_json\": 12"); // truncated
    put_case(c.db, "c1");
    port = test_support::free_port();
    bridge = start_bridge(c.options(), port);
    wait_for_ids(test_support::kafka_brokers(), c.db, {"c1"});
    BOOST_REQUIRE(wait_for_checkpoint(port, c.db, 1));
    BOOST_REQUIRE_EQUAL(stop(*bridge), 0);
    auto log = read_log(c.dir + ".log");
    BOOST_TEST_INFO("log: " << log);
    BOOST_TEST(log.find("skipping the record at offset") != std::string::npos);
    BOOST_TEST(log.find("skipping the record of database other") != std::string::npos);
    auto got = ids_in_kafka(test_support::kafka_brokers(), c.db);
    BOOST_TEST(got.count("c0") == 1u); // its position survived the garbage beside it
    BOOST_TEST(got.count("c1") == 1u);
}

BOOST_AUTO_TEST_CASE(a_second_bridge_with_the_same_transactional_id_fences_the_first) {
    kafka_store_case c;
    auto const tid = test_support::unique_name("ckb-fence");
    std::vector<std::string> eos{"--delivery", "exactly-once", "--transactional-id", tid};
    for (int i = 0; i < 5; ++i) {
        put_case(c.db, "f" + std::to_string(i));
    }
    auto port1 = test_support::free_port();
    auto first = start_bridge(c.options(eos), port1);
    BOOST_REQUIRE_MESSAGE(wait_for_checkpoint(port1, c.db, 5), read_log(c.dir + ".log"));
    auto const first_log = c.dir + ".log";

    c.dir = test_support::make_temp_dir("ks-ckpt-second");
    auto port2 = test_support::free_port();
    auto second = start_bridge(c.options(eos), port2);
    BOOST_REQUIRE_MESSAGE(wait_for_log(c.dir + ".log", "following 1 database(s)"), read_log(c.dir + ".log"));
    // The first notices at its next transaction and exits.
    put_case(c.db, "g0");
    auto code = first->wait_for_exit(120s);
    BOOST_TEST_INFO("first log: " << read_log(first_log));
    BOOST_REQUIRE(code.has_value());
    BOOST_TEST(*code == 3);
    BOOST_TEST(read_log(first_log).find("was fenced") != std::string::npos);

    put_case(c.db, "g1");
    auto got = wait_for_ids(test_support::kafka_brokers(), c.db, {"g0", "g1"});
    BOOST_REQUIRE(wait_for_checkpoint(port2, c.db, 2));
    BOOST_REQUIRE_EQUAL(stop(*second), 0);
    got = ids_in_kafka(test_support::kafka_brokers(), c.db);
    BOOST_TEST_INFO("second log: " << read_log(c.dir + ".log"));
    BOOST_TEST(got.size() == 7u); // f0..f4, g0, g1: each exactly once
    for (auto const& id : {"f0", "f4", "g0", "g1"}) {
        BOOST_TEST(got.count(id) == 1u, id);
    }
}

// The checkpoint topic's reader must not stop at the last stable offset: a
// transaction left open there (an owner cut off or killed mid-transaction)
// would hide every checkpoint committed after it, and a new owner would
// resume from older positions. The reader waits for it instead.
BOOST_AUTO_TEST_CASE(a_read_waits_for_a_transaction_open_at_its_start) {
    auto const topic = test_support::unique_name("ks-open-txn");
    metrics::registry registry;
    boost::asio::io_context ioc;
    auto guard = boost::asio::make_work_guard(ioc);
    std::thread loop([&ioc] { ioc.run(); });
    struct joiner {
        boost::asio::io_context& ioc;
        std::thread& t;
        ~joiner() {
            ioc.stop();
            t.join();
        }
    } join_loop{ioc, loop};

    kafka::producer_config txc{test_support::kafka_brokers(), {}, test_support::unique_name("ks-open-txn-id")};
    kafka::producer holder(ioc.get_executor(), txc, registry);
    BOOST_REQUIRE(!holder.create_topics({topic}, 1, 1, 30s));
    BOOST_REQUIRE(holder.init_transactions(30s).ok());
    BOOST_REQUIRE(holder.begin_transaction().ok());
    std::promise<kafka::delivery_report> held_ack;
    BOOST_REQUIRE(!holder.try_produce({topic, "held", "1", {}, false}, boost::asio::system_executor(),
                                      [&held_ack](kafka::delivery_report const& r) { held_ack.set_value(r); }));
    auto held = held_ack.get_future();
    BOOST_REQUIRE(held.wait_for(30s) == std::future_status::ready);
    BOOST_REQUIRE(!held.get().ec); // written, inside a transaction still open
    produce_raw(topic, "later", "2");  // committed after it (no transaction)

    auto reading = std::async(std::launch::async, [&topic] {
        std::vector<std::string> keys;
        kafka::read_topic({test_support::kafka_brokers(), {}}, topic,
                          [&keys](kafka::stored_record&& r) { keys.push_back(r.key); }, 60s);
        return keys;
    });
    // While the transaction is open the read cannot be complete.
    BOOST_TEST((reading.wait_for(3s) == std::future_status::timeout));
    BOOST_REQUIRE(holder.commit_transaction(30s).ok());
    BOOST_REQUIRE(reading.wait_for(60s) == std::future_status::ready);
    auto const keys = reading.get();
    BOOST_TEST((keys == std::vector<std::string>{"held", "later"}));
}


// With the Kafka store a start reads the checkpoint topic first. While the
// brokers are out of reach it must answer /healthz (a supervisor that sees
// no answer restarts it in a loop during the outage), say in /readyz,
// /status and the metrics what it waits for, keep retrying instead of
// failing after the first attempt, and stop at once on SIGTERM.
BOOST_AUTO_TEST_CASE(health_answers_while_the_checkpoint_topic_is_out_of_reach) {
    kafka_store_case c;
    auto const nowhere = "127.0.0.1:" + std::to_string(test_support::free_port()); // nothing listens there
    auto port = test_support::free_port();
    auto bridge = start_bridge({{c.db}, c.dir, nowhere, {"--checkpoint-store", "kafka", "--checkpoint-topic", c.topic}},
                               port);
    auto const base = "http://127.0.0.1:" + std::to_string(port);
    auto const health = wait_for_health(base, 20s);
    BOOST_TEST(health.status == 200, "healthz: " << health.status << " " << health.body);
    auto const ready = test_support::couch_request(base, "GET", "/readyz");
    BOOST_TEST(ready.status == 503);
    BOOST_TEST(ready.body.find("checkpoint topic " + c.topic) != std::string::npos, ready.body);
    auto const status = status_of(port);
    BOOST_TEST_REQUIRE(status.is_object());
    BOOST_TEST(status.at("starting").as_string().find("checkpoint topic") != std::string::npos);
    auto const metrics = test_support::couch_request(base, "GET", "/metrics").body;
    BOOST_TEST(metrics.find("couch_bridge_startup_waiting 1") != std::string::npos);
    // The first attempt fails (its reads time out); the start goes on waiting.
    auto const log = c.dir + ".log";
    BOOST_TEST_REQUIRE(wait_for_log(log, "start attempt 1 failed", 120s), read_log(log));
    std::this_thread::sleep_for(1s);
    BOOST_TEST_REQUIRE(bridge->running(), read_log(log));
    BOOST_TEST(test_support::couch_request(base, "GET", "/healthz").status == 200);
    BOOST_TEST(test_support::couch_request(base, "GET", "/readyz").body.find("attempt 1 failed") !=
               std::string::npos);
    // SIGTERM during the wait ends it, without waiting for the attempt under way.
    auto const signalled = std::chrono::steady_clock::now();
    BOOST_TEST(stop(*bridge) == 0);
    BOOST_TEST_MESSAGE("stopped " << std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - signalled)
                                         .count()
                                  << " ms after SIGTERM");
    BOOST_TEST(read_log(log).find("while the start waited for Kafka") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
