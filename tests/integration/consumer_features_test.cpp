// What subscribers and operators ask for, end to end with the real binary
// and the real broker: payload modes, filters applied by the server, and
// records Kafka can never take (the dead-letter policy).
#include "bridge_process.hpp"
#include "helpers.hpp"

#include "tests/couch/fault_server.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <fstream>

using namespace integration;

namespace {

// Records of `db` in `topics` (every record, in order).
std::vector<test_support::consumed_record> records_in(std::vector<std::string> const& topics, std::string const& db) {
    std::vector<test_support::consumed_record> out;
    for (auto& r : test_support::consume_all(test_support::kafka_brokers(), topics)) {
        if (r.header("database") == db) {
            out.push_back(std::move(r));
        }
    }
    return out;
}

// The records of `db` in `topic` once `n` of them have key `key` (or after 90 s).
std::vector<test_support::consumed_record> records_until(std::string const& db, std::string const& topic,
                                                         std::string const& key, long n) {
    auto const deadline = std::chrono::steady_clock::now() + 90s;
    std::vector<test_support::consumed_record> got;
    while (std::chrono::steady_clock::now() < deadline) {
        got = records_in({topic}, db);
        if (std::count_if(got.begin(), got.end(), [&key](auto const& r) { return r.key == key; }) >= n) {
            break;
        }
        std::this_thread::sleep_for(300ms);
    }
    return got;
}

// Waits until `db`'s state in /status is `want`.
bool wait_db_state(unsigned short port, std::string const& db, std::string const& want) {
    auto const deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
        auto st = status_of(port);
        if (st.is_object()) {
            if (auto const* d = st.at("databases").as_object().if_contains(db); d && d->at("state") == want.c_str()) {
                return true;
            }
        }
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

} // namespace

BOOST_AUTO_TEST_SUITE(consumer_features)

BOOST_AUTO_TEST_CASE(stub_doc_payload_and_a_2_mib_document_going_to_the_dlq_while_the_database_follows) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("dlq");
    auto const dlq = test_support::unique_name("dlq-topic");
    test_support::couch_create_db(couch, db);
    test_support::couch_put_doc(couch, db, "small-1",
                                {{"doc_type", "CommCareCase"}, {"domain", "demo"}, {"type", "patient"}, {"n", 1}});
    test_support::couch_put_doc(couch, db, "huge",
                                {{"doc_type", "CommCareCase"}, {"domain", "demo"}, {"blob", std::string(2u << 20, 'x')}});
    auto const dir = test_support::make_temp_dir("dlq-ckpt");
    auto const port = test_support::free_port();
    auto bridge = start_bridge({{db}, dir, real, {"--payload", "stub+doc", "--dlq-topic", dlq}}, port);
    auto got = wait_for_ids(real, db, {"small-1"});
    // The DLQ record arrives, and the database goes on following.
    auto const deadline = std::chrono::steady_clock::now() + 90s;
    std::vector<test_support::consumed_record> dead;
    while (dead.empty() && std::chrono::steady_clock::now() < deadline) {
        dead = records_in({dlq}, db);
        std::this_thread::sleep_for(300ms);
    }
    put_case(db, "small-2");
    got = wait_for_ids(real, db, {"small-2"});
    BOOST_TEST(got.count("small-2") == 1u);
    BOOST_TEST(got.count("huge") == 0u); // never in the case topic
    BOOST_REQUIRE(wait_db_state(port, db, "following"));
    auto const st = status_of(port).at("databases").at(db);
    BOOST_TEST(st.at("unpublishable").to_number<int>() == 1);
    BOOST_TEST(std::string(st.at("last_unpublishable").as_string()).find("huge") != std::string::npos);
    BOOST_TEST(stop(*bridge) == 0);

    BOOST_REQUIRE(dead.size() == 1u);
    auto const& d = dead.front();
    BOOST_TEST(d.key == "huge");
    BOOST_TEST(std::stoul(d.header("size")) > (2u << 20));
    BOOST_TEST(!d.header("error").empty());
    BOOST_TEST(!d.header("seq").empty());
    auto const stand_in = json::parse(d.value).as_object();
    BOOST_TEST(stand_in.at("document_id").as_string() == "huge");
    BOOST_TEST(!stand_in.contains("doc")); // the stub, never the document

    // stub+doc: the ChangeMeta fields, then the document as CouchDB sent it.
    auto const cases = records_in({"case"}, db);
    BOOST_REQUIRE(!cases.empty());
    auto const v = json::parse(cases.front().value).as_object();
    BOOST_TEST(v.size() == 13u);
    BOOST_TEST(v.at("document_id").as_string() == "small-1");
    BOOST_TEST(v.at("doc").at("_id").as_string() == "small-1");
    BOOST_TEST(v.at("doc").at("n").to_number<int>() == 1);
    BOOST_TEST(cases.front().value.find("\"associated_document_id\":null,\"doc\":{") != std::string::npos);
    auto const log = read_log(dir + ".log");
    BOOST_TEST(log.find("can never be published") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(skip_policy_counts_and_goes_on) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("skip");
    test_support::couch_create_db(couch, db);
    test_support::couch_put_doc(couch, db, "huge", {{"doc_type", "CommCareCase"}, {"blob", std::string(2u << 20, 'y')}});
    put_case(db, "after");
    auto const dir = test_support::make_temp_dir("skip-ckpt");
    auto const port = test_support::free_port();
    auto bridge = start_bridge({{db}, dir, real, {"--payload", "doc", "--on-unpublishable", "skip"}}, port);
    auto const got = wait_for_ids(real, db, {"after"});
    BOOST_TEST(got.count("after") == 1u);
    BOOST_TEST(got.count("huge") == 0u);
    auto const metrics = test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/metrics");
    BOOST_TEST(metrics.body.find("couch_bridge_unpublishable_total{database=\"" + db +
                                 "\",reason=\"too_large\",action=\"skip\"} 1") != std::string::npos,
               metrics.body.substr(0, 200));
    BOOST_TEST(stop(*bridge) == 0);
    // doc payload: the document alone.
    auto const cases = records_in({"case"}, db);
    BOOST_REQUIRE(!cases.empty());
    BOOST_TEST(json::parse(cases.front().value).at("_id").as_string() == "after");
}

BOOST_AUTO_TEST_CASE(doc_ids_filter_keeps_one_in_three_and_moves_the_checkpoint) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("doc-ids");
    test_support::couch_create_db(couch, db);
    std::set<std::string> kept;
    for (int i = 0; i < 9; ++i) {
        auto const id = "d" + std::to_string(i);
        put_case(db, id);
        if (i % 3 == 0) {
            kept.insert(id);
        }
    }
    auto const dir = test_support::make_temp_dir("doc-ids-ckpt");
    {
        std::ofstream f(dir + ".ids");
        for (auto const& id : kept) {
            f << id << "\n";
        }
    }
    auto const port = test_support::free_port();
    auto bridge = start_bridge({{db}, dir, real, {"--doc-ids", dir + ".ids"}}, port);
    auto const got = wait_for_ids(real, db, kept);
    BOOST_REQUIRE(wait_for_checkpoint(port, db, 3));
    BOOST_TEST(stop(*bridge) == 0);
    BOOST_TEST(got.size() == 3u);
    for (auto const& id : kept) {
        BOOST_TEST(got.count(id) == 1u, id);
    }
}

BOOST_AUTO_TEST_CASE(selector_is_posted_and_a_rejected_filter_is_failed_not_a_full_feed) {
    // pouchdb-server cannot run filter=_selector (it crashes), so CouchDB
    // 3.4.3's answers (recordings 12a, 12g) come from the fault server.
    using namespace couch_test;
    namespace asio = boost::asio;
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("selector");
    auto const row = [](std::string const& id, std::string const& seq) {
        return R"({"seq":")" + seq + R"(","id":")" + id + R"(","changes":[{"rev":"1-a"}],"doc":{"_id":")" + id +
               R"(","_rev":"1-a","doc_type":"CommCareCase","domain":"demo"}})";
    };
    asio::io_context io;
    fault_server server(io);
    // Two kept rows; the batch's last_seq lies beyond them (filtered-out changes).
    server.push({w(status_response(200, "{\"results\":[" + row("s1", "3-g1AAAA") + "," + row("s2", "6-g1AAAA") +
                                            "],\"last_seq\":\"9-g1AAAA\",\"pending\":0}\n"))});
    server.push({w(status_response(400, R"({"error":"bad_request","reason":"Selector must be specified in POST payload"})"))});
    auto work = asio::make_work_guard(io);
    std::thread server_thread([&io] { io.run(); });
    auto const dir = test_support::make_temp_dir("selector-ckpt");
    auto const port = test_support::free_port();
    test_support::child_process bridge(
        integration::bridge_binary(),
        {"--couch-url", "http://127.0.0.1:" + std::to_string(server.port()), "--db", db, "--kafka-brokers", real,
         "--checkpoint-dir", dir, "--http-listen", "127.0.0.1:" + std::to_string(port), "--checkpoint-interval", "200",
         "--selector", R"({"doc_type":"CommCareCase"})"},
        dir + ".log");
    auto const got = wait_for_ids(real, db, {"s1", "s2"});
    bool const failed = wait_db_state(port, db, "failed");
    // A consumer can see the records before the producer has their
    // acknowledgements: wait for the checkpoint to cover them.
    BOOST_TEST(wait_for_checkpoint(port, db, 2));
    auto const st = status_of(port);
    BOOST_TEST(stop(bridge) == 0);
    asio::post(io, [&] { server.stop(); });
    work.reset();
    io.stop();
    server_thread.join();

    BOOST_TEST(got.count("s1") == 1u);
    BOOST_TEST(got.count("s2") == 1u);
    BOOST_TEST(failed);
    BOOST_TEST(std::string(st.at("databases").at(db).at("last_error").as_string()).find("Selector must be specified") !=
               std::string::npos);
    // The filtered-out changes after s2 moved the checkpoint to the batch's last_seq.
    BOOST_TEST(st.at("databases").at(db).at("checkpoint_seq") == "\"9-g1AAAA\"");
    // Every _changes request was a POST carrying the selector, never a full feed.
    std::size_t changes_requests = 0;
    for (std::size_t i = 0; i < server.targets.size(); ++i) {
        if (server.targets[i].find("/_changes") == std::string::npos) {
            continue;
        }
        ++changes_requests;
        BOOST_TEST(server.methods[i] == "POST");
        BOOST_TEST(server.targets[i].find("filter=_selector") != std::string::npos);
        BOOST_TEST(json::parse(server.bodies[i]) == json::parse(R"({"selector":{"doc_type":"CommCareCase"}})"));
    }
    BOOST_TEST(changes_requests >= 2u);
}

BOOST_AUTO_TEST_CASE(a_hard_deleted_case_reaches_topic_case_with_its_doc_type_across_a_restart) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("hard-delete");
    test_support::couch_create_db(couch, db);
    auto const rev = test_support::couch_put_doc(couch, db, "c1",
                                                 {{"doc_type", "CommCareCase"}, {"domain", "demo"}, {"type", "patient"}});
    auto const rev2 = test_support::couch_put_doc(couch, db, "c2", {{"doc_type", "CommCareCase"}, {"domain", "demo"}});
    auto const dir = test_support::make_temp_dir("hard-delete-ckpt");
    auto port = test_support::free_port();
    auto first = start_bridge({{db}, dir, real, {}}, port);
    wait_for_ids(real, db, {"c1", "c2"});
    BOOST_REQUIRE(wait_for_checkpoint(port, db, 2));
    BOOST_REQUIRE(stop(*first) == 0);

    // Deleted while the bridge is down: the memory is in the store.
    test_support::couch_delete_doc(couch, db, "c1", rev);
    port = test_support::free_port();
    auto second = start_bridge({{db}, dir, real, {}}, port);
    auto const cases = records_until(db, "case", "c1", 2);
    BOOST_TEST(stop(*second) == 0);
    json::object tombstone;
    for (auto const& r : cases) {
        auto v = json::parse(r.value).as_object();
        if (r.key == "c1" && v.at("is_deletion").as_bool()) {
            tombstone = v;
        }
    }
    BOOST_REQUIRE_MESSAGE(!tombstone.empty(), "no tombstone of c1 in topic case");
    BOOST_TEST(tombstone.at("document_type").as_string() == "CommCareCase");
    BOOST_TEST(tombstone.at("domain").as_string() == "demo");
    BOOST_TEST(records_in({"meta"}, db).empty());

    // Without the memory, a hard delete goes where it always went.
    port = test_support::free_port();
    auto third = start_bridge({{db}, dir, real, {"--deletion-memory", "false"}}, port);
    test_support::couch_delete_doc(couch, db, "c2", rev2);
    auto deadline = std::chrono::steady_clock::now() + 90s;
    std::vector<test_support::consumed_record> meta;
    while (meta.empty() && std::chrono::steady_clock::now() < deadline) {
        meta = records_in({"meta"}, db);
        std::this_thread::sleep_for(300ms);
    }
    BOOST_TEST(stop(*third) == 0);
    BOOST_REQUIRE(meta.size() == 1u);
    BOOST_TEST(meta.front().key == "c2");
    BOOST_TEST(json::parse(meta.front().value).at("document_type").is_null());
}

// The memory is written to the store only with the checkpoints (here: never
// while the test runs); a document and its hard delete inside one interval
// are matched from the buffer, and the clean stop writes both.
BOOST_AUTO_TEST_CASE(a_case_created_and_hard_deleted_within_one_checkpoint_interval_keeps_its_doc_type) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("hard-delete-fast");
    test_support::couch_create_db(couch, db);
    auto const dir = test_support::make_temp_dir("hard-delete-fast-ckpt");
    auto const port = test_support::free_port();
    auto bridge = start_bridge({{db}, dir, real, {"--checkpoint-interval", "600000"}}, port);
    BOOST_REQUIRE(wait_db_state(port, db, "following"));
    auto const rev = test_support::couch_put_doc(couch, db, "c1", {{"doc_type", "CommCareCase"}, {"domain", "demo"}});
    wait_for_ids(real, db, {"c1"});
    test_support::couch_delete_doc(couch, db, "c1", rev);
    auto const cases = records_until(db, "case", "c1", 2);
    auto const metrics = test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/metrics");
    BOOST_TEST(stop(*bridge) == 0);
    bool tombstone = false;
    for (auto const& r : cases) {
        auto v = json::parse(r.value).as_object();
        if (r.key == "c1" && v.at("is_deletion").as_bool()) {
            tombstone = true;
            BOOST_TEST(v.at("document_type").as_string() == "CommCareCase");
            BOOST_TEST(v.at("domain").as_string() == "demo");
        }
    }
    BOOST_TEST(tombstone, "no tombstone of c1 in topic case");
    BOOST_TEST(records_in({"meta"}, db).empty());
    BOOST_TEST(metrics.body.find("couch_bridge_tombstones_total{database=\"" + db + "\",how=\"remembered\"} 1") !=
               std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
