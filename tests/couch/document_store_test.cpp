// The document store (POST /{db}/_bulk_get): CouchDB 3.4.3's recorded
// replies, malformed replies, and the real pouchdb-server (found, deleted,
// missing, a missing database).
#include "couch/document_store.hpp"
#include "tests/support/couch_http.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

namespace {

std::string recorded_body(std::string const& name) {
    auto raw = test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + name);
    auto const end = raw.find("\r\n\r\n");
    BOOST_REQUIRE(end != std::string::npos);
    return raw.substr(end + 4); // Content-Length bodies: no chunk framing
}

} // namespace

BOOST_AUTO_TEST_SUITE(document_store)

BOOST_AUTO_TEST_CASE(couchdb_3_found_and_missing) {
    auto r = couch::parse_bulk_get(recorded_body("19a_bulk_get.http"), {"doc-a1", "missing"});
    BOOST_TEST(r.error == "");
    BOOST_REQUIRE(r.docs.size() == 2u);
    BOOST_TEST(r.docs[0].id == "doc-a1");
    BOOST_TEST((r.docs[0].state == couch::doc_state::found));
    BOOST_TEST(r.docs[0].doc.at("_rev").as_string() == "2-bfcc401852db5252193a1796d67a8bb1");
    BOOST_TEST(r.docs[0].doc.at("name").as_string() == "a1 updated");
    BOOST_TEST(r.docs[1].id == "missing");
    BOOST_TEST((r.docs[1].state == couch::doc_state::missing));
    BOOST_TEST(r.docs[1].doc.is_null());
}

// Positional: one result per requested entry, the same id repeated (as
// CouchDB answers a request with revs).
BOOST_AUTO_TEST_CASE(couchdb_3_repeated_id_one_result_each) {
    auto r = couch::parse_bulk_get(recorded_body("19b_bulk_get_revs.http"), {"doc-a1", "doc-a1", "doc-a1"});
    BOOST_TEST(r.error == "");
    BOOST_REQUIRE(r.docs.size() == 3u);
    BOOST_TEST((r.docs[0].state == couch::doc_state::found));
    BOOST_TEST((r.docs[1].state == couch::doc_state::found));
    BOOST_TEST(r.docs[1].doc.at("_rev").as_string() == "1-f8a07813031c8485c088c3171ce2edc7");
    BOOST_TEST((r.docs[2].state == couch::doc_state::missing));
}

// Removes chunked transfer-encoding framing.
std::string dechunk(std::string_view wire) {
    std::string out;
    for (;;) {
        auto const eol = wire.find("\r\n");
        BOOST_REQUIRE(eol != std::string_view::npos);
        auto const size = std::stoul(std::string(wire.substr(0, eol)), nullptr, 16);
        if (size == 0) {
            return out;
        }
        out += wire.substr(eol + 2, size);
        wire.remove_prefix(eol + 2 + size + 2);
    }
}

BOOST_AUTO_TEST_CASE(couchdb_3_all_docs_keys_tells_deleted_from_missing) {
    auto raw = test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/19c_all_docs_keys_include_docs.http");
    auto body = dechunk(std::string_view(raw).substr(raw.find("\r\n\r\n") + 4));
    auto r = couch::parse_all_docs_keys(body, {"doc-a1", "missing", "doc-del"});
    BOOST_TEST(r.error == "");
    BOOST_REQUIRE(r.docs.size() == 3u);
    BOOST_TEST((r.docs[0].state == couch::doc_state::found));
    BOOST_TEST((r.docs[1].state == couch::doc_state::missing));
    BOOST_TEST((r.docs[2].state == couch::doc_state::deleted));
    BOOST_TEST(!couch::parse_all_docs_keys(body, {"doc-a1", "doc-del", "missing"}).error.empty()); // out of order
}

BOOST_AUTO_TEST_CASE(pouchdb_server_empty_answer_is_missing_until_checked) {
    // pouchdb-server 4.2 answers {} for a deleted and for an unknown id alike.
    auto r = couch::parse_bulk_get(R"({"results":[{"id":"gone","docs":[{}]}]})", {"gone"});
    BOOST_TEST(r.error == "");
    BOOST_REQUIRE(r.docs.size() == 1u);
    BOOST_TEST((r.docs[0].state == couch::doc_state::missing));
}

BOOST_AUTO_TEST_CASE(deleted_as_error_reason_or_as_tombstone) {
    auto r = couch::parse_bulk_get(
        R"({"results":[{"id":"a","docs":[{"error":{"id":"a","rev":"undefined","error":"not_found",)"
        R"("reason":"deleted"}}]},)"
        R"({"id":"b","docs":[{"ok":{"_id":"b","_rev":"2-x","_deleted":true}}]}]})",
        {"a", "b"});
    BOOST_TEST(r.error == "");
    BOOST_REQUIRE(r.docs.size() == 2u);
    BOOST_TEST((r.docs[0].state == couch::doc_state::deleted));
    BOOST_TEST(r.docs[0].doc.is_null());
    BOOST_TEST((r.docs[1].state == couch::doc_state::deleted));
    BOOST_TEST(r.docs[1].doc.at("_rev").as_string() == "2-x");
}

BOOST_AUTO_TEST_CASE(malformed_replies_are_errors_not_guesses) {
    std::vector<std::string> const ids{"a"};
    BOOST_TEST(couch::parse_bulk_get("not json", ids).error.find("not a JSON object") != std::string::npos);
    BOOST_TEST(couch::parse_bulk_get(R"({"rows":[]})", ids).error.find("no \"results\"") != std::string::npos);
    BOOST_TEST(couch::parse_bulk_get(R"({"results":[]})", ids).error.find("0 results for 1 ids") !=
               std::string::npos);
    // A result for another id than asked: never attributed to the wrong document.
    BOOST_TEST(!couch::parse_bulk_get(R"({"results":[{"id":"b","docs":[{"ok":{"_id":"b"}}]}]})", ids).error.empty());
    // An error other than not_found (e.g. forbidden) is reported, not taken as missing.
    auto forbidden = couch::parse_bulk_get(
        R"({"results":[{"id":"a","docs":[{"error":{"id":"a","error":"forbidden","reason":"no"}}]}]})", ids);
    BOOST_TEST(forbidden.error.find("forbidden") != std::string::npos);
    BOOST_TEST(forbidden.docs.empty());
}

BOOST_AUTO_TEST_CASE(bad_url_is_refused_at_construction) {
    couch::client_config cfg;
    cfg.url = "ftp://example";
    BOOST_CHECK_THROW(couch::document_store{cfg}, std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(document_store_pouchdb)

BOOST_AUTO_TEST_CASE(found_deleted_missing_and_a_missing_database) {
    auto const url = test_support::couch_url();
    auto const db = test_support::unique_name("docstore");
    test_support::couch_create_db(url, db);
    auto rev1 = test_support::couch_put_doc(url, db, "live", {{"doc_type", "CommCareCase"}, {"v", 1}});
    auto rev2 = test_support::couch_put_doc(url, db, "live", {{"_rev", rev1}, {"doc_type", "CommCareCase"}, {"v", 2}});
    auto del_rev = test_support::couch_put_doc(url, db, "gone/1", {{"doc_type", "CommCareCase"}});
    test_support::couch_delete_doc(url, db, "gone/1", del_rev);

    couch::client_config cfg;
    cfg.url = url;
    couch::document_store store(cfg);
    auto r = store.fetch(db, {"live", "gone/1", "never", "live"});
    BOOST_TEST_REQUIRE(r.error == "");
    BOOST_REQUIRE(r.docs.size() == 4u);
    BOOST_TEST((r.docs[0].state == couch::doc_state::found));
    BOOST_TEST(r.docs[0].doc.at("_rev").as_string() == rev2); // the current revision
    BOOST_TEST(r.docs[0].doc.at("v").as_int64() == 2);
    BOOST_TEST((r.docs[1].state == couch::doc_state::deleted));
    BOOST_TEST((r.docs[2].state == couch::doc_state::missing));
    BOOST_TEST((r.docs[3].state == couch::doc_state::found));

    // The same connection again, then a database that does not exist.
    BOOST_TEST(store.fetch(db, {"live"}).docs.size() == 1u);
    auto missing_db = store.fetch(test_support::unique_name("no-such-db"), {"x"});
    BOOST_TEST(missing_db.error.find("does not exist (404") != std::string::npos, missing_db.error);
    BOOST_TEST(missing_db.docs.empty());
}

BOOST_AUTO_TEST_CASE(unreachable_server_is_an_error_value) {
    couch::client_config cfg;
    cfg.url = "http://user:s3cret-pw@127.0.0.1:1"; // nothing listens on port 1
    couch::document_store store(cfg, std::chrono::seconds(5));
    auto r = store.fetch("db", {"x"});
    BOOST_TEST(r.error.find("cannot connect") != std::string::npos, r.error);
    BOOST_TEST(r.error.find("s3cret-pw") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
