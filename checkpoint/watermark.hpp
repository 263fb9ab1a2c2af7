#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace checkpoint {

// The in-flight window of one pipeline and the position it may checkpoint:
// the seq of the newest row such that it and every row before it (in feed
// order) is done, i.e. acknowledged by Kafka or deliberately skipped.
// Acknowledgements arrive in any order (Kafka acks per partition), the
// watermark only moves over a contiguous done prefix, so a crash never loses
// a row that was not acknowledged.
//
// Thread safety: none; one instance lives on its pipeline's strand.
// Cost: push() and done() are O(1) amortized (a deque popped from the front).
class watermark {
public:
    // Tickets are never reused, not even across reset(), so a late delivery
    // report of a row from before a rewind is recognised as stale.
    using ticket = std::uint64_t;

    // A row entered the window, in feed order. Returns its ticket.
    ticket push(std::string seq_json);

    // The row of `t` was acknowledged or skipped; order does not matter.
    // Returns true if it was applied, false if `t` belongs to a window that
    // reset() dropped (a late delivery report after a rewind: ignore it).
    // Throws std::logic_error for a ticket that was never issued or that is
    // done twice: both are bugs in the caller.
    bool done(ticket t);

    // Shorthand for a row that is skipped on arrival (push + done).
    void push_done(std::string seq_json) { done(push(std::move(seq_json))); }

    // The seq_json of the newest row such that it and all rows pushed before
    // it are done; nullopt if no row has been done since construction. Kept
    // across reset(). The reference is valid until the next non-const call.
    std::optional<std::string> const& committed() const noexcept { return committed_; }

    // How often committed() moved: a cheap way to see whether there is
    // something new to hand to the flusher.
    std::uint64_t advances() const noexcept { return advances_; }

    // Rows pushed since the last reset() and not done yet.
    std::size_t in_flight() const noexcept { return in_flight_; }

    // Rows held in the window: the not-done ones plus the done ones waiting
    // behind an older not-done row (>= in_flight()).
    std::size_t held() const noexcept { return window_.size(); }

    // Rewind: forgets every row in the window (their later done() calls
    // return false). committed() stays: it is still true for rows before it.
    void reset();

private:
    struct slot {
        std::string seq_json;
        bool done = false;
    };
    std::deque<slot> window_;
    ticket base_ = 0;         // ticket of window_.front()
    ticket next_ = 0;         // next ticket to issue
    ticket reset_floor_ = 0;  // tickets below this were dropped by reset()
    std::size_t in_flight_ = 0;
    std::uint64_t advances_ = 0;
    std::optional<std::string> committed_;
};

} // namespace checkpoint
