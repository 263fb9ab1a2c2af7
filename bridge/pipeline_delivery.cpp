// bridge::pipeline, the acknowledgement side: Kafka's delivery reports move
// the watermark and the checkpoint, or fail the generation so that the
// reader rewinds (the reading and publishing side is in pipeline.cpp).
#include "bridge/pipeline.hpp"
#include "bridge/pipeline_probe.hpp"

#include "kafka/error.hpp"
#include "kafka/producer.hpp"

#include <boost/asio/post.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>

namespace asio = boost::asio;

namespace bridge {

namespace {

constexpr auto delivery_retry_initial = std::chrono::milliseconds(1000);
constexpr auto delivery_retry_max = std::chrono::milliseconds(30000);

} // namespace

void pipeline::release(checkpoint::watermark::ticket ticket) {
    auto it = outstanding_.find(ticket);
    if (it == outstanding_.end()) {
        return;
    }
    if (--it->second == 0) {
        outstanding_.erase(it);
        watermark_.done(ticket);
    }
}

void pipeline::on_delivery(checkpoint::watermark::ticket ticket, std::uint64_t generation, std::size_t bytes,
                           std::string_view topic, std::chrono::steady_clock::time_point sent,
                           kafka::delivery_report const& report, std::string const& poison_key,
                           std::string const& forget_id) {
    --in_flight_records_;
    in_flight_bytes_ -= bytes;
    // in_flight_atomic_ is stored last (see the end): an owner that sees 0
    // may destroy the pipeline, so nothing may touch it after that store.
    if (report.ec) {
        probe_->produce_errors.inc();
        if (generation == generation_) {
            std::string why = "delivery to topic " + std::string(topic) + " failed: " + report.ec.message();
            // librdkafka: -188 _UNKNOWN_TOPIC (local), 3 UNKNOWN_TOPIC_OR_PART (broker).
            if (report.ec.category() == kafka::error_category() &&
                (report.ec.value() == -188 || report.ec.value() == 3)) {
                why += " (the topic does not exist and the broker does not create topics: create it, or start "
                       "the bridge with --create-topics)";
            }
            if (!poison_key.empty() && kafka::is_permanent_record_error(report.ec)) {
                // Read again after the rewind, this row goes by the policy.
                poison_[poison_key] = why;
            }
            fail_generation(why);
        }
    } else if (generation == generation_) {
        probe_->row_ack.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count());
        if (!forget_id.empty() && deps_.memory != nullptr) {
            deps_.memory->forget(key_, forget_id); // published: the memory has done its job
        }
        release(ticket);
        published_counter(topic).inc();
        ++published_;
        retry_delay_ = std::chrono::milliseconds(0);
        advance_checkpoint();
    } else {
        // Acknowledged, but its generation was abandoned: it was or will be
        // sent again (a duplicate, which at-least-once allows).
        published_counter(topic).inc();
    }
    // Wake the reader if it waits for room in the window.
    window_timer_.cancel();
    if (stopping_) {
        refresh_status(); // the reader is gone: keep the snapshot (checkpoint, in flight) current for the fleet
    }
    in_flight_atomic_.store(in_flight_records_, std::memory_order_release);
}

void pipeline::rewind_to_durable(std::function<void()> done) {
    pending_posts_.fetch_add(1);
    asio::post(strand_, [this, done = std::move(done)] {
        // The transaction that held this pipeline's latest records was
        // aborted: everything after the last committed checkpoint is read
        // and sent again; acknowledgements still arriving for the aborted
        // records belong to the old generation and are ignored.
        committed_ = deps_.flusher.durable_seq(key_);
        if (!committed_ && start_seq_) {
            committed_ = start_seq_;
        }
        ++generation_;
        rewind_pending_ = true;
        failure_ = "transaction aborted: reading again from the last committed checkpoint";
        failure_time_ = std::chrono::system_clock::now();
        window_timer_.cancel();
        done();
        pending_posts_.fetch_sub(1);
    });
}

void pipeline::fail_generation(std::string const& why) {
    ++failures_;
    ++generation_;
    rewind_pending_ = true;
    failure_ = why;
    failure_time_ = std::chrono::system_clock::now();
    retry_delay_ = retry_delay_.count() == 0 ? delivery_retry_initial
                                             : std::min(retry_delay_ * 2, std::chrono::milliseconds(delivery_retry_max));
    spdlog::error("db {}: {}", key_.database, why);
    window_timer_.cancel();
}

void pipeline::advance_checkpoint() {
    auto const& c = watermark_.committed();
    // An empty seq can only come from a batch that ended on a seq-less row
    // (the server never does that); never checkpoint it.
    if (c && !c->empty() && (!committed_ || *committed_ != *c)) {
        committed_ = *c;
        deps_.flusher.update(key_, *c);
    }
}

} // namespace bridge
