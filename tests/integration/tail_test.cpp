// `couch-kafka-bridge tail --fetch-docs` end to end: pouchdb-server -> the
// bridge -> the real broker -> tail, which resolves each record to its
// document through the store the record names (_bulk_get).
#include "bridge_process.hpp"

#include "tests/support/couch_http.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <librdkafka/rdkafka.h>

#include <csignal>
#include <map>
#include <memory>
#include <sstream>

namespace json = boost::json;

namespace {

// Produces one record as another publisher would (to reach states the bridge
// does not publish by itself: a document that never existed, a non-ChangeMeta).
void produce(std::string const& topic, std::string const& key, std::string const& value) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    BOOST_REQUIRE(rd_kafka_conf_set(conf, "bootstrap.servers", test_support::kafka_brokers().c_str(), err,
                                    sizeof err) == RD_KAFKA_CONF_OK);
    std::unique_ptr<rd_kafka_t, decltype(&rd_kafka_destroy)> rk(
        rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err), &rd_kafka_destroy);
    BOOST_REQUIRE(rk);
    auto e = rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                               RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    BOOST_REQUIRE(e == RD_KAFKA_RESP_ERR_NO_ERROR);
    BOOST_REQUIRE(rd_kafka_flush(rk.get(), 60000) == RD_KAFKA_RESP_ERR_NO_ERROR);
}

std::string change_meta(std::string const& db, std::string const& id) {
    return json::serialize(json::object{{"document_id", id},
                                        {"document_rev", "1-x"},
                                        {"data_source_type", "couch"},
                                        {"data_source_name", db},
                                        {"document_type", "CommCareCase"},
                                        {"is_deletion", false}});
}

struct tail_run {
    int code = -1;
    std::map<std::string, json::object> by_key; // the last line per record key
    std::string log;
};

tail_run run_tail(std::vector<std::string> args) {
    auto dir = test_support::make_temp_dir("tail-fetch");
    test_support::child_process p(integration::bridge_binary(), args, dir + "/out");
    auto code = p.wait_for_exit(std::chrono::seconds(180));
    BOOST_REQUIRE(code.has_value());
    tail_run r{*code, {}, test_support::read_file(dir + "/out")};
    std::istringstream lines(r.log);
    for (std::string line; std::getline(lines, line);) {
        boost::system::error_code ec;
        auto v = json::parse(line, ec);
        if (!ec && v.is_object() && v.as_object().contains("key")) {
            r.by_key[std::string(v.at("key").as_string())] = v.as_object();
        }
    }
    return r;
}

} // namespace

BOOST_AUTO_TEST_SUITE(tail_fetch_docs)

BOOST_AUTO_TEST_CASE(records_come_with_their_document_or_missing_or_deleted) {
    auto const couch = test_support::couch_url();
    auto const db = test_support::unique_name("tail-docs");
    auto const prefix = test_support::unique_name("tailfd") + "-";
    test_support::couch_create_db(couch, db);
    auto rev1 = test_support::couch_put_doc(couch, db, "live/1", {{"doc_type", "CommCareCase"}, {"name", "one"}});
    auto rev2 = test_support::couch_put_doc(couch, db, "live/1",
                                            {{"_rev", rev1}, {"doc_type", "CommCareCase"}, {"name", "two"}});
    auto gone = test_support::couch_put_doc(couch, db, "gone", {{"doc_type", "CommCareCase"}});
    test_support::couch_delete_doc(couch, db, "gone", gone);

    auto dir = test_support::make_temp_dir("tail-docs-ckpt");
    std::vector<std::string> const routing{"--routing", "prefix:" + prefix, "--default-topic", prefix + "meta"};
    auto bridge = integration::start_bridge({{db}, dir, test_support::kafka_brokers(), routing},
                                            test_support::free_port());
    auto const case_topic = prefix + "CommCareCase";
    produce(case_topic, "ghost", change_meta(db, "ghost"));
    produce(case_topic, "junk", "not a change record");

    // Options after the subcommand, a batch smaller than the records.
    auto r = run_tail({"tail", "--topic", case_topic, "--topic", prefix + "meta", "--fetch-docs", "--fetch-batch", "2",
                       "--max-records", "4", "--timeout-ms", "120000", "--kafka-brokers", test_support::kafka_brokers(),
                       "--couch-url", couch});
    bridge->signal(SIGTERM);
    bridge->wait_for_exit(std::chrono::seconds(60));
    BOOST_TEST(r.code == 0, r.log);
    BOOST_REQUIRE_MESSAGE(r.by_key.size() == 4u, r.log);

    auto const& live = r.by_key.at("live/1");
    BOOST_TEST(live.at("value").at("data_source_name").as_string() == db);
    BOOST_TEST(live.at("document").at("status").as_string() == "found");
    BOOST_TEST(live.at("document").at("doc").at("_rev").as_string() == rev2);
    BOOST_TEST(live.at("document").at("doc").at("name").as_string() == "two");

    auto const& deleted = r.by_key.at("gone");
    BOOST_TEST(deleted.at("topic").as_string() == prefix + "meta"); // a tombstone has no doc_type
    BOOST_TEST(deleted.at("document").at("status").as_string() == "deleted");

    BOOST_TEST(r.by_key.at("ghost").at("document").at("status").as_string() == "missing");
    BOOST_TEST(r.by_key.at("ghost").at("document").as_object().contains("doc") == false);
    BOOST_TEST(r.by_key.at("junk").at("document").at("status").as_string() == "no_store");
}

BOOST_AUTO_TEST_CASE(a_store_that_cannot_be_read_is_an_error_and_exit_1) {
    auto const topic = test_support::unique_name("tailfd-err");
    auto const missing_db = test_support::unique_name("no-such-db");
    produce(topic, "doc-1", change_meta(missing_db, "doc-1"));
    auto r = run_tail({"--kafka-brokers", test_support::kafka_brokers(), "--couch-url", test_support::couch_url(),
                       "tail", "--topic", topic, "--fetch-docs", "--max-records", "1", "--timeout-ms", "120000"});
    BOOST_TEST(r.code == 1, r.log);
    BOOST_REQUIRE_MESSAGE(r.by_key.count("doc-1") == 1u, r.log);
    auto const& doc = r.by_key.at("doc-1").at("document");
    BOOST_TEST(doc.at("status").as_string() == "error");
    BOOST_TEST(doc.at("error").as_string().find("does not exist") != std::string_view::npos);
    BOOST_TEST(r.log.find("could not be fetched") != std::string::npos, r.log);
}

BOOST_AUTO_TEST_SUITE_END()
