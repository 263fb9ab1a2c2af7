#include "checkpoint/watermark.hpp"

#include <stdexcept>
#include <utility>

namespace checkpoint {

watermark::ticket watermark::push(std::string seq_json) {
    window_.push_back(slot{std::move(seq_json), false});
    ++in_flight_;
    return next_++;
}

bool watermark::done(ticket t) {
    if (t < reset_floor_) {
        return false;
    }
    if (t >= next_) {
        throw std::logic_error("watermark: done() for ticket " + std::to_string(t) + " that was never issued");
    }
    if (t < base_ || window_[t - base_].done) {
        throw std::logic_error("watermark: done() twice for ticket " + std::to_string(t));
    }
    window_[t - base_].done = true;
    --in_flight_;
    if (t != base_) {
        return true;
    }
    // Only the seq of the last popped slot matters; each slot is popped once,
    // which is what makes done() O(1) amortized.
    while (!window_.empty() && window_.front().done) {
        committed_ = std::move(window_.front().seq_json);
        window_.pop_front();
        ++base_;
    }
    ++advances_;
    return true;
}

void watermark::reset() {
    window_.clear();
    base_ = next_;
    reset_floor_ = next_;
    in_flight_ = 0;
}

} // namespace checkpoint
