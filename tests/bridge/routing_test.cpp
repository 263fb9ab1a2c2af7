#include "bridge/routing.hpp"
#include "tests/bridge/strict_reader.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json/object.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <fstream>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace bridge {
// How Boost.Test prints a skip_reason in failed assertions (found by ADL).
inline std::ostream& boost_test_print_type(std::ostream& os, skip_reason r) {
    return os << to_string(r);
}
} // namespace bridge

namespace {

bridge::timestamp const now{};

couch::row make_row(std::string id, std::optional<std::string> doc_type, bool deleted = false) {
    couch::row r;
    r.id = std::move(id);
    r.deleted = deleted;
    r.revs = {"1-abc"};
    boost::json::object doc;
    doc["_id"] = r.id;
    doc["_rev"] = "1-abc";
    if (doc_type) {
        doc["doc_type"] = *doc_type;
    }
    if (deleted) {
        doc["_deleted"] = true;
    }
    r.has_doc = true;
    r.doc = couch::doc_fields::from_object(doc);
    return r;
}

bridge::router::decision route(bridge::router const& r, couch::row const& row) {
    return r.route(row, bridge::make_change_meta(row, "db", now));
}

std::string topic_for(bridge::router const& r, std::string const& doc_type) {
    auto const d = route(r, make_row("doc-1", doc_type));
    BOOST_TEST(d.skipped == bridge::skip_reason::none);
    return std::string(d.topic);
}

bridge::router commcare(bridge::routing_options o = {}) {
    return bridge::router::from_spec("commcare", std::move(o));
}

std::string write_routing_file(std::string const& content) {
    static std::string const dir = test_support::make_temp_dir("routing-test");
    static int n = 0;
    auto const path = dir + "/routes-" + std::to_string(++n) + ".json";
    std::ofstream(path, std::ios::binary) << content;
    return path;
}

// The message from_spec throws for a routing file with `content`.
std::string file_error(std::string const& content) {
    auto const path = write_routing_file(content);
    try {
        bridge::router::from_spec(path, {});
    } catch (std::invalid_argument const& e) {
        std::string const what = e.what();
        BOOST_TEST(what.find(path) != std::string::npos, "message does not name the file: " << what);
        return what;
    }
    return "accepted";
}

couch::row const& recorded_row(std::string const& file, std::size_t number, std::string const& id) {
    static std::vector<std::pair<std::string, std::vector<couch::row>>> cache;
    auto it = std::find_if(cache.begin(), cache.end(), [&](auto const& e) { return e.first == file; });
    if (it == cache.end()) {
        cache.emplace_back(file, bridge_test::load_rows(file));
        it = cache.end() - 1;
    }
    BOOST_TEST_REQUIRE(it->second.size() >= number);
    auto const& row = it->second[number - 1];
    BOOST_TEST_REQUIRE(row.id == id);
    return row;
}

} // namespace

BOOST_AUTO_TEST_SUITE(routing)

BOOST_AUTO_TEST_CASE(commcare_profile_follows_hq_topics) {
    auto const r = commcare();
    std::vector<std::pair<std::string, std::string>> const expected{
        {"CommCareCase", "case"},
        {"CommCareCase-Deleted", "case"},
        {"XFormInstance", "form"},
        {"XFormArchived", "form"},
        {"XFormDeprecated", "form"},
        {"XFormDuplicate", "form"},
        {"XFormError", "form"},
        {"SubmissionErrorLog", "form"},
        {"XFormInstance-Deleted", "form"},
        {"XFormArchived-Deleted", "form"},
        {"XFormDeprecated-Deleted", "form"},
        {"XFormDuplicate-Deleted", "form"},
        {"XFormError-Deleted", "form"},
        {"SubmissionErrorLog-Deleted", "form"},
        {"HQSubmission", "form"},
        {"Domain", "domain"},
        {"Domain-Deleted", "domain"},
        {"Domain-DUPLICATE", "domain"},
        {"CommCareUser", "commcare-user"},
        {"CommCareUser-Deleted", "commcare-user"},
        {"WebUser", "web-user"},
        {"WebUser-Deleted", "web-user"},
        {"Group", "group"},
        {"Group-Deleted", "group"},
        {"SyncLog", "synclog-sql"},
        {"SimplifiedSyncLog", "synclog-sql"},
        {"Application", "app"},
        {"Application-Deleted", "app"},
        {"LinkedApplication", "app"},
        {"LinkedApplication-Deleted", "app"},
        {"RemoteApp", "app"},
        {"RemoteApp-Deleted", "app"},
        {"Location", "location"},
        // a doc type that is itself a topic name goes to that topic
        {"ledger", "ledger"},
        {"sms", "sms"},
        {"case-sql", "case-sql"},
        {"form-sql", "form-sql"},
        {"meta", "meta"},
        {"case", "case"},
        // anything else: meta
        {"CommCareBuild", "meta"},
        {"commcarecase", "meta"},
        {"Location-Deleted", "meta"},
        {"Ledger", "meta"},
    };
    for (auto const& [doc_type, topic] : expected) {
        BOOST_TEST(topic_for(r, doc_type) == topic, doc_type);
    }
    BOOST_TEST(r.description() == "commcare");
    BOOST_TEST(r.default_topic() == "meta");
}

BOOST_AUTO_TEST_CASE(default_topic_replaces_only_the_meta_fallback) {
    auto const r = commcare({.default_topic = "hq-other"});
    BOOST_TEST(topic_for(r, "CommCareBuild") == "hq-other");
    BOOST_TEST(topic_for(r, "CommCareCase") == "case");
    // "meta" as a doc type is a topic name: it keeps its topic.
    BOOST_TEST(topic_for(r, "meta") == "meta");
    BOOST_TEST(r.default_topic() == "hq-other");
    BOOST_CHECK_THROW(commcare({.default_topic = "bad topic"}), std::invalid_argument);
    BOOST_CHECK_THROW(commcare({.default_topic = ""}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(recorded_rows_route_as_documented) {
    auto const r = commcare();
    auto const file = std::string("couchdb-3.4.3/03b_changes_include_docs.http");
    BOOST_TEST(route(r, recorded_row(file, 1, "57533aa9fdcc490185998d7a47b407dd")).topic == "form");
    BOOST_TEST(route(r, recorded_row(file, 2, "97ce7c4fb05742a7bcfa5c0ce2a4fced")).topic == "domain");
    BOOST_TEST(route(r, recorded_row(file, 3, "241a8987881b4a7f98408d5c6153e4aa")).topic == "case");
    BOOST_TEST(route(r, recorded_row(file, 4, "4a72a3944faa42d5905b1973f523acaf")).topic == "commcare-user");
    BOOST_TEST(route(r, recorded_row(file, 7, "768540dd93bb44ec8105527c48dc7911")).topic == "case");
}

BOOST_AUTO_TEST_CASE(design_docs_are_skipped_unless_asked_for) {
    auto const& ddoc = recorded_row("couchdb-3.4.3/03b_changes_include_docs.http", 6, "_design/x");
    auto const skipped = route(commcare(), ddoc);
    BOOST_TEST(skipped.skipped == bridge::skip_reason::design_doc);
    BOOST_TEST(skipped.topic.empty());

    auto const routed = route(commcare({.route_design_docs = true}), ddoc);
    BOOST_TEST(routed.skipped == bridge::skip_reason::none);
    BOOST_TEST(routed.topic == "meta");
    BOOST_TEST(route(commcare({.default_topic = "ddocs", .route_design_docs = true}), ddoc).topic == "ddocs");
    // route_missing_doc_type alone does not publish design docs
    BOOST_TEST(route(commcare({.route_missing_doc_type = true}), ddoc).skipped == bridge::skip_reason::design_doc);
    // a deleted design document is still a design document
    auto const& gone = recorded_row("bridge/extra_rows.jsonl", 7, "_design/gone");
    BOOST_TEST(route(commcare(), gone).skipped == bridge::skip_reason::design_doc);
    BOOST_TEST(route(commcare({.route_design_docs = true}), gone).topic == "meta");
}

BOOST_AUTO_TEST_CASE(docs_without_doc_type_are_skipped_unless_asked_for) {
    auto const& row =
        recorded_row("couchdb-3.4.3/03b_changes_include_docs.http", 5, "33cb4085b137429b95beaf14195eeed6");
    BOOST_TEST(route(commcare(), row).skipped == bridge::skip_reason::missing_doc_type);
    BOOST_TEST(route(commcare(), row).topic.empty());
    auto const routed = route(commcare({.default_topic = "untyped", .route_missing_doc_type = true}), row);
    BOOST_TEST(routed.skipped == bridge::skip_reason::none);
    BOOST_TEST(routed.topic == "untyped");
    // an empty or non-string doc_type counts as missing; so does a row without a doc
    for (std::size_t n : {5u, 6u, 8u}) {
        auto const odd = bridge_test::load_rows("bridge/extra_rows.jsonl").at(n - 1);
        BOOST_TEST(route(commcare(), odd).skipped == bridge::skip_reason::missing_doc_type, odd.id);
    }
}

BOOST_AUTO_TEST_CASE(hard_deletes_go_to_the_default_topic_and_are_never_skipped) {
    auto const& tombstone =
        recorded_row("couchdb-3.4.3/05c_continuous_since_now_live_writes.http", 5, "3a7ecbb47e20407f8223444c73f2743e");
    auto const meta = bridge::make_change_meta(tombstone, "hq", now);
    BOOST_TEST(!meta.document_type.has_value());
    BOOST_TEST(meta.is_deletion);
    auto const d = commcare().route(tombstone, meta);
    BOOST_TEST(d.skipped == bridge::skip_reason::none);
    BOOST_TEST(d.topic == "meta");
    BOOST_TEST(route(commcare({.default_topic = "deletions"}), tombstone).topic == "deletions");
    BOOST_TEST(route(bridge::router::from_spec("prefix:hq-", {}), tombstone).topic == "meta");

    // without include_docs (recording 14c): no doc at all, still a deletion
    auto const& bare = recorded_row("couchdb-3.4.3/14c_changes_q1.http", 8, "doc-05");
    BOOST_TEST(route(commcare(), bare).topic == "meta");
    // a deleted doc that kept its doc_type routes by it
    BOOST_TEST(route(commcare(), make_row("u", "WebUser", true)).topic == "web-user");
}

BOOST_AUTO_TEST_CASE(known_topics_cover_every_commcare_destination) {
    auto const topics = commcare({.default_topic = "other"}).known_topics();
    for (auto const* t : {"case", "form", "domain", "commcare-user", "web-user", "group", "synclog-sql", "app",
                          "location", "meta", "ledger", "sms", "case-sql", "form-sql", "other"}) {
        BOOST_TEST((std::find(topics.begin(), topics.end(), t) != topics.end()), t);
    }
    BOOST_TEST(std::is_sorted(topics.begin(), topics.end()));
    BOOST_TEST((std::adjacent_find(topics.begin(), topics.end()) == topics.end()));
    BOOST_TEST(topics.size() == 15u);
}

BOOST_AUTO_TEST_CASE(topic_name_rules) {
    BOOST_TEST(bridge::topic_name_problem("case").empty());
    BOOST_TEST(bridge::topic_name_problem("a.b_c-D9").empty());
    BOOST_TEST(bridge::topic_name_problem(std::string(249, 'x')).empty());
    BOOST_TEST(!bridge::topic_name_problem(std::string(250, 'x')).empty());
    BOOST_TEST(!bridge::topic_name_problem("").empty());
    BOOST_TEST(!bridge::topic_name_problem(".").empty());
    BOOST_TEST(!bridge::topic_name_problem("..").empty());
    BOOST_TEST(bridge::topic_name_problem("...").empty());
    for (auto const* bad : {"a b", "a/b", "a:b", "caf\xc3\xa9", "a\nb", "a*"}) {
        BOOST_TEST(!bridge::topic_name_problem(bad).empty(), bad);
    }
    BOOST_TEST(bridge::to_string(bridge::skip_reason::none) == "none");
    BOOST_TEST(bridge::to_string(bridge::skip_reason::design_doc) == "design_doc");
    BOOST_TEST(bridge::to_string(bridge::skip_reason::missing_doc_type) == "missing_doc_type");
}

BOOST_AUTO_TEST_CASE(prefix_mode_builds_prefix_plus_doc_type) {
    auto const r = bridge::router::from_spec("prefix:hq.", {});
    BOOST_TEST(r.description() == "prefix:hq.");
    BOOST_TEST(topic_for(r, "CommCareCase") == "hq.CommCareCase");
    BOOST_TEST(topic_for(r, "XFormInstance-Deleted") == "hq.XFormInstance-Deleted");
    // the same doc_type returns the same cached string
    auto const a = route(r, make_row("a", "CommCareCase")).topic;
    auto const b = route(r, make_row("b", "CommCareCase")).topic;
    BOOST_TEST((a.data() == b.data()));
    BOOST_TEST(r.stats().sanitized_doc_types == 0u);
    // illegal characters become '_' byte by byte ('ü' is two bytes)
    BOOST_TEST(topic_for(r, "My Type/\xc3\xbc") == "hq.My_Type___");
    BOOST_TEST(r.stats().sanitized_doc_types == 1u);
    BOOST_TEST(topic_for(r, "My Type/\xc3\xbc") == "hq.My_Type___");
    BOOST_TEST(r.stats().sanitized_doc_types == 1u); // counted once per distinct doc_type
    // cut to Kafka's 249 characters
    auto const long_topic = topic_for(r, std::string(400, 'L'));
    BOOST_TEST(long_topic.size() == 249u);
    BOOST_TEST(bridge::topic_name_problem(long_topic).empty());
    BOOST_TEST(r.stats().sanitized_doc_types == 2u);
    // "." + "." would be "..", which Kafka rejects
    BOOST_TEST(bridge::topic_name_problem(topic_for(bridge::router::from_spec("prefix:.", {}), ".")).empty());

    auto const topics = r.known_topics();
    for (auto const* t : {"meta", "hq.CommCareCase", "hq.XFormInstance-Deleted", "hq.My_Type___"}) {
        BOOST_TEST((std::find(topics.begin(), topics.end(), t) != topics.end()), t);
    }
    // skip rules apply in prefix mode too
    BOOST_TEST(route(r, make_row("_design/x", std::nullopt)).skipped == bridge::skip_reason::design_doc);
    BOOST_TEST(route(r, make_row("plain", std::nullopt)).skipped == bridge::skip_reason::missing_doc_type);
}

BOOST_AUTO_TEST_CASE(prefix_spec_errors) {
    BOOST_CHECK_THROW(bridge::router::from_spec("prefix:", {}), std::invalid_argument);
    BOOST_CHECK_THROW(bridge::router::from_spec("prefix:bad prefix", {}), std::invalid_argument);
    BOOST_CHECK_THROW(bridge::router::from_spec("prefix:" + std::string(249, 'p'), {}), std::invalid_argument);
    BOOST_CHECK_THROW(bridge::router::from_spec("", {}), std::invalid_argument);
    try {
        bridge::router::from_spec("prefix:a/b", {});
        BOOST_FAIL("accepted");
    } catch (std::invalid_argument const& e) {
        BOOST_TEST(std::string(e.what()).find("prefix:a/b") != std::string::npos, e.what());
    }
}

BOOST_AUTO_TEST_CASE(prefix_cache_is_bounded) {
    auto const r = bridge::router::from_spec("prefix:p-", {.default_topic = "overflow"});
    for (std::size_t i = 0; i < bridge::router::prefix_cache_limit; ++i) {
        auto const t = topic_for(r, "T" + std::to_string(i));
        if (t != "p-T" + std::to_string(i)) {
            BOOST_TEST(t == "p-T" + std::to_string(i));
            break;
        }
    }
    BOOST_TEST(r.stats().prefix_overflow_routes == 0u);
    BOOST_TEST(topic_for(r, "one-too-many") == "overflow");
    BOOST_TEST(r.stats().prefix_overflow_routes == 1u);
    BOOST_TEST(topic_for(r, "T7") == "p-T7"); // known doc types keep their topic
}

BOOST_AUTO_TEST_CASE(prefix_mode_is_safe_from_many_threads) {
    auto const r = bridge::router::from_spec("prefix:t.", {});
    constexpr int threads = 4;
    constexpr int per_thread = 2000;
    std::vector<std::vector<std::string_view>> seen(threads);
    {
        std::vector<std::jthread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&r, &seen, t] {
                for (int i = 0; i < per_thread; ++i) {
                    auto const row = make_row("d", "Type" + std::to_string(i % 97));
                    seen[static_cast<std::size_t>(t)].push_back(route(r, row).topic);
                }
            });
        }
    }
    for (int t = 0; t < threads; ++t) {
        for (int i = 0; i < per_thread; ++i) {
            auto const got = seen[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)];
            if (got != "t.Type" + std::to_string(i % 97)) {
                BOOST_TEST(got == "t.Type" + std::to_string(i % 97));
                return;
            }
            // one string per doc_type, shared by every thread
            BOOST_TEST_REQUIRE((got.data() == seen[0][static_cast<std::size_t>(i)].data()));
        }
    }
    BOOST_TEST(r.known_topics().size() == 98u); // 97 doc types + meta
}

BOOST_AUTO_TEST_CASE(topics_stay_valid_when_the_router_moves) {
    auto r = commcare();
    auto const t = route(r, make_row("c", "CommCareCase")).topic;
    auto moved = std::move(r);
    BOOST_TEST(t == "case");
    BOOST_TEST((route(moved, make_row("c", "CommCareCase")).topic.data() == t.data()));
}

BOOST_AUTO_TEST_CASE(file_mode_routes_by_table_and_default) {
    auto const path = write_routing_file(R"({
        "routes": {"CommCareCase": "cases", "XFormInstance": "forms.v2", "Weird Type": "weird"},
        "default": "rest"
    })");
    auto const r = bridge::router::from_spec(path, {.default_topic = "ignored-when-file-has-default"});
    BOOST_TEST(r.description() == "file:" + path);
    BOOST_TEST(topic_for(r, "CommCareCase") == "cases");
    BOOST_TEST(topic_for(r, "XFormInstance") == "forms.v2");
    BOOST_TEST(topic_for(r, "Weird Type") == "weird");
    BOOST_TEST(topic_for(r, "Domain") == "rest");
    BOOST_TEST(r.default_topic() == "rest");
    BOOST_TEST((r.known_topics() == std::vector<std::string>{"cases", "forms.v2", "rest", "weird"}));
    BOOST_TEST(route(r, make_row("_design/a", std::nullopt)).skipped == bridge::skip_reason::design_doc);

    // without "default", --default-topic applies; an empty table is allowed
    auto const plain =
        bridge::router::from_spec(write_routing_file("{\"routes\": {}}\n\n"), {.default_topic = "dflt"});
    BOOST_TEST(topic_for(plain, "CommCareCase") == "dflt");
    BOOST_TEST((plain.known_topics() == std::vector<std::string>{"dflt"}));
}

BOOST_AUTO_TEST_CASE(invalid_routing_files_fail_naming_the_entry) {
    auto contains = [](std::string const& what, std::string const& needle) {
        BOOST_TEST(what.find(needle) != std::string::npos, "'" << needle << "' not in: " << what);
    };
    contains(file_error(R"({"routes": {"CommCareCase": 7}})"),
             R"(routes."CommCareCase": the topic must be a string, got a number)");
    contains(file_error(R"({"routes": {"A": "ok", "Group": null}})"),
             R"(routes."Group": the topic must be a string, got null)");
    contains(file_error(R"({"routes": {"Group": ["g"]}})"),
             R"(routes."Group": the topic must be a string, got an array)");
    contains(file_error(R"({"routes": {"Group": ""}})"), R"(routes."Group": invalid topic "")");
    contains(file_error(R"({"routes": {"Group": "has space"}})"), R"(routes."Group": invalid topic "has space")");
    contains(file_error(R"({"routes": {"Group": ".."}})"), R"(routes."Group": invalid topic "..")");
    contains(file_error(R"({"routes": {"Group": "."}})"), R"(routes."Group": invalid topic ".")");
    contains(file_error(R"({"routes": {"Group": ")" + std::string(250, 'x') + R"("}})"),
             R"(routes."Group": invalid topic)");
    contains(file_error(R"({"routes": {"Group": "caf\u00e9"}})"), R"(routes."Group": invalid topic "café")");
    contains(file_error(R"({"routes": {"": "t"}})"), R"(routes."": the doc_type must not be empty)");
    contains(file_error(R"({"routes": {"Group": "a", "Group": "b"}})"), R"(key routes."Group" appears more than once)");
    contains(file_error(R"({"routes": {}, "routes": {}})"), R"(key "routes" appears more than once)");
    contains(file_error(R"({"routes": {}, "default": 3})"), R"("default": the topic must be a string, got a number)");
    contains(file_error(R"({"routes": {}, "default": "no/slash"})"), R"("default": invalid topic "no/slash")");
    contains(file_error(R"({"routes": {}, "defualt": "x"})"), R"(unknown key "defualt")");
    contains(file_error(R"({"default": "x"})"), R"(missing "routes")");
    contains(file_error(R"({"routes": ["CommCareCase"]})"), R"("routes" must be an object)");
    contains(file_error(R"(["routes"])"), "expected a JSON object");
    contains(file_error("{\"routes\": {\n  \"A\": \"a\",\n  \"B\": }\n}"), "invalid JSON at line 3, column 8");
    contains(file_error(""), "invalid JSON at line 1");
    contains(file_error("{\"routes\": {}}\n{}"), "invalid JSON at line 2, column 1");
    try {
        bridge::router::from_spec(test_support::make_temp_dir("routing-dir"), {});
        BOOST_FAIL("a directory was accepted");
    } catch (std::invalid_argument const& e) {
        contains(e.what(), "is a directory");
    }
    try {
        bridge::router::from_spec(test_support::make_temp_dir("routing-none") + "/missing.json", {});
        BOOST_FAIL("a missing file was accepted");
    } catch (std::invalid_argument const& e) {
        contains(e.what(), "missing.json': cannot open it");
    }
}

BOOST_AUTO_TEST_SUITE_END()
