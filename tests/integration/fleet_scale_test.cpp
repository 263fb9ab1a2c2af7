// Issue 11's fleet test: 1,000 databases on a source that behaves like a
// default CouchDB under load. bench-source stands in for it with a cap of
// 50 continuous feeds open at once: beyond it, a feed is answered
// `500 {"error":"emfile",...}`, as a CouchDB out of file handles answers.
// The real binary follows the databases by pattern (`_all_dbs`, then
// `_db_updates`) with --max-open-feeds 50, into the real broker.
//
// Counted on the server's side, which is what the cap protects:
// - no feed was ever refused, and no more than the cap were open at once
//   (a bridge that opens one feed too many meets emfile and fails this);
// - while idle, the bridge holds at most --max-open-feeds + its client's
//   pool of kept connections (32) to the source.
// And every change reaches Kafka: three per database at the start, then one
// written to every database once they are all idle (each must wake and
// reopen through `_db_updates`, 50 at a time).
#include "bridge_process.hpp"
#include "helpers.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

using namespace integration;

namespace {

constexpr int databases = 1000;
constexpr int cap = 50;
constexpr std::int64_t pool_size = 32; // couch::client_options::max_kept

std::string bench_source_binary() {
    char const* b = std::getenv("CKB_BENCH_SOURCE_BINARY");
    if (b == nullptr || *b == '\0') {
        throw std::runtime_error("CKB_BENCH_SOURCE_BINARY is not set: run this test through ctest");
    }
    return b;
}

json::object source_stats(std::string const& url) {
    auto r = test_support::couch_request(url, "GET", "/_bench/stats");
    BOOST_REQUIRE_EQUAL(r.status, 200u);
    return json::parse(r.body).as_object();
}

std::int64_t stat(json::object const& s, char const* name) { return s.at(name).to_number<std::int64_t>(); }

// The databases of `prefix` whose checkpoint is `seq` (bench-source's
// integer seqs), and how many feeds are open and idle.
struct fleet_view {
    std::size_t at_seq = 0;
    std::size_t open = 0;
    std::size_t idle = 0;
};

fleet_view view(unsigned short port, std::string const& seq) {
    fleet_view v;
    for (auto const& [name, d] : databases_of(port)) {
        auto const& c = d.at("checkpoint");
        v.at_seq += c.is_string() && c.as_string() == seq ? 1 : 0;
        v.open += d.at("feed").as_string() == "open" ? 1 : 0;
        v.idle += d.at("feed").as_string() == "idle" ? 1 : 0;
    }
    return v;
}

bool wait_for_checkpoints(unsigned short port, std::string const& seq, std::chrono::seconds limit) {
    auto const deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (view(port, seq).at_seq == static_cast<std::size_t>(databases)) {
            return true;
        }
        std::this_thread::sleep_for(500ms);
    }
    return false;
}

} // namespace

BOOST_AUTO_TEST_SUITE(fleet_scale)

BOOST_AUTO_TEST_CASE(a_thousand_databases_under_a_feed_cap_never_meet_emfile_and_lose_nothing) {
    auto const real = test_support::kafka_brokers();
    auto const prefix = test_support::unique_name("fleet");
    auto const dir = test_support::make_temp_dir("fleet-scale");
    auto const port_file = dir + ".source-port";
    test_support::child_process source(bench_source_binary(),
                                       {"--databases", std::to_string(databases), "--changes", "3", "--db-prefix",
                                        prefix + "-", "--deleted-permille", "0", "--max-open-feeds",
                                        std::to_string(cap), "--port-file", port_file},
                                       dir + ".source.log");
    auto const listening = std::chrono::steady_clock::now() + 30s;
    while (!std::filesystem::exists(port_file) && std::chrono::steady_clock::now() < listening) {
        std::this_thread::sleep_for(50ms);
    }
    BOOST_REQUIRE(std::filesystem::exists(port_file));
    auto const source_url = "http://127.0.0.1:" + test_support::read_file(port_file).substr(
                                                      0, test_support::read_file(port_file).find('\n'));

    auto const port = test_support::free_port();
    auto bridge = start_bridge({{},
                                dir,
                                real,
                                {"--db-pattern", prefix + "-.*", "--max-open-feeds", std::to_string(cap),
                                 "--idle-close", "1000"}},
                               port, source_url);

    // 1. Every database's three changes are acknowledged (the checkpoint
    //    moves only over acknowledged changes), 50 feeds at a time.
    BOOST_TEST_REQUIRE(wait_for_checkpoints(port, "3", 240s), "not every database reached its third change");

    // 2. Idle: every feed beyond the cap closes. The connections the source
    //    sees, sampled for 3 s.
    auto const idle_deadline = std::chrono::steady_clock::now() + 60s;
    fleet_view idle_view;
    while (std::chrono::steady_clock::now() < idle_deadline) {
        idle_view = view(port, "3");
        if (idle_view.idle >= static_cast<std::size_t>(databases - cap)) {
            break;
        }
        std::this_thread::sleep_for(200ms);
    }
    BOOST_TEST(idle_view.idle >= static_cast<std::size_t>(databases - cap));
    BOOST_TEST(idle_view.open <= static_cast<std::size_t>(cap));
    std::int64_t most_idle_connections = 0;
    for (int i = 0; i < 30; ++i) {
        // Minus this request's own connection.
        most_idle_connections =
            std::max(most_idle_connections, stat(source_stats(source_url), "open_connections") - 1);
        std::this_thread::sleep_for(100ms);
    }
    BOOST_TEST_MESSAGE("idle: " << idle_view.open << " feeds open, " << idle_view.idle << " idle, at most "
                                << most_idle_connections << " connections to the source");
    BOOST_TEST(most_idle_connections <= cap + pool_size);
    BOOST_TEST(most_idle_connections > 0);

    // 3. A change to every database, all idle or nearly: each one wakes
    //    through _db_updates and opens again, at most 50 at a time.
    std::map<std::string, std::string> written; // db -> id of its new change
    for (int i = 0; i < databases; ++i) {
        char name[16];
        std::snprintf(name, sizeof name, "%04d", i);
        auto const db = prefix + "-" + name;
        auto r = test_support::couch_request(source_url, "POST", "/_bench/write?db=" + test_support::url_encode(db));
        BOOST_REQUIRE_EQUAL(r.status, 200u);
        written[db] = std::string(json::parse(r.body).at("ids").as_array().at(0).as_string());
    }
    BOOST_TEST_REQUIRE(wait_for_checkpoints(port, "4", 240s), "not every database reached its written change");

    // 4. In Kafka: the four changes of every database, the written one
    //    among them.
    std::map<std::string, std::set<std::string>> in_kafka;
    for (auto& r : test_support::consume_all(real, commcare_topics, 120s)) {
        auto const db = r.header("database");
        if (db.starts_with(prefix + "-")) {
            in_kafka[db].insert(r.key);
        }
    }
    int missing_written = 0, short_dbs = 0;
    for (auto const& [db, id] : written) {
        missing_written += in_kafka[db].count(id) == 0 ? 1 : 0;
        short_dbs += in_kafka[db].size() < 4 ? 1 : 0;
    }
    BOOST_TEST(in_kafka.size() == static_cast<std::size_t>(databases));
    BOOST_TEST(missing_written == 0);
    BOOST_TEST(short_dbs == 0);

    // 5. The cap, as the source counted it.
    auto const s = source_stats(source_url);
    BOOST_TEST_MESSAGE("source: " << json::serialize(s));
    BOOST_TEST(stat(s, "emfile_refusals") == 0);
    BOOST_TEST(stat(s, "peak_open_feeds") <= cap);
    BOOST_TEST(stat(s, "peak_open_feeds") > 0);
    BOOST_TEST(stat(s, "db_updates_seq") == databases);

    BOOST_TEST(stop(*bridge) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
