// The receive low-water mark of a coalescing wait (issue 16, lever 8):
// changes_feed sets SO_RCVLOWAT to 1 MiB on the response's socket while a
// wait lasts and must reset it to 1 before it reads. A read that finds
// nothing then waits in the event loop, and with the mark still at 1 MiB
// the kernel would not signal the socket readable for one row: the feed
// would sit until its watchdog (twice the heartbeat) and reconnect.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "fault_feed.hpp"
#include "fault_server.hpp"
#include "wire.hpp"

using namespace std::chrono_literals;
using namespace couch_test;
using namespace couch_fault_feed;

BOOST_AUTO_TEST_SUITE(coalesce)

// Rows a few ms apart engage the coalescing (two reads within half the
// interval); the burst ends with three rows in one write, so whichever read
// takes them (a waited one with several rows, or an immediate one right
// after the previous) keeps the coalescing on. The next read therefore comes
// after a wait and finds nothing: the quiet spell is far longer than a wait
// (at most 3/2 of the interval). Then one row, on the same open connection.
// It must be handed out before a deadline well below the watchdog's 10 s;
// with the mark left at 1 MiB it would come only after the watchdog, on a
// new connection (here: never, the script is spent).
BOOST_AUTO_TEST_CASE(a_row_after_a_quiet_spell_is_read_after_a_coalescing_wait) {
    asio::io_context io;
    fault_server server(io);
    server.no_delay = true; // rows one segment each, as paced
    server.push({w(status_response(200, normal_body({}, "0-x", 0)))});
    script live{w(chunked_200)};
    std::vector<std::string> want;
    auto row = [&](int i) {
        want.push_back("r" + std::to_string(i));
        return chunk(row_line(want.back(), std::to_string(i) + "-x") + "\n");
    };
    for (int i = 1; i <= 3; ++i) {
        live.push_back(w(row(i)));
        live.push_back(pause_for(10ms));
    }
    std::string three = row(4); // (in order: the operands of + are unsequenced)
    three += row(5);
    three += row(6);
    live.push_back(w(three));
    constexpr auto quiet = 1000ms;
    live.push_back(pause_for(quiet));
    live.push_back(w(row(7)));
    live.push_back(hold());
    server.push(live);

    auto options = fast_options();
    options.read_coalesce = 100ms; // waits of 50-150 ms
    options.heartbeat = 5s;        // the watchdog: 10 s without a byte
    // Not a timing goal: the row is sent about `quiet` after the start; it
    // must come at all before the deadline, while the connection stays open.
    auto const deadline = std::chrono::steady_clock::now() + quiet + 5s;
    auto const out = drive_until(server, io, options, want.size(), [deadline](couch::feed_status const&) {
        return std::chrono::steady_clock::now() > deadline;
    });
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST(out.ids == want, boost::test_tools::per_element());
    BOOST_TEST(out.status.reconnects == 0u); // no stall, no watchdog
    BOOST_TEST(server.connections == 2);     // the catch-up, then the one continuous feed
}

BOOST_AUTO_TEST_SUITE_END()
