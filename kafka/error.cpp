#include "kafka/error.hpp"

#include <librdkafka/rdkafka.h>

#include <string>

namespace kafka {

namespace {

// boost::system::error_category's destructor is protected and non-virtual by
// design (categories are static singletons never deleted through a base
// pointer), which -Wnon-virtual-dtor cannot know.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class category final : public boost::system::error_category {
public:
    char const* name() const noexcept override { return "kafka"; }
    std::string message(int ev) const override { return rd_kafka_err2str(static_cast<rd_kafka_resp_err_t>(ev)); }
};
#pragma GCC diagnostic pop

} // namespace

boost::system::error_category const& error_category() noexcept {
    static category const instance;
    return instance;
}

std::string error_name(boost::system::error_code const& ec) {
    if (ec.category() == error_category()) {
        return rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(ec.value()));
    }
    return ec.category().name();
}

} // namespace kafka

namespace kafka {

bool is_record_too_large(boost::system::error_code const& ec) noexcept {
    return ec.category() == error_category() &&
           (ec.value() == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || ec.value() == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE);
}

bool is_permanent_record_error(boost::system::error_code const& ec) noexcept {
    if (ec.category() != error_category()) {
        return false;
    }
    switch (ec.value()) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return true;
    default:
        return false;
    }
}

bool is_transaction_busy(boost::system::error_code const& ec) noexcept {
    return ec.category() == error_category() && ec.value() == RD_KAFKA_RESP_ERR__STATE;
}

} // namespace kafka
