#include "kafka/group_members.hpp"

#include "kafka/client.hpp"

#include <librdkafka/rdkafka.h>

#include <memory>
#include <stdexcept>

namespace kafka {

namespace {

// A big-endian reader over the Kafka protocol's primitive types.
class wire_reader {
public:
    explicit wire_reader(std::string_view b) : b_(b) {}
    bool int16(std::int16_t& v) { return fixed(v); }
    bool int32(std::int32_t& v) { return fixed(v); }
    bool string(std::string& s) {
        std::int16_t n = 0;
        if (!int16(n) || n < 0 || static_cast<std::size_t>(n) > b_.size() - at_) {
            return false;
        }
        s.assign(b_.substr(at_, static_cast<std::size_t>(n)));
        at_ += static_cast<std::size_t>(n);
        return true;
    }

private:
    template <class T>
    bool fixed(T& v) {
        if (b_.size() - at_ < sizeof(T)) {
            return false;
        }
        std::uint64_t x = 0;
        for (std::size_t i = 0; i < sizeof(T); ++i) {
            x = (x << 8) | static_cast<unsigned char>(b_[at_ + i]);
        }
        at_ += sizeof(T);
        v = static_cast<T>(x);
        return true;
    }

    std::string_view b_;
    std::size_t at_ = 0;
};

} // namespace

std::optional<member_assignment> parse_consumer_assignment(std::string_view bytes) {
    member_assignment out;
    if (bytes.empty()) {
        return out; // a member that has no assignment yet
    }
    wire_reader r(bytes);
    std::int16_t version = 0;
    std::int32_t topics = 0;
    if (!r.int16(version) || version < 0 || !r.int32(topics) || topics < 0) {
        return std::nullopt;
    }
    for (std::int32_t t = 0; t < topics; ++t) {
        std::string topic;
        std::int32_t n = 0;
        if (!r.string(topic) || !r.int32(n) || n < 0 || static_cast<std::size_t>(n) > bytes.size() / 4) {
            return std::nullopt;
        }
        auto& parts = out[topic];
        for (std::int32_t i = 0; i < n; ++i) {
            std::int32_t p = 0;
            if (!r.int32(p) || p < 0) {
                return std::nullopt;
            }
            parts.push_back(p);
        }
    }
    // The user data that follows is the assignor's; it is not needed.
    return out;
}

std::vector<group_member_view> describe_group_members(
    std::string const& bootstrap_servers, std::vector<std::pair<std::string, std::string>> const& properties,
    std::string const& group, std::chrono::milliseconds timeout) {
    struct handle_deleter {
        void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
    };
    std::unique_ptr<rd_kafka_t, handle_deleter> rk(
        detail::make_client(RD_KAFKA_PRODUCER, bootstrap_servers, {}, properties));
    rd_kafka_group_list const* list = nullptr;
    auto err = rd_kafka_list_groups(rk.get(), group.c_str(), &list, static_cast<int>(timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw std::runtime_error("cannot describe consumer group " + group + ": " + rd_kafka_err2str(err));
    }
    std::vector<group_member_view> out;
    for (int g = 0; g < list->group_cnt; ++g) {
        auto const& info = list->groups[g];
        if (info.err != RD_KAFKA_RESP_ERR_NO_ERROR || group != info.group) {
            continue;
        }
        for (int m = 0; m < info.member_cnt; ++m) {
            auto const& mi = info.members[m];
            group_member_view v;
            v.member_id = mi.member_id ? mi.member_id : "";
            v.client_id = mi.client_id ? mi.client_id : "";
            v.host = mi.client_host ? mi.client_host : "";
            auto a = parse_consumer_assignment(
                std::string_view(static_cast<char const*>(mi.member_assignment),
                                 mi.member_assignment ? static_cast<std::size_t>(mi.member_assignment_size) : 0));
            if (a) {
                v.assignment = std::move(*a);
            }
            out.push_back(std::move(v));
        }
    }
    rd_kafka_group_list_destroy(list);
    return out;
}

} // namespace kafka
