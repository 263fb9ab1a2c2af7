#include "couch/all_dbs.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <boost/json/value.hpp>

#include <algorithm>

namespace couch {

boost::system::error_code parse_all_dbs(std::string_view body, std::vector<std::string>& names,
                                        std::size_t max_names, std::string* detail) {
    auto bad = [&](errc e, std::string why) -> boost::system::error_code {
        if (detail != nullptr) {
            *detail = std::move(why);
        }
        return e;
    };
    boost::system::error_code ec;
    auto const v = boost::json::parse(body, ec);
    if (ec) {
        return bad(errc::malformed_body, "_all_dbs is not valid JSON (" + ec.message() + ")");
    }
    auto const* arr = v.if_array();
    if (arr == nullptr) {
        return bad(errc::malformed_body, "_all_dbs is not a JSON array");
    }
    if (arr->size() > max_names) {
        return bad(errc::row_too_large,
                   "_all_dbs returned " + std::to_string(arr->size()) + " names, more than " + std::to_string(max_names));
    }
    for (std::size_t i = 0; i < arr->size(); ++i) {
        if (!(*arr)[i].is_string()) {
            return bad(errc::malformed_body, "_all_dbs element " + std::to_string(i) + " is not a string");
        }
    }
    names.reserve(names.size() + arr->size());
    for (auto const& n : *arr) {
        names.emplace_back(n.get_string().data(), n.get_string().size());
    }
    return {};
}

all_dbs_pager::all_dbs_pager(std::size_t page_size) : page_size_(std::max<std::size_t>(page_size, 1)) {}

std::string all_dbs_pager::next_query() const {
    if (!have_last_) {
        return "limit=" + std::to_string(page_size_);
    }
    return "start_key=" + json_query_key(last_) + "&limit=" + std::to_string(page_size_ + 1);
}

all_dbs_pager::step all_dbs_pager::on_page(std::vector<std::string> const& names, std::vector<std::string>& fresh) {
    if (state_ != step::more) {
        return state_;
    }
    std::size_t const limit = have_last_ ? page_size_ + 1 : page_size_;
    ++pages_;
    std::size_t added = 0;
    for (auto const& n : names) {
        if (have_last_ && n <= last_) {
            continue; // the inclusive start_key, or a server that ignored it
        }
        fresh.push_back(n);
        ++added;
    }
    // The greatest name, not the last one: a server that does not sort must
    // not make a later page look new.
    for (auto const& n : names) {
        if (!have_last_ || n > last_) {
            last_ = n;
            have_last_ = true;
        }
    }
    names_seen_ += added;
    if (names.size() != limit) {
        state_ = step::done;
    } else if (added == 0) {
        state_ = step::not_advancing;
    }
    return state_;
}

std::string json_query_key(std::string_view s) {
    std::string const json = boost::json::serialize(boost::json::string(s));
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(json.size() * 3);
    for (char c : json) {
        auto const b = static_cast<unsigned char>(c);
        bool const unreserved =
            (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            out.push_back(c);
        } else {
            out.push_back('%');
            out.push_back(hex[b >> 4]);
            out.push_back(hex[b & 15]);
        }
    }
    return out;
}

} // namespace couch
