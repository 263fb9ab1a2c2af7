// Positions across restarts, end to end with the real binary, pouchdb-server
// and real Kafka brokers:
//  - checkpoints are only trusted by the Kafka cluster that acknowledged them
//    (embedded -> real, real -> another real cluster, a store of an earlier
//    version without a cluster id);
//  - a `--initial-since now` start is stored durably before anything can be
//    missed (clean stop, and kill -9 right after resolving);
//  - SIGTERM in the middle of a large batch waits for what is in flight;
//  - CouchDB's resource errors written into an open feed are survived.
#include "bridge_process.hpp"
#include "helpers.hpp"
#include "own_broker.hpp"

#include "tests/couch/fault_server.hpp"
#include "tests/support/couch_http.hpp"
#include "tests/support/kafka_consume.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

namespace json = boost::json;
using namespace std::chrono_literals;

using namespace integration;

BOOST_AUTO_TEST_SUITE(cluster_change)

BOOST_AUTO_TEST_CASE(checkpoints_from_the_embedded_cluster_are_not_trusted_by_a_real_one) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("embedded-then-real");
    test_support::couch_create_db(couch, db);
    std::set<std::string> const ids{"c1", "c2", "c3"};
    for (auto const& id : ids) {
        put_case(db, id);
    }
    auto const dir = test_support::make_temp_dir("embedded-ckpt");

    // 1. "Published" to the embedded cluster and checkpointed.
    auto port = test_support::free_port();
    auto first = integration::start_bridge({{db}, dir, "embedded", {}}, port);
    BOOST_REQUIRE(wait_for_checkpoint(port, db, 3));
    BOOST_REQUIRE(stop(*first) == 0);
    BOOST_TEST(checkpoints_list(dir).find("kafka cluster: embedded-") != std::string::npos);

    // 2. The same store against the real broker: refused, naming both clusters.
    test_support::child_process refused(integration::bridge_binary(),
                                        {"--couch-url", couch, "--db", db, "--kafka-brokers", real, "--checkpoint-dir",
                                         dir, "--http-listen", "127.0.0.1:" + std::to_string(test_support::free_port())},
                                        dir + ".refused");
    BOOST_REQUIRE(refused.wait_for_exit(120s).value_or(-1) == 2);
    auto const log = read_log(dir + ".refused");
    BOOST_TEST(log.find("Refusing to start") != std::string::npos, log);
    BOOST_TEST(log.find("acknowledged by Kafka cluster embedded-") != std::string::npos, log);
    BOOST_TEST(log.find("--kafka-cluster-change=restart") != std::string::npos, log);
    BOOST_TEST(ids_in_kafka(real, db).empty()); // nothing was published (and nothing lost: see 3)

    // 3. restart: every change reaches the real broker.
    port = test_support::free_port();
    auto third = integration::start_bridge({{db}, dir, real, {"--kafka-cluster-change", "restart"}}, port);
    auto const got = wait_for_ids(real, db, ids);
    for (auto const& id : ids) {
        BOOST_TEST(got.count(id) == 1u, id);
    }
    BOOST_REQUIRE(wait_for_checkpoint(port, db, 3));
    BOOST_TEST(stop(*third) == 0);
    auto const listed = checkpoints_list(dir);
    BOOST_TEST(listed.find("kafka cluster: embedded-") == std::string::npos, listed);
    BOOST_TEST(listed.find(db) != std::string::npos, listed);
}

// `checkpoints set` of the real binary on a RocksDB store (no cluster id).
void set_checkpoint(std::string const& dir, std::string const& db, std::string const& seq, std::string const& source) {
    test_support::child_process set(integration::bridge_binary(),
                                    {"--checkpoint-dir", dir, "checkpoints", "set", "--db", db, "--seq", seq,
                                     "--source", source},
                                    dir + ".set");
    BOOST_REQUIRE_MESSAGE(set.wait_for_exit(30s).value_or(-1) == 0, read_log(dir + ".set"));
}

BOOST_AUTO_TEST_CASE(another_real_cluster_is_refused_too_and_keep_trusts_the_positions) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("two-clusters");
    test_support::couch_create_db(couch, db);
    std::set<std::string> const ids{"k1", "k2"};
    for (auto const& id : ids) {
        put_case(db, id);
    }
    auto const dir = test_support::make_temp_dir("two-clusters-ckpt");
    auto port = test_support::free_port();
    auto first = integration::start_bridge({{db}, dir, real, {}}, port);
    BOOST_REQUIRE(wait_for_checkpoint(port, db, 2));
    BOOST_REQUIRE(stop(*first) == 0);

    own_broker other;
    test_support::child_process refused(integration::bridge_binary(),
                                        {"--couch-url", couch, "--db", db, "--kafka-brokers", other.brokers(),
                                         "--checkpoint-dir", dir, "--http-listen",
                                         "127.0.0.1:" + std::to_string(test_support::free_port())},
                                        dir + ".refused");
    BOOST_REQUIRE(refused.wait_for_exit(120s).value_or(-1) == 2);
    BOOST_TEST(read_log(dir + ".refused").find("Refusing to start") != std::string::npos);

    // keep: the positions stay (an operator who mirrored the topics); only new changes go to the new cluster.
    port = test_support::free_port();
    auto kept = integration::start_bridge({{db}, dir, other.brokers(), {"--kafka-cluster-change", "keep"}}, port);
    BOOST_REQUIRE(wait_for_log(dir + ".log", "--kafka-cluster-change=keep"));
    put_case(db, "k3");
    auto const got = wait_for_ids(other.brokers(), db, {"k3"});
    BOOST_TEST(got.count("k3") == 1u);
    BOOST_TEST(got.count("k1") == 0u);
    BOOST_TEST(stop(*kept) == 0);
}

BOOST_AUTO_TEST_CASE(a_store_without_a_cluster_id_is_adopted_with_a_warning) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("legacy-store");
    test_support::couch_create_db(couch, db);
    put_case(db, "l1");
    put_case(db, "l2");
    auto const dir = test_support::make_temp_dir("legacy-ckpt");
    // What an earlier version left: a position and no cluster id.
    set_checkpoint(dir, db, "1", "legacy");
    BOOST_REQUIRE(checkpoints_list(dir).find("kafka cluster: (not recorded)") != std::string::npos);
    auto port = test_support::free_port();
    auto bridge = integration::start_bridge({{db}, dir, real, {"--source-name", "legacy"}}, port);
    auto const got = wait_for_ids(real, db, {"l2"});
    BOOST_TEST(got.count("l2") == 1u);
    BOOST_TEST(got.count("l1") == 0u); // the adopted position is trusted
    BOOST_TEST(stop(*bridge) == 0);
    BOOST_TEST(read_log(dir + ".log").find("carry no Kafka cluster id") != std::string::npos);
    auto const listed = checkpoints_list(dir);
    BOOST_TEST(listed.find("kafka cluster: (not recorded)") == std::string::npos, listed);
}

// A store with positions waits for the Kafka cluster id before it trusts
// them. Meanwhile the process must answer /healthz (a supervisor that sees no
// answer restarts it in a loop during a Kafka outage) and say in /readyz and
// /status why it does not follow yet.
BOOST_AUTO_TEST_CASE(health_answers_while_the_kafka_cluster_id_is_awaited) {
    auto const db = test_support::unique_name("await-cluster");
    auto const dir = test_support::make_temp_dir("await-cluster-ckpt");
    set_checkpoint(dir, db, "1", "await");
    // Nothing listens there: the cluster id never comes.
    auto const nowhere = "127.0.0.1:" + std::to_string(test_support::free_port());
    auto port = test_support::free_port();
    auto bridge = integration::start_bridge({{db}, dir, nowhere, {"--source-name", "await"}}, port);
    auto const base = "http://127.0.0.1:" + std::to_string(port);
    auto const health = integration::wait_for_health(base, 30s);
    BOOST_TEST(health.status == 200, "healthz: " << health.status << " " << health.body);
    auto const ready = test_support::couch_request(base, "GET", "/readyz");
    BOOST_TEST(ready.status == 503);
    BOOST_TEST(ready.body.find("waiting for the Kafka cluster id") != std::string::npos, ready.body);
    auto const status = json::parse(test_support::couch_request(base, "GET", "/status").body);
    BOOST_TEST(status.at("starting").as_string().find("Kafka cluster id") != std::string::npos);
    BOOST_TEST(status.at("databases").as_object().empty());
    // A signal during the wait ends it cleanly.
    BOOST_TEST(stop(*bridge) == 0);
    BOOST_TEST(read_log(dir + ".log").find("before startup finished") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(embedded_without_a_checkpoint_dir_uses_a_throwaway_one) {
    auto const couch = test_support::couch_url();
    auto const db = test_support::unique_name("throwaway");
    test_support::couch_create_db(couch, db);
    auto const logdir = test_support::make_temp_dir("throwaway-log");
    auto const port = test_support::free_port();
    test_support::child_process bridge(integration::bridge_binary(),
                                       {"--couch-url", couch, "--db", db, "--http-listen",
                                        "127.0.0.1:" + std::to_string(port)},
                                       logdir + "/bridge.log");
    BOOST_REQUIRE(wait_for_log(logdir + "/bridge.log", "throw-away directory"));
    auto const log = read_log(logdir + "/bridge.log");
    std::smatch m;
    BOOST_REQUIRE(std::regex_search(log, m, std::regex("throw-away directory (\\S+)")));
    std::string const dir = m[1];
    BOOST_TEST(std::filesystem::exists(dir));
    BOOST_TEST(stop(bridge) == 0);
    BOOST_TEST(!std::filesystem::exists(dir)); // removed at exit
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(since_now)

BOOST_AUTO_TEST_CASE(a_clean_stop_keeps_the_resolved_now_and_nothing_written_while_down_is_lost) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("since-now");
    test_support::couch_create_db(couch, db);
    for (auto const* id : {"old1", "old2", "old3"}) {
        put_case(db, id);
    }
    auto const dir = test_support::make_temp_dir("since-now-ckpt");
    auto port = test_support::free_port();
    auto first = integration::start_bridge({{db}, dir, real, {"--initial-since", "now"}}, port);
    BOOST_REQUIRE(wait_for_log(dir + ".log", "since=now resolved to"));
    BOOST_REQUIRE(stop(*first) == 0);
    auto const listed = checkpoints_list(dir);
    BOOST_TEST(listed.find(db + "\t3\t") != std::string::npos, listed); // the idle database's "now"

    put_case(db, "down101");
    put_case(db, "down102");
    port = test_support::free_port();
    auto second = integration::start_bridge({{db}, dir, real, {"--initial-since", "now"}}, port);
    BOOST_REQUIRE(wait_for_log(dir + ".log", "resuming from checkpoint 3"));
    put_case(db, "after1");
    auto const got = wait_for_ids(real, db, {"down101", "down102", "after1"});
    BOOST_TEST(got.count("down101") == 1u);
    BOOST_TEST(got.count("down102") == 1u);
    BOOST_TEST(got.count("after1") == 1u);
    BOOST_TEST(got.count("old1") == 0u); // before "now"
    BOOST_TEST(stop(*second) == 0);
}

BOOST_AUTO_TEST_CASE(kill_9_right_after_resolving_now_loses_nothing_written_after_it) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("since-now-kill");
    test_support::couch_create_db(couch, db);
    put_case(db, "before");
    auto const dir = test_support::make_temp_dir("since-now-kill-ckpt");
    // A long flush interval: only the synchronous write at resolution can save "now".
    auto first = integration::start_bridge(
        {{db}, dir, real, {"--initial-since", "now", "--checkpoint-interval", "3600000"}}, test_support::free_port());
    BOOST_REQUIRE(wait_for_log(dir + ".log", "since=now resolved to"));
    first->signal(SIGKILL);
    first->wait_for_exit(30s);

    put_case(db, "while-dead");
    auto second = integration::start_bridge({{db}, dir, real, {"--initial-since", "now"}}, test_support::free_port());
    put_case(db, "after");
    auto const got = wait_for_ids(real, db, {"while-dead", "after"});
    BOOST_TEST(got.count("while-dead") == 1u);
    BOOST_TEST(got.count("after") == 1u);
    BOOST_TEST(got.count("before") == 0u);
    BOOST_TEST(stop(*second) == 0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(shutdown_in_flight)

BOOST_AUTO_TEST_CASE(sigterm_during_a_large_batch_waits_for_what_is_in_flight) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("big-batch");
    test_support::couch_create_db(couch, db);
    // 3,000 docs in bulk: the catch-up produces them in large batches.
    constexpr int n = 3000;
    for (int chunk = 0; chunk < n / 500; ++chunk) {
        json::array docs;
        for (int i = 0; i < 500; ++i) {
            docs.push_back(json::object{{"_id", "big-" + std::to_string(chunk * 500 + i)},
                                        {"doc_type", "CommCareCase"},
                                        {"domain", "demo"},
                                        {"type", "patient"}});
        }
        auto r = test_support::couch_request(couch, "POST", "/" + test_support::url_encode(db) + "/_bulk_docs",
                                             json::serialize(json::object{{"docs", docs}}));
        BOOST_REQUIRE_MESSAGE(r.status == 201, r.body);
    }
    auto const dir = test_support::make_temp_dir("big-batch-ckpt");
    auto port = test_support::free_port();
    auto bridge = integration::start_bridge({{db}, dir, real, {}}, port);
    // SIGTERM as soon as records are being produced.
    auto const deadline = std::chrono::steady_clock::now() + 90s;
    bool producing = false;
    while (!producing && std::chrono::steady_clock::now() < deadline) {
        auto s = status_of(port);
        if (s.is_object()) {
            if (auto const* d = s.at("databases").as_object().if_contains(db)) {
                producing = d->at("rows_read").to_number<std::uint64_t>() > 0;
            }
        }
        if (!producing) {
            std::this_thread::sleep_for(5ms);
        }
    }
    BOOST_REQUIRE(producing);
    bridge->signal(SIGTERM);
    auto const code = bridge->wait_for_exit(120s);
    BOOST_REQUIRE(code.has_value());
    auto const log = read_log(dir + ".log");
    BOOST_TEST(*code == 0, log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
    // Nothing was left unacknowledged to be purged at exit.
    BOOST_TEST(log.find("still unacknowledged") == std::string::npos);
    BOOST_TEST(log.find("still queued when destroyed") == std::string::npos);
    // Everything the checkpoint covers is in Kafka.
    auto const listed = checkpoints_list(dir);
    std::smatch m;
    BOOST_REQUIRE_MESSAGE(std::regex_search(listed, m, std::regex(db + "\t(\\d+)\t")), listed);
    auto const covered = std::stoul(m[1]);
    auto const in_kafka = ids_in_kafka(real, db);
    std::set<std::string> const distinct(in_kafka.begin(), in_kafka.end());
    BOOST_TEST(distinct.size() >= covered);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(couch_trouble)

// Bug 1 end to end: a CouchDB out of file handles writes a whole 500 emfile
// response into the open feed (and answers the next request 500 too). The
// real binary must back off, never call the database missing or re-created,
// and publish every change to the real broker.
BOOST_AUTO_TEST_CASE(in_body_500_emfile_is_survived_end_to_end) {
    using namespace couch_test;
    namespace asio = boost::asio;
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("emfile");
    auto doc_row = [](std::string const& id, std::string const& seq) {
        return R"({"seq":)" + seq + R"(,"id":")" + id + R"(","changes":[{"rev":"1-a"}],"doc":{"_id":")" + id +
               R"(","_rev":"1-a","doc_type":"CommCareCase","domain":"demo","type":"patient"}})";
    };
    auto const emfile = status_response(500, R"({"error":"emfile","reason":"Too many open files"})");
    asio::io_context io;
    fault_server server(io);
    // Catch-up: e1 e2; continuous: e3, then the stray 500; then a plain 500;
    // catch-up from e3's seq: e4; continuous: e5 and held open.
    server.push({w(status_response(200, "{\"results\":[" + doc_row("e1", "1") + "," + doc_row("e2", "2") +
                                            "],\"last_seq\":2,\"pending\":0}\n"))});
    server.push({w(chunked_200), w(chunk(doc_row("e3", "3") + "\n")), w(chunk("\n")), w(emfile), hold()});
    server.push({w(emfile)});
    server.push({w(status_response(200, "{\"results\":[" + doc_row("e4", "4") + "],\"last_seq\":4,\"pending\":0}\n"))});
    server.push({w(chunked_200), w(chunk(doc_row("e5", "5") + "\n")), hold()});
    auto work = asio::make_work_guard(io);
    std::thread server_thread([&io] { io.run(); });

    auto const dir = test_support::make_temp_dir("emfile-ckpt");
    auto const port = test_support::free_port();
    std::vector<std::string> args{"--couch-url", "http://127.0.0.1:" + std::to_string(server.port()), "--db", db,
                                  "--kafka-brokers", real, "--checkpoint-dir", dir, "--http-listen",
                                  "127.0.0.1:" + std::to_string(port), "--checkpoint-interval", "200"};
    test_support::child_process bridge(integration::bridge_binary(), args, dir + ".log");
    auto const got = wait_for_ids(real, db, {"e1", "e2", "e3", "e4", "e5"});
    // /status is refreshed once a second: wait for the state to settle.
    json::value st;
    for (int i = 0; i < 100; ++i) {
        st = status_of(port);
        if (st.is_object() && st.at("databases").at(db).at("state") == "following") {
            break;
        }
        std::this_thread::sleep_for(100ms);
    }
    BOOST_TEST(stop(bridge) == 0);
    asio::post(io, [&] { server.stop(); });
    work.reset();
    io.stop();
    server_thread.join();

    for (auto const* id : {"e1", "e2", "e3", "e4", "e5"}) {
        BOOST_TEST(got.count(id) == 1u, id); // all there, none repeated
    }
    auto const log = read_log(dir + ".log");
    BOOST_TEST(log.find("db_missing") == std::string::npos, log);
    BOOST_TEST(log.find("re-created") == std::string::npos);
    BOOST_REQUIRE(st.is_object());
    auto const& src = st.at("source").as_object();
    BOOST_TEST(src.at("errors").at("emfile").to_number<int>() >= 2);
    BOOST_TEST(src.at("state").as_string() == "degraded");
    BOOST_TEST(st.at("databases").at(db).at("state").as_string() == "following");
}

BOOST_AUTO_TEST_SUITE_END()
