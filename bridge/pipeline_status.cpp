// bridge::pipeline, what /status shows: the snapshot refreshed on the strand
// and read from any thread.
#include "bridge/pipeline.hpp"
#include "bridge/pipeline_probe.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace asio = boost::asio;

namespace bridge {

pipeline_status pipeline::status() const {
    pipeline_status s;
    {
        std::lock_guard lock(status_mutex_);
        s = status_;
    }
    // Group mode: while the group has not confirmed that this instance still
    // owns its partitions, nothing is published (see may_publish in
    // publish_batch); a feed still reading must not look like an owner at
    // work. Asked live: the lease changes between the status ticks.
    if (deps_.may_publish && !deps_.may_publish() && (s.state == "following" || s.state == "catching_up")) {
        s.state = "held";
        s.ready = false;
    }
    return s;
}

asio::awaitable<void> pipeline::status_ticker() {
    while (!stopping_) {
        refresh_status();
        status_timer_.expires_after(std::chrono::seconds(1));
        co_await status_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

bool pipeline::quiescent() const {
    return ticker_done_.load() && in_flight_atomic_.load() == 0 && pending_posts_.load() == 0;
}

void pipeline::refresh_status() {
    auto fs = feed_.status();
    bool const failing = rewind_pending_ || (failure_time_ != std::chrono::system_clock::time_point{} &&
                                             std::chrono::system_clock::now() - failure_time_ < std::chrono::seconds(30) &&
                                             retry_delay_.count() != 0);
    bool const connected = fs.state == couch::feed_state::catching_up || fs.state == couch::feed_state::following;
    std::lock_guard lock(status_mutex_);
    status_.state = failing ? std::string("failing") : std::string(couch::to_string(fs.state));
    status_.last_seq_read = fs.last_seq_read;
    status_.checkpoint_seq = committed_.value_or(std::string());
    status_.rows_read = rows_read_;
    status_.published = published_;
    status_.skipped = skipped_;
    status_.delivery_failures = failures_;
    status_.in_flight = in_flight_records_;
    status_.in_flight_bytes = in_flight_bytes_;
    status_.pending = fs.pending;
    if (failing || (!failure_.empty() && failure_time_ > fs.last_error_time)) {
        status_.last_error = failure_;
        status_.last_error_time = failure_time_;
    } else {
        status_.last_error = fs.last_error;
        status_.last_error_time = fs.last_error_time;
    }
    status_.last_row_time = fs.last_row_time;
    status_.unpublishable = unpublishable_;
    status_.last_unpublishable = last_unpublishable_;
    status_.ready = connected && !failing;
    probe_->ready.set(status_.ready ? 1.0 : 0.0);
}

} // namespace bridge
