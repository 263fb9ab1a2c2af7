#include "couch/databases.hpp"

#include "couch/all_dbs.hpp"
#include "couch/changes_feed.hpp" // url_encode

#include <boost/json/parse.hpp>

namespace couch {

namespace asio = boost::asio;

std::string couch_reason(std::string const& body) {
    boost::system::error_code ec;
    auto v = boost::json::parse(body, ec);
    if (!ec && v.is_object()) {
        std::string out;
        for (auto const* key : {"error", "reason"}) {
            if (auto const* p = v.get_object().if_contains(key); p != nullptr && p->is_string()) {
                out += out.empty() ? "" : ": ";
                out += std::string(p->get_string());
            }
        }
        if (!out.empty()) {
            return out;
        }
    }
    return body.substr(0, 200);
}

asio::awaitable<all_dbs_listing> list_all_dbs(http_session& session, std::size_t page_size) {
    all_dbs_listing out;
    all_dbs_pager pager(page_size);
    bool paging = true;
    for (;;) {
        std::string const target = paging ? "/_all_dbs?" + pager.next_query() : "/_all_dbs";
        auto r = co_await session.request("GET", target);
        ++out.pages;
        if (!r.error.empty()) {
            out.error = r.error;
            co_return out;
        }
        if (r.status != 200) {
            out.status = r.status;
            out.error = "GET " + session.redacted_url() + target + ": HTTP " + std::to_string(r.status) + ": " +
                        couch_reason(r.body);
            co_return out;
        }
        std::vector<std::string> page;
        std::string detail;
        if (auto ec = parse_all_dbs(r.body, page, 10'000'000, &detail)) {
            out.error = "GET " + session.redacted_url() + target + ": " + detail;
            co_return out;
        }
        if (!paging) {
            out.names = std::move(page); // the whole list at once
            co_return out;
        }
        switch (pager.on_page(page, out.names)) {
        case all_dbs_pager::step::more:
            break;
        case all_dbs_pager::step::done:
            co_return out;
        case all_dbs_pager::step::not_advancing:
            out.names.clear();
            paging = false;
            break;
        }
    }
}

asio::awaitable<std::optional<bool>> database_exists(http_session& session, std::string db) {
    auto r = co_await session.request("GET", "/" + url_encode(db), {}, 1u << 20);
    if (!r.error.empty()) {
        co_return std::nullopt;
    }
    if (r.status == 200) {
        co_return true;
    }
    if (r.status == 404) {
        co_return false;
    }
    co_return std::nullopt;
}

} // namespace couch
