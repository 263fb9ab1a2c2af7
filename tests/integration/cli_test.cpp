// The real binary's command line: options after a subcommand work as before
// it, and each subcommand has its --help.
#include "bridge_process.hpp"

#include "tests/support/test_env.hpp"

#include <boost/test/unit_test.hpp>

namespace {

struct run_result {
    int code = -1;
    std::string output;
};

run_result run(std::vector<std::string> const& args) {
    auto log = test_support::make_temp_dir("cli") + "/out";
    test_support::child_process p(integration::bridge_binary(), args, log);
    auto code = p.wait_for_exit(std::chrono::seconds(60));
    BOOST_REQUIRE(code.has_value());
    return {*code, test_support::read_file(log)};
}

} // namespace

BOOST_AUTO_TEST_SUITE(cli)

BOOST_AUTO_TEST_CASE(checkpoints_with_the_dir_after_the_subcommand) {
    auto dir = test_support::make_temp_dir("cli-ckpt");
    auto listed = run({"checkpoints", "list", "--checkpoint-dir", dir});
    BOOST_TEST(listed.code == 0, listed.output);
    BOOST_TEST(listed.output.find("0 checkpoint(s)") != std::string::npos, listed.output);

    auto set = run({"checkpoints", "set", "--db", "d1", "--seq", "42", "--source", "http://c:5984",
                    "--checkpoint-dir", dir});
    BOOST_TEST(set.code == 0, set.output);
    auto again = run({"checkpoints", "list", "--source", "http://c:5984", "--checkpoint-dir=" + dir});
    BOOST_TEST(again.output.find("d1\t42\t") != std::string::npos, again.output);

    // The dir still names what is wrong when it is wrong.
    auto missing = run({"checkpoints", "list", "--checkpoint-dir", dir + "/no-such-dir"});
    BOOST_TEST(missing.code == 1);
    BOOST_TEST(missing.output.find("--checkpoint-dir") != std::string::npos, missing.output);
}

BOOST_AUTO_TEST_CASE(help_of_each_subcommand) {
    auto tail = run({"tail", "--help"});
    BOOST_TEST(tail.code == 0);
    BOOST_TEST(tail.output.find("--fetch-docs") != std::string::npos, tail.output);
    auto set = run({"checkpoints", "set", "--help"});
    BOOST_TEST(set.code == 0);
    BOOST_TEST(set.output.find("--seq") != std::string::npos, set.output);
    auto bad = run({"checkpoints", "frobnicate"});
    BOOST_TEST(bad.code != 0);
}

BOOST_AUTO_TEST_SUITE_END()
