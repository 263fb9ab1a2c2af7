// The runtime admin API (/databases) of the real binary, against
// pouchdb-server and the real broker: every call, bad input that changes
// nothing, the bearer token, and state that survives SIGKILL.
#include "bridge_process.hpp"
#include "helpers.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

using namespace integration;

namespace {

struct api {
    unsigned short port;
    std::string token;
    test_support::http_result call(std::string const& method, std::string const& target,
                                   std::string const& auth = "default") const {
        std::string const header = auth == "default" ? (token.empty() ? "" : "Bearer " + token) : auth;
        return test_support::couch_request("http://127.0.0.1:" + std::to_string(port), method, target, {}, header);
    }
    json::object databases() const {
        auto r = call("GET", "/databases");
        BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
        return json::parse(r.body).at("databases").as_object();
    }
    std::string state_of(std::string const& db) const {
        json::object all;
        try {
            auto r = call("GET", "/databases");
            if (r.status != 200) {
                return "unavailable";
            }
            all = json::parse(r.body).at("databases").as_object();
        } catch (std::exception const&) {
            return "unavailable"; // not listening yet
        }
        auto const* d = all.if_contains(db);
        return d == nullptr ? std::string("absent") : std::string(d->at("state").as_string());
    }
};

// Waits until `db`'s state is `want` (through GET /databases).
bool wait_state(api const& a, std::string const& db, std::string const& want) {
    auto const deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (a.state_of(db) == want) {
            return true;
        }
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

} // namespace

BOOST_AUTO_TEST_SUITE(admin_api)

BOOST_AUTO_TEST_CASE(every_call_works_on_loopback_and_bad_input_changes_nothing) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db1 = test_support::unique_name("api-flag");
    auto const db2 = test_support::unique_name("api-added");
    test_support::couch_create_db(couch, db1);
    test_support::couch_create_db(couch, db2);
    put_case(db2, "a1");
    put_case(db2, "a2");
    auto const dir = test_support::make_temp_dir("api-ckpt");
    api a{test_support::free_port(), {}};
    auto bridge = start_bridge({{db1}, dir, real, {}}, a.port);
    BOOST_REQUIRE(wait_state(a, db1, "following"));
    auto const listed = a.databases();
    BOOST_TEST(listed.at(db1).at("origin").as_string() == "flag");
    BOOST_TEST(!listed.at(db1).at("owner").as_string().empty());
    BOOST_TEST(!listed.contains(db2));

    // PUT: follow it now.
    auto r = a.call("PUT", "/databases/" + db2);
    BOOST_TEST(r.status == 201u, r.body);
    auto got = wait_for_ids(real, db2, {"a1", "a2"});
    BOOST_TEST(got.count("a1") == 1u);
    BOOST_TEST(got.count("a2") == 1u);
    BOOST_TEST(a.call("PUT", "/databases/" + db2).status == 200u); // idempotent

    // pause: a new change stays unpublished; resume: it arrives.
    BOOST_TEST(a.call("POST", "/databases/" + db2 + "/pause").status == 200u);
    BOOST_REQUIRE(wait_state(a, db2, "paused"));
    put_case(db2, "a3");
    std::this_thread::sleep_for(2s);
    BOOST_TEST(ids_in_kafka(real, db2).count("a3") == 0u);
    BOOST_TEST(a.call("POST", "/databases/" + db2 + "/resume").status == 200u);
    got = wait_for_ids(real, db2, {"a3"});
    BOOST_TEST(got.count("a3") == 1u);

    // rewind to 0: everything again (at-least-once duplicates, on purpose).
    BOOST_TEST(a.call("POST", "/databases/" + db2 + "/rewind?since=0").status == 200u);
    auto const deadline = std::chrono::steady_clock::now() + 90s;
    while (ids_in_kafka(real, db2).count("a1") < 2 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(300ms);
    }
    got = ids_in_kafka(real, db2);
    BOOST_TEST(got.count("a1") == 2u);
    BOOST_TEST(got.count("a3") == 2u);

    // Bad input: 4xx with a JSON error, and nothing changes.
    auto const before = a.databases();
    r = a.call("PUT", "/databases/Bad%20Name");
    BOOST_TEST(r.status == 400u);
    BOOST_TEST(json::parse(r.body).at("error").as_string() == "bad_request");
    BOOST_TEST(a.call("POST", "/databases/" + test_support::unique_name("unknown") + "/pause").status == 404u);
    BOOST_TEST(a.call("POST", "/databases/" + db2 + "/rewind?since=not-a-seq").status == 400u);
    BOOST_TEST(a.call("POST", "/databases/" + db2 + "/rewind").status == 400u);
    BOOST_TEST(a.call("POST", "/databases/" + db2 + "/explode").status == 404u);
    BOOST_TEST(a.call("PATCH", "/databases/" + db2).status == 405u);
    auto const after = a.databases();
    BOOST_TEST(after.size() == before.size());
    BOOST_TEST(after.at(db2).at("desired") == before.at(db2).at("desired"));

    // DELETE: stop following, keep the checkpoint.
    BOOST_TEST(a.call("DELETE", "/databases/" + db2).status == 200u);
    BOOST_REQUIRE(wait_state(a, db2, "removed"));
    BOOST_TEST(!a.databases().at(db2).at("checkpoint").is_null());
    put_case(db2, "a4");
    std::this_thread::sleep_for(2s);
    BOOST_TEST(ids_in_kafka(real, db2).count("a4") == 0u);
    BOOST_TEST(a.call("DELETE", "/databases/" + db2).status == 404u);
    BOOST_TEST(stop(*bridge) == 0);
}

BOOST_AUTO_TEST_CASE(with_a_token_every_admin_call_needs_it_and_the_rest_stays_open) {
    auto const couch = test_support::couch_url();
    auto const db = test_support::unique_name("api-token");
    test_support::couch_create_db(couch, db);
    auto const dir = test_support::make_temp_dir("api-token-ckpt");
    api a{test_support::free_port(), "t0ken-for-the-test"};
    auto bridge = start_bridge({{}, dir, "embedded", {"--admin-token", a.token}}, a.port);
    BOOST_REQUIRE(wait_for_log(dir + ".log", "metrics on http://"));
    BOOST_REQUIRE(wait_state(a, "anything", "absent")); // listening
    BOOST_TEST(a.call("GET", "/databases", "").status == 401u);
    BOOST_TEST(a.call("GET", "/databases", "Bearer wrong-token-for-the-test").status == 401u);
    BOOST_TEST(a.call("GET", "/databases", "Bearer t0ken-for-the-tes").status == 401u); // a prefix is not enough
    BOOST_TEST(a.call("PUT", "/databases/" + db, "").status == 401u);
    BOOST_TEST(a.databases().empty()); // the refused PUT changed nothing
    BOOST_TEST(a.call("PUT", "/databases/" + db).status == 201u);
    BOOST_TEST(a.databases().contains(db));
    for (auto const* open : {"/metrics", "/healthz", "/status"}) {
        BOOST_TEST(a.call("GET", open, "").status == 200u, open);
    }
    BOOST_TEST(stop(*bridge) == 0);
    BOOST_TEST(read_log(dir + ".log").find(a.token) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(paused_and_added_databases_survive_sigkill) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db1 = test_support::unique_name("api-paused");
    auto const db2 = test_support::unique_name("api-kept");
    test_support::couch_create_db(couch, db1);
    test_support::couch_create_db(couch, db2);
    auto const dir = test_support::make_temp_dir("api-kill-ckpt");
    api a{test_support::free_port(), {}};
    auto first = start_bridge({{db1}, dir, real, {}}, a.port);
    BOOST_REQUIRE(wait_state(a, db1, "following"));
    BOOST_TEST(a.call("PUT", "/databases/" + db2).status == 201u);
    BOOST_TEST(a.call("POST", "/databases/" + db1 + "/pause").status == 200u);
    BOOST_REQUIRE(wait_state(a, db1, "paused"));
    first->signal(SIGKILL);
    first->wait_for_exit(30s);

    a.port = test_support::free_port();
    auto second = start_bridge({{db1}, dir, real, {}}, a.port);
    BOOST_REQUIRE(wait_state(a, db2, "following"));
    BOOST_TEST(a.state_of(db1) == "paused");
    put_case(db2, "k1");
    put_case(db1, "p1");
    auto const got = wait_for_ids(real, db2, {"k1"});
    BOOST_TEST(got.count("k1") == 1u);
    BOOST_TEST(ids_in_kafka(real, db1).count("p1") == 0u);
    BOOST_TEST(a.call("POST", "/databases/" + db1 + "/resume").status == 200u);
    BOOST_TEST(wait_for_ids(real, db1, {"p1"}).count("p1") == 1u);
    BOOST_TEST(stop(*second) == 0);
}

BOOST_AUTO_TEST_CASE(per_database_filters_through_the_api) {
    auto const couch = test_support::couch_url();
    auto const real = test_support::kafka_brokers();
    auto const db = test_support::unique_name("api-filter");
    test_support::couch_create_db(couch, db);
    for (auto const* id : {"x1", "x2", "x3"}) {
        put_case(db, id);
    }
    test_support::couch_put_doc(couch, db, "f1", {{"doc_type", "XFormInstance"}, {"domain", "demo"}});
    auto const dir = test_support::make_temp_dir("api-filter-ckpt");
    api a{test_support::free_port(), {}};
    auto bridge = start_bridge({{}, dir, real, {}}, a.port);
    BOOST_REQUIRE(wait_state(a, "anything", "absent"));
    auto const url = "http://127.0.0.1:" + std::to_string(a.port);
    // Bad options: 400, nothing changes.
    for (auto const* bad : {R"({"doc_ids":"x1"})", R"({"selector":{},"filter":"a/b"})", R"({"colour":"red"})", "[1]"}) {
        auto r = test_support::couch_request(url, "PUT", "/databases/" + db, bad);
        BOOST_TEST(r.status == 400u, bad << ": " << r.body);
    }
    BOOST_TEST(!a.databases().contains(db));
    // Only x1 and x3 (server-side), then only cases (client-side) of those.
    auto r = test_support::couch_request(url, "PUT", "/databases/" + db,
                                         R"({"doc_ids":["x1","x3","f1"],"include_doc_types":["CommCareCase"]})");
    BOOST_TEST(r.status == 201u, r.body);
    auto const got = wait_for_ids(real, db, {"x1", "x3"});
    BOOST_REQUIRE(wait_state(a, db, "following"));
    BOOST_TEST(a.databases().at(db).at("options").at("doc_ids").as_array().size() == 3u);
    std::this_thread::sleep_for(1s);
    auto const all = ids_in_kafka(real, db);
    BOOST_TEST(all.count("x1") == 1u);
    BOOST_TEST(all.count("x3") == 1u);
    BOOST_TEST(all.count("x2") == 0u); // filtered by CouchDB
    BOOST_TEST(all.count("f1") == 0u); // filtered by doc type
    BOOST_TEST(stop(*bridge) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
