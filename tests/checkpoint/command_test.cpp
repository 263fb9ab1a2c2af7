#include "checkpoint/command.hpp"

#include "checkpoint/store.hpp"
#include "tests/support/test_env.hpp"

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <sstream>

namespace ck = checkpoint;
using namespace std::chrono_literals;

namespace {

std::chrono::system_clock::time_point const t0{std::chrono::milliseconds(1'700'000'000'000)};

struct result {
    int code;
    std::string out;
    std::string err;
};

result run(std::string const& dir, std::vector<std::string> args, std::chrono::system_clock::time_point now = t0) {
    std::ostringstream out;
    std::ostringstream err;
    int code = ck::run_checkpoints_command(dir, args, out, err, [now] { return now; });
    BOOST_TEST_MESSAGE("checkpoints exit " << code << "\nout:\n" << out.str() << "err:\n" << err.str());
    return {code, out.str(), err.str()};
}

bool has(std::string const& text, std::string const& what) { return text.find(what) != std::string::npos; }

// A store with two databases of one source, written at t0 - 90 s.
std::string seeded_store() {
    auto dir = test_support::make_temp_dir("ckpt-cmd");
    auto s = ck::store::open(dir);
    auto written = std::chrono::duration_cast<std::chrono::milliseconds>((t0 - 90s).time_since_epoch()).count();
    BOOST_REQUIRE(!s->write({{ck::key{"http://couch:5984", "cases"}, ck::position{"\"4-g1AAAA\\u00e9\"", written, "0.1.0"}},
                             {ck::key{"http://couch:5984", "forms"}, ck::position{"12", written, "0.1.0"}}}));
    return dir;
}

} // namespace

BOOST_AUTO_TEST_SUITE(command)

BOOST_AUTO_TEST_CASE(list_shows_database_seq_and_age) {
    auto dir = seeded_store();
    auto r = run(dir, {"list"});
    BOOST_TEST(r.code == 0);
    BOOST_TEST(r.err.empty());
    BOOST_TEST(has(r.out, "DATABASE\tSEQ\tAGE"));
    BOOST_TEST(has(r.out, "cases\t\"4-g1AAAA\\u00e9\"\t1m30s\t2023-11-14T22:11:50Z\thttp://couch:5984\t0.1.0\n"));
    BOOST_TEST(has(r.out, "forms\t12\t1m30s\t"));
    BOOST_TEST(has(r.out, "2 checkpoint(s)"));

    auto filtered = run(dir, {"list", "--source", "http://elsewhere"});
    BOOST_TEST(filtered.code == 0);
    BOOST_TEST(has(filtered.out, "0 checkpoint(s)"));
}

BOOST_AUTO_TEST_CASE(list_shows_the_kafka_cluster_the_positions_belong_to) {
    auto dir = seeded_store();
    BOOST_TEST(has(run(dir, {"list"}).out, "kafka cluster: (not recorded)\n"));
    {
        auto s = ck::store::open(dir);
        BOOST_TEST(!s->get_meta("kafka_cluster_id").has_value());
        BOOST_TEST(!s->put_meta("kafka_cluster_id", "MkU3OEVBNTcwNTJENDM2Qk"));
        BOOST_TEST(s->get_meta("kafka_cluster_id").value_or("") == "MkU3OEVBNTcwNTJENDM2Qk");
        BOOST_TEST(s->list().size() == 2u); // meta is no position
    }
    auto r = run(dir, {"list"});
    BOOST_TEST(r.code == 0);
    BOOST_TEST(has(r.out, "kafka cluster: MkU3OEVBNTcwNTJENDM2Qk\n"));
    BOOST_TEST(has(r.out, "2 checkpoint(s)"));
}

BOOST_AUTO_TEST_CASE(set_moves_one_database) {
    auto dir = seeded_store();
    auto r = run(dir, {"set", "--db", "cases", "--seq", "\"1-g1AAAA\""});
    BOOST_TEST(r.code == 0);
    BOOST_TEST(has(r.out, "database cases (source http://couch:5984): checkpoint moved from \"4-g1AAAA\\u00e9\" to "
                          "\"1-g1AAAA\""));
    auto s = ck::store::open(dir);
    auto p = s->get(ck::key{"http://couch:5984", "cases"});
    BOOST_REQUIRE(p.has_value());
    BOOST_TEST(p->seq_json == "\"1-g1AAAA\"");
    BOOST_TEST(p->written_unix_ms == 1'700'000'000'000);
    BOOST_TEST(s->get(ck::key{"http://couch:5984", "forms"})->seq_json == "12"); // untouched
}

BOOST_AUTO_TEST_CASE(set_a_new_database_and_explicit_source) {
    auto dir = seeded_store();
    auto r = run(dir, {"set", "--db=users", "--seq=0", "--source=http://couch:5984"});
    BOOST_TEST(r.code == 0);
    BOOST_TEST(has(r.out, "checkpoint set to 0"));
    BOOST_TEST(ck::store::open(dir)->get(ck::key{"http://couch:5984", "users"})->seq_json == "0");
}

BOOST_AUTO_TEST_CASE(set_rejects_a_seq_that_is_not_json) {
    auto dir = seeded_store();
    auto r = run(dir, {"set", "--db", "cases", "--seq", "4-g1AAAA"});
    BOOST_TEST(r.code == 2);
    BOOST_TEST(has(r.err, "not a JSON string or number"));
    BOOST_TEST(ck::store::open(dir)->get(ck::key{"http://couch:5984", "cases"})->seq_json == "\"4-g1AAAA\\u00e9\"");
}

BOOST_AUTO_TEST_CASE(source_must_be_named_when_ambiguous_or_unknown) {
    auto dir = seeded_store();
    {
        auto s = ck::store::open(dir);
        BOOST_REQUIRE(!s->write({{ck::key{"http://other", "cases"}, ck::position{"1", 0, "0.1.0"}}}));
    }
    auto r = run(dir, {"delete", "--db", "cases"});
    BOOST_TEST(r.code == 2);
    BOOST_TEST(has(r.err, "2 sources"));
    BOOST_TEST(has(r.err, "http://other"));

    auto empty = test_support::make_temp_dir("ckpt-cmd");
    auto e = run(empty, {"set", "--db", "cases", "--seq", "1"});
    BOOST_TEST(e.code == 2);
    BOOST_TEST(has(e.err, "--source"));
}

BOOST_AUTO_TEST_CASE(delete_forgets_one_database) {
    auto dir = seeded_store();
    auto r = run(dir, {"delete", "--db", "forms"});
    BOOST_TEST(r.code == 0);
    BOOST_TEST(has(r.out, "database forms (source http://couch:5984): checkpoint 12 deleted"));
    auto again = run(dir, {"delete", "--db", "forms"});
    BOOST_TEST(again.code == 1);
    BOOST_TEST(has(again.err, "no checkpoint for database forms"));
    auto s = ck::store::open(dir);
    BOOST_TEST(!s->get(ck::key{"http://couch:5984", "forms"}).has_value());
    BOOST_TEST(s->list().size() == 1u);
}

BOOST_AUTO_TEST_CASE(refuses_while_a_bridge_holds_the_store) {
    auto dir = seeded_store();
    auto running = ck::store::open(dir); // stands for a running bridge
    for (auto args : std::vector<std::vector<std::string>>{
             {"list"}, {"set", "--db", "cases", "--seq", "1"}, {"delete", "--db", "cases"}}) {
        auto r = run(dir, args);
        BOOST_TEST(r.code == 1);
        BOOST_TEST(has(r.err, "refusing"));
        BOOST_TEST(has(r.err, "locked by another running couch-kafka-bridge"));
        BOOST_TEST(r.out.empty());
    }
    BOOST_TEST(running->get(ck::key{"http://couch:5984", "cases"})->seq_json == "\"4-g1AAAA\\u00e9\"");
}

BOOST_AUTO_TEST_CASE(usage_errors) {
    auto dir = seeded_store();
    BOOST_TEST(run(dir, {}).code == 2);
    BOOST_TEST(run(dir, {"frobnicate"}).code == 2);
    BOOST_TEST(run(dir, {"set", "--db", "cases"}).code == 2);
    BOOST_TEST(run(dir, {"set", "--db"}).code == 2);
    BOOST_TEST(run(dir, {"list", "--db", "x"}).code == 2);
    BOOST_TEST(run(dir, {"delete", "--bogus", "x"}).code == 2);
    auto help = run(dir, {"help"});
    BOOST_TEST(help.code == 0);
    BOOST_TEST(has(help.out, "usage:"));
}

BOOST_AUTO_TEST_CASE(missing_dir_is_not_created) {
    auto base = test_support::make_temp_dir("ckpt-cmd");
    auto missing = base + "/typo";
    auto r = run(missing, {"list"});
    BOOST_TEST(r.code == 1);
    BOOST_TEST(has(r.err, "does not exist"));
    BOOST_TEST(!std::filesystem::exists(missing));
}

BOOST_AUTO_TEST_CASE(age_formatting) {
    BOOST_TEST(ck::format_age(-5s) == "0s");
    BOOST_TEST(ck::format_age(59999ms) == "59s");
    BOOST_TEST(ck::format_age(184s) == "3m04s");
    BOOST_TEST(ck::format_age(2h + 5min) == "2h05m");
    BOOST_TEST(ck::format_age(std::chrono::hours(76)) == "3d04h");
}

BOOST_AUTO_TEST_SUITE_END()
