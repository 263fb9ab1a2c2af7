// Read coalescing's decision, read by read (couch::detail::coalesce_next).
// The feed tests drive the whole feed; these pin the thresholds, which a
// machine's timing cannot.
#include "couch/detail/feed_impl.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "fault_feed.hpp"
#include "fault_server.hpp"
#include "wire.hpp"

using namespace std::chrono_literals;
using namespace couch_test;
using namespace couch_fault_feed;
using couch::detail::coalesce_flat_out_bytes;
using couch::detail::coalesce_next;
using couch::detail::coalesce_read;

namespace {
constexpr std::size_t read_size = 256 * 1024;
constexpr auto catch_up = std::chrono::microseconds(10ms); // 2 ms x catch_up_coalesce_factor
constexpr auto follow = std::chrono::microseconds(2ms);
} // namespace

BOOST_AUTO_TEST_SUITE(coalesce)

BOOST_AUTO_TEST_CASE(the_flat_out_bytes_scale_with_the_interval_up_to_a_full_read) {
    BOOST_TEST(coalesce_flat_out_bytes(follow, read_size) == 64000u);
    BOOST_TEST(coalesce_flat_out_bytes(std::chrono::microseconds(4ms), read_size) == 128000u);
    BOOST_TEST(coalesce_flat_out_bytes(catch_up, read_size) == read_size);
    BOOST_TEST(coalesce_flat_out_bytes(std::chrono::microseconds(0), read_size) == 0u);
}

// While catching up, a wait at 6,000 rows/s of 1.5 KB gathers about 90 KB:
// the feed keeps waiting, where a fixed 64 KiB limit took it for a flat-out
// source and made every other read an immediate one of a row or two.
BOOST_AUTO_TEST_CASE(after_a_wait_only_a_flat_out_source_ends_the_coalescing) {
    BOOST_TEST(coalesce_next(coalesce_read{90'000, 60, true, 10ms}, catch_up, read_size));
    BOOST_TEST(coalesce_next(coalesce_read{read_size - 1, 170, true, 15ms}, catch_up, read_size));
    BOOST_TEST(!coalesce_next(coalesce_read{read_size, 170, true, 15ms}, catch_up, read_size));
    // Following: the 2 ms interval keeps the former limit.
    BOOST_TEST(coalesce_next(coalesce_read{30'000, 20, true, 2ms}, follow, read_size));
    BOOST_TEST(!coalesce_next(coalesce_read{64'000, 40, true, 2ms}, follow, read_size));
    // One row per wait: the wait does not pay.
    BOOST_TEST(!coalesce_next(coalesce_read{1'500, 1, true, 10ms}, catch_up, read_size));
}

BOOST_AUTO_TEST_CASE(an_immediate_read_engages_the_coalescing_when_rows_come_often) {
    // A quarter of the buffer at once is flat out, at any interval.
    BOOST_TEST(!coalesce_next(coalesce_read{read_size / 4, 40, false, 1ms}, catch_up, read_size));
    BOOST_TEST(!coalesce_next(coalesce_read{read_size / 4, 40, false, 1ms}, follow, read_size));
    BOOST_TEST(coalesce_next(coalesce_read{1'500, 1, false, 4ms}, catch_up, read_size));
    BOOST_TEST(!coalesce_next(coalesce_read{1'500, 1, false, 5ms}, catch_up, read_size)); // rows too rare
    BOOST_TEST(!coalesce_next(coalesce_read{0, 0, false, 1ms}, catch_up, read_size));     // a heartbeat
    BOOST_TEST(!coalesce_next(coalesce_read{1'500, 1, false, 0ms}, std::chrono::microseconds(0), read_size));
}

// At full speed the loop drains the socket at the start of each catch-up
// batch: a small read close to the previous one engages the coalescing, and
// the wait comes back with a full buffer (the source outran it). Then small
// reads read on at once for 100 intervals, instead of another lost wait at
// the next batch; a slow source gets its waits back after that.
BOOST_AUTO_TEST_CASE(a_wait_the_source_outran_holds_the_coalescing_off_for_a_while) {
    couch::detail::coalesce_state state;
    auto t = std::chrono::steady_clock::time_point() + 1h;
    auto const small = coalesce_read{30'000, 18, false, 1ms};
    BOOST_TEST(state.after_read(small, t, catch_up, read_size)); // engages
    t += 10ms;
    BOOST_TEST(!state.after_read(coalesce_read{read_size, 150, true, 10ms}, t, catch_up, read_size)); // lost
    t += 2ms;
    BOOST_TEST(!state.after_read(small, t, catch_up, read_size)); // the next batch's start: no wait
    t += 990ms;
    BOOST_TEST(!state.after_read(small, t, catch_up, read_size));
    t += 10ms; // 100 intervals after the lost wait
    BOOST_TEST(state.after_read(small, t, catch_up, read_size));
    // A wait that gathers less than a full read (6,000 rows/s) loses nothing.
    t += 10ms;
    BOOST_TEST(state.after_read(coalesce_read{90'000, 60, true, 10ms}, t, catch_up, read_size));
    t += 10ms;
    BOOST_TEST(state.after_read(coalesce_read{90'000, 60, true, 10ms}, t, catch_up, read_size));
}

// Read coalescing: rows that trickle in one chunk each (as a CouchDB sends
// them) are read a few at a time once the feed is busy, and none is lost,
// split or reordered on the way. The interval is far longer than the burst,
// so the batch count does not depend on the machine's speed.
BOOST_AUTO_TEST_CASE(a_busy_feed_is_read_a_batch_of_rows_per_wake_up) {
    asio::io_context io;
    fault_server server(io);
    server.push({w(status_response(200, normal_body({}, "0-x", 0)))});
    script live{w(chunked_200)};
    std::vector<std::string> want;
    for (int i = 1; i <= 20; ++i) {
        auto const id = "r" + std::to_string(i);
        want.push_back(id);
        live.push_back(w(chunk(row_line(id, std::to_string(i) + "-x") + "\n")));
        live.push_back(pause_for(1ms));
        if (i == 10) {
            live.push_back(w(chunk("\n"))); // a heartbeat among the rows
        }
    }
    live.push_back(hold());
    server.push(live);
    auto options = fast_options();
    options.read_coalesce = 1s;
    options.heartbeat = 5s;
    auto const out = drive(server, io, options, 20);
    BOOST_TEST(!out.timed_out);
    BOOST_TEST(out.error.empty(), out.error);
    BOOST_TEST(out.ids == want, boost::test_tools::per_element());
    BOOST_TEST(out.seqs.back() == "\"20-x\"");
    // The first rows one read each (two reads close together engage the
    // coalescing: here rows 1-3, since row 1 came with the response header),
    // then the rest in one read, or two if the server was slow.
    std::string sizes;
    for (auto n : out.batches) {
        sizes += std::to_string(n) + " ";
    }
    BOOST_TEST(out.batches.size() <= 5u, "rows per batch: " << sizes);
    BOOST_TEST(*std::max_element(out.batches.begin(), out.batches.end()) >= 8u, "rows per batch: " << sizes);
}

BOOST_AUTO_TEST_SUITE_END()
