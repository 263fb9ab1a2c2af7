// Exactly-once: the transactional side of kafka::producer (see producer.hpp).

#include "kafka/producer.hpp"
#include "kafka/producer_impl.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <limits>

namespace kafka {

namespace {

using detail::to_timeout_ms;

// Classifies librdkafka's rd_kafka_error_t (and frees it).
txn_status classify(rd_kafka_error_t* error) {
    txn_status st;
    if (error == nullptr) {
        return st;
    }
    st.message = std::string(rd_kafka_error_name(error)) + ": " + rd_kafka_error_string(error);
    if (rd_kafka_error_is_fatal(error)) {
        st.what = txn_status::kind::fatal;
    } else if (rd_kafka_error_txn_requires_abort(error)) {
        st.what = txn_status::kind::abortable;
    } else if (rd_kafka_error_is_retriable(error)) {
        st.what = txn_status::kind::retriable;
        st.conflict = rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__CONFLICT;
    } else {
        // Anything else (a wrong state, an unsupported broker) cannot be
        // fixed by repeating or aborting.
        st.what = txn_status::kind::fatal;
    }
    rd_kafka_error_destroy(error);
    return st;
}

txn_status not_transactional() {
    return txn_status{txn_status::kind::fatal, "the producer has no transactional.id"};
}

struct wait_for_gate_initiation {
    producer::impl* self;

    template <typename Handler>
    void operator()(Handler handler) const {
        boost::asio::any_io_executor ex = boost::asio::get_associated_executor(handler, self->ioc_ex_);
        std::lock_guard lock(self->waiters_mutex_);
        if (!self->gate_closed_) {
            boost::asio::post(ex, std::move(handler));
            return;
        }
        self->waiters_.push_back(producer::impl::waiter{std::move(ex), std::move(handler)});
    }
};

} // namespace

bool producer::transactional() const noexcept { return !impl_->config_.transactional_id.empty(); }

txn_status producer::init_transactions(std::chrono::milliseconds timeout) {
    if (!transactional()) {
        return not_transactional();
    }
    std::shared_lock lock(impl_->rk_mutex_);
    if (impl_->rk_ == nullptr) {
        return txn_status{txn_status::kind::fatal, "the producer is shut down"};
    }
    return classify(rd_kafka_init_transactions(impl_->rk_, to_timeout_ms(timeout)));
}

txn_status producer::begin_transaction() {
    if (!transactional()) {
        return not_transactional();
    }
    std::shared_lock lock(impl_->rk_mutex_);
    if (impl_->rk_ == nullptr) {
        return txn_status{txn_status::kind::fatal, "the producer is shut down"};
    }
    return classify(rd_kafka_begin_transaction(impl_->rk_));
}

txn_status producer::commit_transaction(std::chrono::milliseconds timeout) {
    if (!transactional()) {
        return not_transactional();
    }
    std::shared_lock lock(impl_->rk_mutex_);
    if (impl_->rk_ == nullptr) {
        return txn_status{txn_status::kind::fatal, "the producer is shut down"};
    }
    return classify(rd_kafka_commit_transaction(impl_->rk_, to_timeout_ms(timeout)));
}

txn_status producer::abort_transaction(std::chrono::milliseconds timeout) {
    if (!transactional()) {
        return not_transactional();
    }
    std::shared_lock lock(impl_->rk_mutex_);
    if (impl_->rk_ == nullptr) {
        return txn_status{txn_status::kind::fatal, "the producer is shut down"};
    }
    return classify(rd_kafka_abort_transaction(impl_->rk_, to_timeout_ms(timeout)));
}

bool producer::enter_batch() {
    std::lock_guard lock(impl_->waiters_mutex_);
    if (impl_->gate_closed_) {
        return false;
    }
    ++impl_->batches_open_;
    return true;
}

void producer::leave_batch() {
    std::lock_guard lock(impl_->waiters_mutex_);
    if (impl_->batches_open_ > 0) {
        --impl_->batches_open_;
    }
}

void producer::close_gate() {
    std::lock_guard lock(impl_->waiters_mutex_);
    impl_->gate_closed_ = true;
}

void producer::open_gate() {
    {
        std::lock_guard lock(impl_->waiters_mutex_);
        impl_->gate_closed_ = false;
    }
    impl_->wake_waiters();
}

std::size_t producer::batches_open() const {
    std::lock_guard lock(impl_->waiters_mutex_);
    return impl_->batches_open_;
}

boost::asio::awaitable<void> producer::wait_for_gate() {
    return boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void()>(
        wait_for_gate_initiation{impl_.get()}, boost::asio::use_awaitable);
}

std::string producer::fatal_error() const {
    std::lock_guard lock(impl_->txn_mutex_);
    return impl_->txn_fatal_;
}

} // namespace kafka
