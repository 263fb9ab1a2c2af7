#pragma once

#include <boost/system/error_code.hpp>

#include <string>

namespace kafka {

// The error category of every error_code this module returns. The value is
// librdkafka's rd_kafka_resp_err_t (0 = no error, negative = client-side
// errors such as _MSG_TIMED_OUT, positive = broker errors); message() is
// librdkafka's text for it. Converting at the module boundary keeps
// librdkafka's headers out of the callers.
boost::system::error_category const& error_category() noexcept;

// Wraps a librdkafka error code (an rd_kafka_resp_err_t value).
inline boost::system::error_code make_error_code(int rd_kafka_resp_err) noexcept {
    return {rd_kafka_resp_err, error_category()};
}

// librdkafka's symbolic name of an error in this category (e.g.
// "_QUEUE_FULL", "TOPIC_ALREADY_EXISTS"); meant for metric labels. For codes
// of other categories, the category name.
std::string error_name(boost::system::error_code const& ec);

} // namespace kafka

namespace kafka {

// True when a record itself can never be written (too large for the
// producer's or the broker's limit, an invalid record or topic, refused by
// a topic policy), so retrying the same record can never succeed; false for
// errors that may pass (broker down, timeouts, leader changes, fatal
// producer states that a rebuild fixes).
bool is_permanent_record_error(boost::system::error_code const& ec) noexcept;

// True for the size errors among them (the record is too large).
bool is_record_too_large(boost::system::error_code const& ec) noexcept;

// True when a transactional producer refused a produce because a commit or
// an abort is under way (librdkafka's _STATE): wait for the batch gate
// (producer::wait_for_gate) and produce the same record again.
bool is_transaction_busy(boost::system::error_code const& ec) noexcept;

} // namespace kafka
