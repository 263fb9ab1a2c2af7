#include "kafka/producer.hpp"
#include "kafka/producer_impl.hpp"

#include "kafka/client.hpp"
#include "kafka/error.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <stdexcept>
#include <system_error>
#include <variant>

namespace kafka {

namespace {

using detail::clock;
using detail::ticket;
using detail::to_timeout_ms;

} // namespace

producer::impl::impl(boost::asio::any_io_executor ex, producer_config config, metrics::registry& registry)
    : ioc_ex_(std::move(ex)),
      config_(std::move(config)),
      registry_(registry),
      queue_full_(registry.add_counter("couch_bridge_kafka_queue_full_total",
                                       "Produce attempts refused because librdkafka's local queue was full "
                                       "(back-pressure)")),
      in_flight_gauge_(registry.add_gauge("couch_bridge_kafka_in_flight_messages",
                                          "Messages handed to the producer and not yet reported")),
      rebuilds_(registry.add_counter("couch_bridge_kafka_producer_rebuilds_total",
                                     "Times the Kafka producer was rebuilt after a fatal error")),
      latency_(registry.add_histogram("couch_bridge_kafka_delivery_latency_seconds",
                                      "Time from produce to acknowledgement by Kafka",
                                      metrics::exponential_buckets(0.001, 2.0, 16))),
      ready_gauge_(registry.add_gauge(config_.ready_metric,
                                      "1 unless the producer cannot reach the cluster (authentication, TLS, all "
                                      "brokers down) and has not seen a broker up since")),
      watcher_(ioc_ex_) {
    ready_gauge_.set(1.0);
}

producer::impl::~impl() {
    // The read end belongs to watcher_ (closed by its destructor).
    if (pipe_write_ >= 0) {
        ::close(pipe_write_);
    }
}

void producer::impl::start() {
    int fds[2] = {-1, -1};
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        throw std::system_error(errno, std::generic_category(), "kafka producer: pipe2");
    }
    watcher_.assign(fds[0]);
    pipe_write_ = fds[1];
    rk_ = create_handle();
    current_ = rk_;
    kick();
    spdlog::info("kafka producer {} created (librdkafka {}), bootstrap servers {}", rd_kafka_name(rk_),
                 rd_kafka_version_str(), config_.bootstrap_servers);
    arm();
}

void producer::impl::arm() {
    // A read, not a readiness wait: Asio's epoll reactor is edge-triggered and
    // a wait registered after the pipe became readable would never fire,
    // while librdkafka writes again only after its queue was served. A read
    // is attempted at once (speculatively) and finds such a byte.
    watcher_.async_read_some(
        boost::asio::buffer(wake_buf_), [weak = weak_from_this()](boost::system::error_code ec, std::size_t) {
            auto self = weak.lock();
            if (!self || self->stopping_ || ec == boost::asio::error::operation_aborted) {
                return;
            }
            if (ec) {
                // Cannot happen on a pipe we own (EOF only after shutdown);
                // without the watcher no report would ever arrive.
                spdlog::critical("kafka producer: delivery report watcher failed: {}", ec.message());
                std::terminate();
            }
            self->drain_pipe();
            self->serve();
            self->after_serving();
            if (!self->stopping_) {
                self->arm();
            }
        });
}

void producer::impl::drain_pipe() {
    char buf[256];
    for (;;) {
        auto n = ::read(watcher_.native_handle(), buf, sizeof buf);
        if (n > 0) {
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return; // EAGAIN (empty) or EOF (write end closed at shutdown)
    }
}

// librdkafka only signals when its queue turns non-empty, and the instance
// may have queued events (a first connection failure) before its IO event was
// enabled: a self-made wake-up has the watcher serve the queue once. Written
// after the instance became rk_, so that the serve reaches it.
void producer::impl::kick() {
    char const wakeup = 'k';
    // EAGAIN: the pipe is full, a wake-up is pending anyway.
    [[maybe_unused]] auto n = ::write(pipe_write_, &wakeup, 1);
}

namespace {

// Posts `f` to where a ticket's completion runs.
template <typename F>
void post_to(detail::report_executor const& ex, F&& f) {
    std::visit([&f](auto const& e) { boost::asio::post(e, std::forward<F>(f)); }, ex);
}

// A served report with the ticket it completes.
struct served_report {
    std::unique_ptr<ticket> t;
    delivery_report report;

    void complete() {
        t->done(report);
        detail::recycle(std::move(t));
    }
};

// The delivery reports of one serve(): posted once per executor (a
// pipeline's strand) rather than one handler per message. librdkafka hands
// over a produce response's reports together, so at a CouchDB's pace a
// pipeline gets dozens of reports in one strand handler.
struct report_batch {
    struct group {
        detail::report_executor const* ex; // the first ticket's (alive until posted)
        std::vector<served_report> items;
    };
    std::vector<group> groups;
    std::size_t last = 0;     // the group the previous report went to
    std::size_t reports = 0;  // counted in in_flight_ until posted

    // False (and `t` not taken) when the report should be posted on its own
    // (too many executors in one batch to look them up one by one).
    bool add(std::unique_ptr<ticket>& t, delivery_report const& report) {
        auto const& ex = t->ex;
        if (last >= groups.size() || *groups[last].ex != ex) {
            auto it = std::find_if(groups.begin(), groups.end(), [&ex](group const& g) { return *g.ex == ex; });
            if (it == groups.end()) {
                if (groups.size() >= max_groups) {
                    return false;
                }
                it = groups.insert(groups.end(), group{&ex, {}});
                it->items.reserve(first_capacity);
            }
            last = static_cast<std::size_t>(it - groups.begin());
        }
        groups[last].items.push_back(served_report{std::move(t), report});
        ++reports;
        return true;
    }

    static constexpr std::size_t max_groups = 64;
    // Room for a produce response's reports of one pipeline at a CouchDB's
    // pace, so that a group's vector is allocated once.
    static constexpr std::size_t first_capacity = 64;
};

// The batch of the serve() running on this thread, if any: reports served by
// other paths (flush(), retiring an instance) are posted one by one.
thread_local report_batch* collecting = nullptr;

} // namespace

void producer::impl::serve() {
    report_batch batch;
    {
        std::shared_lock lock(rk_mutex_);
        if (rk_ != nullptr) {
            // Serves everything queued right now; reports arriving meanwhile
            // find the queue empty and signal the pipe again.
            collecting = &batch;
            struct reset {
                ~reset() { collecting = nullptr; }
            } const guard;
            rd_kafka_poll(rk_, 0);
        }
    }
    for (auto& g : batch.groups) {
        // The executor is copied before the items (which hold it) move.
        auto const ex = *g.ex;
        post_to(ex, [items = std::move(g.items)]() mutable {
            for (auto& item : items) {
                item.complete();
            }
        });
    }
    // Only now: in_flight() counts reports not yet posted (see wait_for_space).
    if (batch.reports > 0) {
        in_flight_.fetch_sub(batch.reports, std::memory_order_relaxed);
        in_flight_gauge_.dec(static_cast<double>(batch.reports));
        served_.fetch_add(batch.reports, std::memory_order_relaxed);
    }
}

void producer::impl::after_serving() {
    if (fatal_) {
        rebuild();
    }
    wake_waiters();
}

void producer::impl::wake_waiters() {
    std::vector<waiter> ready;
    {
        std::lock_guard lock(waiters_mutex_);
        ready.swap(waiters_);
    }
    for (auto& w : ready) {
        boost::asio::post(w.ex, std::move(w.handler));
    }
}

void producer::impl::on_delivery(rd_kafka_message_t const* msg) {
    std::unique_ptr<ticket> t(static_cast<ticket*>(msg->_private));
    delivery_report report;
    report.partition = msg->partition;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        report.offset = msg->offset;
        latency_.observe(std::chrono::duration<double>(clock::now() - t->enqueued).count());
        produced_counter(rd_kafka_topic_name(msg->rkt)).inc();
        if (!ready_.load(std::memory_order_relaxed)) {
            set_ready(true); // acknowledged: the cluster is reachable
        }
    } else {
        report.ec = make_error_code(msg->err);
        error_counter(rd_kafka_err2name(msg->err)).inc();
        spdlog::debug("kafka producer: delivery to topic '{}' failed: {}", rd_kafka_topic_name(msg->rkt),
                      rd_kafka_err2str(msg->err));
    }
    if (collecting != nullptr && collecting->add(t, report)) {
        return; // posted and counted by serve()
    }
    auto const ex = t->ex;
    post_to(ex, [item = served_report{std::move(t), report}]() mutable { item.complete(); });
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    in_flight_gauge_.dec();
    served_.fetch_add(1, std::memory_order_relaxed);
}

metrics::counter& producer::impl::produced_counter(std::string const& topic) {
    std::lock_guard lock(probe_mutex_);
    auto it = produced_by_topic_.find(topic);
    if (it == produced_by_topic_.end()) {
        auto& c = registry_.add_counter("couch_bridge_kafka_produced_total", "Records acknowledged by Kafka",
                                        {{"topic", topic}});
        it = produced_by_topic_.emplace(topic, &c).first;
    }
    return *it->second;
}

metrics::counter& producer::impl::error_counter(std::string const& reason) {
    std::lock_guard lock(probe_mutex_);
    auto it = errors_by_reason_.find(reason);
    if (it == errors_by_reason_.end()) {
        auto& c = registry_.add_counter("couch_bridge_kafka_produce_errors_total",
                                        "Records not acknowledged (failed delivery, refused produce, fatal producer "
                                        "error), by librdkafka error name",
                                        {{"reason", reason}});
        it = errors_by_reason_.emplace(reason, &c).first;
    }
    return *it->second;
}

producer::producer(boost::asio::any_io_executor ioc_ex, producer_config config, metrics::registry& registry)
    : impl_(std::make_shared<impl>(std::move(ioc_ex), std::move(config), registry)) {
    impl_->start();
}

producer::~producer() {
    impl_->shutdown();
}

boost::system::error_code producer::try_produce(record const& r, boost::asio::any_io_executor done_ex,
                                                completion done) {
    auto t = detail::make_ticket();
    t->ex = std::move(done_ex);
    t->done = std::move(done);
    return impl_->produce(r, std::move(t));
}

boost::system::error_code producer::try_produce_on_strand(
    record const& r, boost::asio::strand<boost::asio::any_io_executor> const& done_ex, completion done) {
    auto t = detail::make_ticket();
    t->ex = done_ex;
    t->done = std::move(done);
    return impl_->produce(r, std::move(t));
}

boost::system::error_code producer::impl::produce(record const& r, std::unique_ptr<ticket> t) {
    if (r.topic.empty()) {
        detail::recycle(std::move(t));
        error_counter(rd_kafka_err2name(RD_KAFKA_RESP_ERR__INVALID_ARG)).inc();
        return make_error_code(RD_KAFKA_RESP_ERR__INVALID_ARG);
    }
    std::shared_lock lock(rk_mutex_);
    if (rk_ == nullptr) {
        detail::recycle(std::move(t));
        return make_error_code(RD_KAFKA_RESP_ERR__DESTROY);
    }
    t->enqueued = clock::now();
    rd_kafka_headers_t* hdrs = nullptr;
    if (!r.headers.empty()) {
        hdrs = rd_kafka_headers_new(r.headers.size());
        for (auto const& h : r.headers) {
            rd_kafka_header_add(hdrs, h.key.data(), static_cast<ssize_t>(h.key.size()), h.value.data(),
                                static_cast<ssize_t>(h.value.size()));
        }
    }
    // Counted before the call: the report may be served on another thread
    // before producev even returns.
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    in_flight_gauge_.inc();
    void const* key = r.key.empty() ? nullptr : r.key.data();
    void* value = r.tombstone ? nullptr : const_cast<char*>(r.value.data());
    std::size_t const value_len = r.tombstone ? 0 : r.value.size();
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (hdrs != nullptr) {
        err = rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(r.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_KEY(key, r.key.size()),
                                RD_KAFKA_V_VALUE(value, value_len),
                                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(t.get()), RD_KAFKA_V_END);
    } else {
        err = rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(r.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_KEY(key, r.key.size()),
                                RD_KAFKA_V_VALUE(value, value_len),
                                RD_KAFKA_V_OPAQUE(t.get()), RD_KAFKA_V_END);
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        in_flight_.fetch_sub(1, std::memory_order_relaxed);
        in_flight_gauge_.dec();
        if (hdrs != nullptr) {
            // Ownership only passes to librdkafka on success.
            rd_kafka_headers_destroy(hdrs);
        }
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            queue_full_.inc();
        } else {
            error_counter(rd_kafka_err2name(err)).inc();
            spdlog::warn("kafka producer: produce to topic '{}' refused: {}", r.topic, rd_kafka_err2str(err));
        }
        detail::recycle(std::move(t));
        return make_error_code(err);
    }
    t.release(); // now owned by librdkafka until the delivery report
    return {};
}

bool producer::is_queue_full(boost::system::error_code const& ec) {
    return ec == make_error_code(RD_KAFKA_RESP_ERR__QUEUE_FULL);
}

namespace {

// The initiation of wait_for_space(). A named type holding a raw pointer, on
// purpose: with a lambda capturing a shared_ptr copy inside the co_await
// expression, g++ 12 was seen releasing that copy once too many (coroutine
// temporaries), which freed the producer's state under it.
struct wait_for_space_initiation {
    producer::impl* self;

    template <typename Handler>
    void operator()(Handler handler) const {
        // The coroutine resumes on its own executor.
        boost::asio::any_io_executor ex = boost::asio::get_associated_executor(handler, self->ioc_ex_);
        std::lock_guard lock(self->waiters_mutex_);
        // With nothing in flight no report is coming to wake us: the reports
        // that freed the queue were served between the caller's queue-full
        // and now (another thread). Checked under the waiters' lock, which
        // every wake-up takes after its reports were counted.
        if (self->in_flight_.load() == 0) {
            boost::asio::post(ex, std::move(handler));
            return;
        }
        self->waiters_.push_back(producer::impl::waiter{std::move(ex), std::move(handler)});
    }
};

} // namespace

boost::asio::awaitable<void> producer::wait_for_space() {
    return boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void()>(
        wait_for_space_initiation{impl_.get()}, boost::asio::use_awaitable);
}

std::size_t producer::in_flight() const { return impl_->in_flight_.load(); }

void producer::serve_reports(std::chrono::milliseconds timeout) {
    {
        std::shared_lock lock(impl_->rk_mutex_);
        if (impl_->rk_ != nullptr) {
            rd_kafka_poll(impl_->rk_, to_timeout_ms(timeout));
        }
    }
    impl_->after_serving();
}

std::uint64_t producer::rebuilds() const { return impl_->rebuild_count_.load(); }

producer::connection_health producer::health() const {
    std::lock_guard lock(impl_->health_mutex_);
    return {impl_->ready_.load(), impl_->last_connection_error_};
}

std::size_t producer::flush(std::chrono::milliseconds timeout) {
    auto deadline = clock::now() + timeout;
    for (;;) {
        {
            std::shared_lock lock(impl_->rk_mutex_);
            if (impl_->rk_ == nullptr) {
                break;
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
            // In slices, so that a fatal error met meanwhile gets its rebuild
            // (which purges and reports the old instance's messages).
            rd_kafka_flush(impl_->rk_, std::min(to_timeout_ms(left), 100));
        }
        impl_->after_serving();
        if (impl_->in_flight_.load() == 0 || clock::now() >= deadline) {
            break;
        }
    }
    return impl_->in_flight_.load();
}

void producer::trigger_fatal_error_for_test(std::string const& reason) {
    std::shared_lock lock(impl_->rk_mutex_);
    if (impl_->rk_ != nullptr) {
        rd_kafka_test_fatal_error(impl_->rk_, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, reason.c_str());
    }
}

} // namespace kafka
