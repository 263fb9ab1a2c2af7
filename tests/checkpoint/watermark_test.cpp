#include "checkpoint/watermark.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

using wm = checkpoint::watermark;

BOOST_AUTO_TEST_SUITE(watermark)

BOOST_AUTO_TEST_CASE(in_order_acks_advance_one_by_one) {
    wm w;
    BOOST_TEST(!w.committed().has_value());
    auto a = w.push("\"1-a\"");
    auto b = w.push("2");
    BOOST_TEST(w.in_flight() == 2u);
    BOOST_TEST(w.done(a));
    BOOST_TEST(*w.committed() == "\"1-a\"");
    BOOST_TEST(w.in_flight() == 1u);
    BOOST_TEST(w.done(b));
    BOOST_TEST(*w.committed() == "2");
    BOOST_TEST(w.in_flight() == 0u);
    BOOST_TEST(w.held() == 0u);
    BOOST_TEST(w.advances() == 2u);
}

BOOST_AUTO_TEST_CASE(out_of_order_acks_wait_for_the_oldest) {
    wm w;
    auto t1 = w.push("1");
    auto t2 = w.push("2");
    auto t3 = w.push("3");
    BOOST_TEST(w.done(t3));
    BOOST_TEST(!w.committed().has_value());
    BOOST_TEST(w.done(t2));
    BOOST_TEST(!w.committed().has_value());
    BOOST_TEST(w.in_flight() == 1u);
    BOOST_TEST(w.held() == 3u);
    BOOST_TEST(w.done(t1));
    BOOST_TEST(*w.committed() == "3"); // jumps over everything already done
    BOOST_TEST(w.held() == 0u);
}

BOOST_AUTO_TEST_CASE(skipped_rows_count_as_done) {
    wm w;
    auto t1 = w.push("1");
    w.push_done("2"); // e.g. a design document
    BOOST_TEST(!w.committed().has_value());
    w.done(t1);
    BOOST_TEST(*w.committed() == "2");
}

BOOST_AUTO_TEST_CASE(double_done_and_unknown_tickets_are_bugs) {
    wm w;
    auto t1 = w.push("1");
    auto t2 = w.push("2");
    w.done(t2);
    BOOST_CHECK_THROW(w.done(t2), std::logic_error); // done, still held
    w.done(t1);
    BOOST_CHECK_THROW(w.done(t1), std::logic_error); // done and popped
    BOOST_CHECK_THROW(w.done(99), std::logic_error); // never issued
}

BOOST_AUTO_TEST_CASE(reset_forgets_the_window_and_keeps_committed) {
    wm w;
    auto t1 = w.push("1");
    auto t2 = w.push("2");
    auto t3 = w.push("3");
    w.done(t1);
    w.done(t3);
    w.reset();
    BOOST_TEST(*w.committed() == "1");
    BOOST_TEST(w.in_flight() == 0u);
    BOOST_TEST(w.held() == 0u);
    // Late delivery reports of the dropped window are stale, not bugs.
    BOOST_TEST(!w.done(t2));
    BOOST_TEST(*w.committed() == "1");
    // Re-read rows after the rewind get fresh tickets.
    auto r2 = w.push("2");
    BOOST_TEST(r2 > t3);
    BOOST_TEST(w.done(r2));
    BOOST_TEST(*w.committed() == "2");
    BOOST_CHECK_THROW(w.done(r2), std::logic_error);
}

// Property test against a simple reference model: after every ack, the
// committed seq is the seq of the last row of the longest all-done prefix.
BOOST_AUTO_TEST_CASE(random_permutations_match_a_reference_model) {
    std::mt19937 rng(20240611u);
    for (int round = 0; round < 300; ++round) {
        std::size_t const n = 1 + rng() % 64;
        wm w;
        std::vector<wm::ticket> tickets;
        std::vector<std::string> seqs;
        for (std::size_t i = 0; i < n; ++i) {
            // Mix string and integer seqs.
            seqs.push_back(i % 2 == 0 ? "\"" + std::to_string(i) + "-g1\"" : std::to_string(i));
            tickets.push_back(w.push(seqs.back()));
        }
        std::vector<std::size_t> order(n);
        std::iota(order.begin(), order.end(), 0u);
        std::shuffle(order.begin(), order.end(), rng);
        std::vector<bool> acked(n, false);
        std::size_t acked_count = 0;
        for (auto idx : order) {
            BOOST_REQUIRE(w.done(tickets[idx]));
            acked[idx] = true;
            ++acked_count;
            std::size_t prefix = 0;
            while (prefix < n && acked[prefix]) {
                ++prefix;
            }
            if (prefix == 0) {
                BOOST_REQUIRE(!w.committed().has_value());
            } else {
                BOOST_REQUIRE(w.committed().has_value());
                BOOST_REQUIRE(*w.committed() == seqs[prefix - 1]);
            }
            BOOST_REQUIRE(w.in_flight() == n - acked_count);
            BOOST_REQUIRE(w.held() == n - prefix);
        }
        BOOST_TEST(*w.committed() == seqs.back());
    }
}

// Interleaved pushes and acks with a bounded window (how a pipeline uses it).
BOOST_AUTO_TEST_CASE(streaming_window_matches_the_reference_model) {
    std::mt19937 rng(7u);
    wm w;
    std::vector<std::string> seqs;
    std::vector<bool> acked;
    std::vector<wm::ticket> pending; // pushed, not acked
    std::vector<std::size_t> pending_index;
    std::size_t prefix = 0;
    for (int step = 0; step < 20000; ++step) {
        bool can_push = pending.size() < 32;
        if (can_push && (pending.empty() || rng() % 2 == 0)) {
            seqs.push_back(std::to_string(seqs.size()));
            acked.push_back(false);
            pending.push_back(w.push(seqs.back()));
            pending_index.push_back(seqs.size() - 1);
        } else {
            auto pick = rng() % pending.size();
            BOOST_REQUIRE(w.done(pending[pick]));
            acked[pending_index[pick]] = true;
            pending.erase(pending.begin() + static_cast<long>(pick));
            pending_index.erase(pending_index.begin() + static_cast<long>(pick));
            while (prefix < acked.size() && acked[prefix]) {
                ++prefix;
            }
            if (prefix > 0) {
                BOOST_REQUIRE(*w.committed() == seqs[prefix - 1]);
            } else {
                BOOST_REQUIRE(!w.committed().has_value());
            }
        }
        BOOST_REQUIRE(w.in_flight() == pending.size());
    }
    BOOST_TEST(w.held() <= acked.size() - prefix);
}

BOOST_AUTO_TEST_SUITE_END()
