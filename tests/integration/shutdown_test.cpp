// SIGTERM waits (bounded) for in-flight records; a second signal exits at
// once; neither moves a checkpoint past an unacknowledged record.
#include "bridge_process.hpp"
#include "helpers.hpp"

#include "tests/support/couch_http.hpp"
#include "tests/support/test_env.hpp"

#include <boost/test/unit_test.hpp>

#include <csignal>
#include <filesystem>
#include <thread>

namespace {

std::string run_checkpoints_list(std::string const& dir) {
    test_support::child_process list(integration::bridge_binary(), {"--checkpoint-dir", dir, "checkpoints", "list"},
                                     dir + ".list");
    BOOST_REQUIRE(list.wait_for_exit(std::chrono::seconds(30)).value_or(-1) == 0);
    return test_support::read_file(dir + ".list");
}

} // namespace

BOOST_AUTO_TEST_SUITE(shutdown)

BOOST_AUTO_TEST_CASE(second_signal_exits_at_once_and_nothing_unacknowledged_is_checkpointed) {
    auto const couch = test_support::couch_url();
    auto const db = test_support::unique_name("shutdown");
    test_support::couch_create_db(couch, db);
    for (int i = 0; i < 5; ++i) {
        test_support::couch_put_doc(couch, db, "doc-" + std::to_string(i), {{"doc_type", "CommCareCase"}});
    }
    auto dir = test_support::make_temp_dir("shutdown-ckpt");
    auto port = test_support::free_port();
    // A broker nobody listens on: every record stays in flight.
    auto dead_broker = "127.0.0.1:" + std::to_string(test_support::free_port());
    auto bridge = integration::start_bridge({{db}, dir, dead_broker, {"--shutdown-timeout", "60000"}}, port);
    std::this_thread::sleep_for(std::chrono::seconds(3));
    BOOST_REQUIRE(bridge->running());

    bridge->signal(SIGTERM);
    // It waits for acknowledgements that cannot come...
    BOOST_TEST(!bridge->wait_for_exit(std::chrono::seconds(2)).has_value());
    // ...until a second signal ends it at once.
    bridge->signal(SIGTERM);
    auto code = bridge->wait_for_exit(std::chrono::seconds(10));
    BOOST_REQUIRE(code.has_value());
    BOOST_TEST(*code == 130);

    auto log = test_support::read_file(dir + ".log");
    BOOST_TEST(log.find("waiting up to 60000 ms for 5 in-flight record(s)") != std::string::npos, log);
    // No record was acknowledged, so no checkpoint exists.
    BOOST_TEST(run_checkpoints_list(dir).find(db) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_second_bridge_and_the_checkpoints_command_refuse_a_store_in_use) {
    auto const couch = test_support::couch_url();
    auto const db = test_support::unique_name("locked");
    test_support::couch_create_db(couch, db);
    auto dir = test_support::make_temp_dir("locked-ckpt");
    auto first = integration::start_bridge({{db}, dir, "embedded", {}}, test_support::free_port());
    std::this_thread::sleep_for(std::chrono::seconds(2));
    BOOST_REQUIRE(first->running());

    test_support::child_process second(integration::bridge_binary(),
                                       {"--couch-url", couch, "--db", db, "--kafka-brokers", "embedded",
                                        "--checkpoint-dir", dir, "--http-listen",
                                        "127.0.0.1:" + std::to_string(test_support::free_port())},
                                       dir + ".second");
    auto code = second.wait_for_exit(std::chrono::seconds(30));
    BOOST_REQUIRE(code.has_value());
    BOOST_TEST(*code == 2);
    auto log = test_support::read_file(dir + ".second");
    BOOST_TEST(log.find("locked by another running couch-kafka-bridge") != std::string::npos, log);

    test_support::child_process list(integration::bridge_binary(), {"--checkpoint-dir", dir, "checkpoints", "list"},
                                     dir + ".list");
    auto list_code = list.wait_for_exit(std::chrono::seconds(30));
    BOOST_REQUIRE(list_code.has_value());
    BOOST_TEST(*list_code != 0);
    BOOST_TEST(test_support::read_file(dir + ".list").find("locked") != std::string::npos);

    first->signal(SIGTERM);
    BOOST_TEST(first->wait_for_exit(std::chrono::seconds(60)).value_or(-1) == 0);
}

// The checkpoint flusher has a thread of its own with the RocksDB store too,
// not only with Kafka's: its writes (the hard-delete memory's, then a synced
// batch of positions) never stall the event loop (issue 16, lever 13). What
// it writes still lands, and so does the final flush of a stop.
BOOST_AUTO_TEST_CASE(checkpoints_are_written_by_a_thread_of_their_own) {
    auto const db = test_support::unique_name("flusher");
    test_support::couch_create_db(test_support::couch_url(), db);
    for (auto const* id : {"c1", "c2", "c3"}) {
        integration::put_case(db, id);
    }
    auto const dir = test_support::make_temp_dir("flusher-ckpt");
    auto const port = test_support::free_port();
    auto bridge = integration::start_bridge({{db}, dir, "embedded", {}}, port);
    BOOST_REQUIRE(integration::wait_for_checkpoint(port, db, 3));

    int named = 0;
    for (auto const& task : std::filesystem::directory_iterator("/proc/" + std::to_string(bridge->pid()) + "/task")) {
        auto comm = test_support::read_file((task.path() / "comm").string());
        named += comm == "ckb-checkpoint\n" ? 1 : 0;
    }
    BOOST_TEST(named == 1);

    BOOST_TEST(integration::stop(*bridge) == 0);
    BOOST_TEST(integration::checkpoints_list(dir).find(db) != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
