// End to end: pouchdb-server -> couch-kafka-bridge (the real binary) -> the
// real Kafka broker, consumed back and checked field by field.
#include "bridge_process.hpp"

#include "tests/support/couch_http.hpp"
#include "tests/support/kafka_consume.hpp"
#include "kafka/murmur2.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <map>
#include <regex>
#include <set>
#include <thread>

namespace json = boost::json;
using test_support::consumed_record;

namespace {

std::vector<std::string> const commcare_topics{"case", "form", "domain", "commcare-user", "web-user", "group",
                                               "synclog-sql", "app", "location", "meta"};

// Records of `db` currently in the topics.
std::vector<consumed_record> records_of(std::string const& db) {
    std::vector<consumed_record> out;
    for (auto& r : test_support::consume_all(test_support::kafka_brokers(), commcare_topics)) {
        if (r.header("database") == db) {
            out.push_back(std::move(r));
        }
    }
    return out;
}

std::vector<consumed_record> wait_for_records(std::string const& db, std::size_t n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    std::vector<consumed_record> got;
    while (std::chrono::steady_clock::now() < deadline) {
        got = records_of(db);
        if (got.size() >= n) {
            return got;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    return got;
}

bool is_timestamp(json::value const& v) {
    static std::regex const re(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$)");
    return v.is_string() && std::regex_match(std::string(v.as_string()), re);
}

// Checks the fields every ChangeMeta must have, and returns the object.
json::object check_change_meta(consumed_record const& r, std::string const& db) {
    auto v = json::parse(r.value);
    BOOST_REQUIRE(v.is_object());
    auto const& o = v.as_object();
    std::vector<std::string> const fields{"document_id", "document_rev", "data_source_type", "data_source_name",
                                          "document_type", "document_subtype", "domain", "is_deletion",
                                          "publish_timestamp", "attempts", "original_publication_datetime",
                                          "associated_document_id"};
    BOOST_TEST(o.size() == fields.size());
    for (auto const& f : fields) {
        BOOST_TEST_CONTEXT("field " << f) { BOOST_TEST(o.contains(f)); }
    }
    BOOST_TEST(o.at("document_id").as_string() == r.key);
    BOOST_TEST(o.at("data_source_type").as_string() == "couch");
    BOOST_TEST(o.at("data_source_name").as_string() == db);
    BOOST_TEST(o.at("attempts").as_int64() == 0);
    BOOST_TEST(o.at("associated_document_id").is_null());
    BOOST_TEST(is_timestamp(o.at("publish_timestamp")));
    BOOST_TEST(o.at("original_publication_datetime") == o.at("publish_timestamp"));
    BOOST_TEST(r.header("rev") == std::string(o.at("document_rev").as_string()));
    BOOST_TEST(!r.header("seq").empty());
    // Java/kafka-python-compatible partitioning, computed independently.
    int const partitions = test_support::partition_count(test_support::kafka_brokers(), r.topic);
    BOOST_TEST(r.partition == kafka::java_partition_for_key(r.key, partitions));
    return o;
}

consumed_record const* find(std::vector<consumed_record> const& rs, std::string const& id, std::string const& rev) {
    for (auto const& r : rs) {
        if (r.key == id && r.header("rev") == rev) {
            return &r;
        }
    }
    return nullptr;
}

} // namespace

BOOST_AUTO_TEST_SUITE(publish)

BOOST_AUTO_TEST_CASE(every_change_reaches_its_topic_with_exact_change_meta) {
    auto const couch = test_support::couch_url();
    auto const db = test_support::unique_name("publish");
    test_support::couch_create_db(couch, db);

    auto rev_case = test_support::couch_put_doc(
        couch, db, "case-1", {{"doc_type", "CommCareCase"}, {"domain", "demo"}, {"type", "patient"}, {"name", "A"}});
    auto rev_form = test_support::couch_put_doc(
        couch, db, "form/1",
        {{"doc_type", "XFormInstance"}, {"domain", "demo"}, {"xmlns", "http://openrosa.org/formdesigner/abc"}});
    auto rev_user = test_support::couch_put_doc(couch, db, "user ü 100%",
                                                {{"doc_type", "CommCareUser"}, {"domain", "demo"}});
    auto rev_domain = test_support::couch_put_doc(couch, db, "dom-1", {{"doc_type", "Domain"}, {"name", "demo"}});
    auto rev_deleted_type = test_support::couch_put_doc(couch, db, "case-2",
                                                        {{"doc_type", "CommCareCase-Deleted"}, {"domain", "demo"},
                                                         {"type", "household"}});
    test_support::couch_put_doc(couch, db, "_design/views", {{"views", json::object{}}});
    test_support::couch_put_doc(couch, db, "no-type", {{"domain", "demo"}});

    auto dir = test_support::make_temp_dir("publish-ckpt");
    auto port = test_support::free_port();
    auto bridge = integration::start_bridge({{db}, dir, test_support::kafka_brokers(), {"--create-topics"}}, port);

    auto first = wait_for_records(db, 5);
    BOOST_REQUIRE_MESSAGE(first.size() == 5u, "expected 5 records, got " << first.size() << " (log: " << dir << ".log)");

    auto const* r_case = find(first, "case-1", rev_case);
    BOOST_REQUIRE(r_case);
    BOOST_TEST(r_case->topic == "case");
    auto m_case = check_change_meta(*r_case, db);
    BOOST_TEST(m_case.at("document_type").as_string() == "CommCareCase");
    BOOST_TEST(m_case.at("document_subtype").as_string() == "patient");
    BOOST_TEST(m_case.at("domain").as_string() == "demo");
    BOOST_TEST(m_case.at("is_deletion").as_bool() == false);
    BOOST_TEST(r_case->header("database") == db);

    auto const* r_form = find(first, "form/1", rev_form);
    BOOST_REQUIRE(r_form);
    BOOST_TEST(r_form->topic == "form");
    auto m_form = check_change_meta(*r_form, db);
    BOOST_TEST(m_form.at("document_subtype").as_string() == "http://openrosa.org/formdesigner/abc");

    auto const* r_user = find(first, "user ü 100%", rev_user);
    BOOST_REQUIRE(r_user);
    BOOST_TEST(r_user->topic == "commcare-user");
    auto m_user = check_change_meta(*r_user, db);
    BOOST_TEST(m_user.at("document_subtype").is_null());

    auto const* r_domain = find(first, "dom-1", rev_domain);
    BOOST_REQUIRE(r_domain);
    BOOST_TEST(r_domain->topic == "domain");
    BOOST_TEST(check_change_meta(*r_domain, db).at("domain").as_string() == "demo");

    auto const* r_del_type = find(first, "case-2", rev_deleted_type);
    BOOST_REQUIRE(r_del_type);
    BOOST_TEST(r_del_type->topic == "case");
    BOOST_TEST(check_change_meta(*r_del_type, db).at("is_deletion").as_bool() == true);

    // Phase 2, while the bridge follows: an update and a hard delete.
    auto rev_case2 = test_support::couch_put_doc(couch, db, "case-1",
                                                 {{"_rev", rev_case}, {"doc_type", "CommCareCase"}, {"domain", "demo"},
                                                  {"type", "patient"}, {"name", "B"}});
    auto rev_form_del = test_support::couch_delete_doc(couch, db, "form/1", rev_form);
    auto second = wait_for_records(db, 7);
    BOOST_REQUIRE_MESSAGE(second.size() == 7u, "expected 7 records, got " << second.size());

    auto const* r_update = find(second, "case-1", rev_case2);
    BOOST_REQUIRE(r_update);
    BOOST_TEST(r_update->topic == "case");
    BOOST_TEST(check_change_meta(*r_update, db).at("is_deletion").as_bool() == false);

    auto const* r_hard_delete = find(second, "form/1", rev_form_del);
    BOOST_REQUIRE(r_hard_delete);
    auto m_del = check_change_meta(*r_hard_delete, db);
    BOOST_TEST(m_del.at("is_deletion").as_bool() == true);
    // A tombstone carries no doc_type: the hard-delete memory routes it like
    // the form it deletes, with its doc_type and domain.
    BOOST_TEST(r_hard_delete->topic == "form");
    BOOST_TEST(m_del.at("document_type").as_string() == "XFormInstance");
    BOOST_TEST(m_del.at("domain").as_string() == "demo");

    // The design doc and the doc without doc_type were skipped, not published.
    for (auto const& r : second) {
        BOOST_TEST(r.key != "_design/views");
        BOOST_TEST(r.key != "no-type");
    }

    // Every acknowledged record was timed from its row's read to its
    // acknowledgement (issue #16's row->ack histogram).
    {
        auto const text =
            test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/metrics").body;
        std::string const name = "couch_bridge_row_ack_latency_seconds_count ";
        auto const at = text.find("\n" + name);
        BOOST_REQUIRE_MESSAGE(at != std::string::npos, "no " << name << "in /metrics");
        auto const count = std::stod(text.substr(at + 1 + name.size()));
        BOOST_TEST(count >= 7.0);
        BOOST_TEST(text.find("couch_bridge_row_ack_latency_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
    }

    bridge->signal(SIGTERM);
    auto code = bridge->wait_for_exit(std::chrono::seconds(60));
    BOOST_REQUIRE(code.has_value());
    BOOST_TEST(*code == 0);
}

// Waits until the bridge's /status shows `db` following its live feed.
void wait_following(unsigned short port, std::string const& db) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
        try {
            auto r = test_support::couch_request("http://127.0.0.1:" + std::to_string(port), "GET", "/status");
            if (r.status == 200) {
                auto st = json::parse(r.body).at("databases").at(db).at("state");
                if (st.as_string() == "following") {
                    return;
                }
            }
        } catch (std::exception const&) {
            // not listening yet
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    BOOST_FAIL("the bridge never reached state following for " << db);
}

BOOST_AUTO_TEST_CASE(initial_since_now_skips_the_backlog_and_a_restart_resumes_from_the_checkpoint) {
    auto const couch = test_support::couch_url();
    auto const db = test_support::unique_name("since-now");
    test_support::couch_create_db(couch, db);
    test_support::couch_put_doc(couch, db, "old-1", {{"doc_type", "CommCareCase"}, {"domain", "d"}});
    test_support::couch_put_doc(couch, db, "old-2", {{"doc_type", "CommCareCase"}, {"domain", "d"}});

    auto dir = test_support::make_temp_dir("since-now-ckpt");
    auto port = test_support::free_port();
    integration::bridge_options opts{{db}, dir, test_support::kafka_brokers(), {"--initial-since", "now"}};
    {
        auto bridge = integration::start_bridge(opts, port);
        wait_following(port, db);
        test_support::couch_put_doc(couch, db, "new-1", {{"doc_type", "CommCareCase"}, {"domain", "d"}});
        test_support::couch_put_doc(couch, db, "new-2", {{"doc_type", "CommCareCase"}, {"domain", "d"}});
        auto got = wait_for_records(db, 2);
        BOOST_TEST(got.size() == 2u);
        bridge->signal(SIGTERM);
        auto code = bridge->wait_for_exit(std::chrono::seconds(60));
        BOOST_REQUIRE(code.has_value());
        BOOST_TEST(*code == 0);
    }
    // A change made while the bridge is down is published after the restart,
    // from the checkpoint (not from "now" again, not from 0).
    test_support::couch_put_doc(couch, db, "while-down", {{"doc_type", "CommCareCase"}, {"domain", "d"}});
    auto bridge = integration::start_bridge(opts, port);
    auto got = wait_for_records(db, 3);
    std::set<std::string> keys;
    for (auto const& r : got) {
        keys.insert(r.key);
    }
    BOOST_TEST(got.size() == 3u);
    BOOST_TEST((keys == std::set<std::string>{"new-1", "new-2", "while-down"}));
    bridge->signal(SIGTERM);
    BOOST_TEST(bridge->wait_for_exit(std::chrono::seconds(60)).value_or(-1) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
