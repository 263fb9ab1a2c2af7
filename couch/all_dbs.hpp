#pragma once

#include "couch/error.hpp"

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace couch {

// Parses one `GET /_all_dbs` response body (already de-chunked): a JSON
// array of database names. Appends the names, in the server's order, to
// `names`. Errors (couch::errc): malformed_body when the body is not a JSON
// array of strings (`detail`, if given, says what), row_too_large when it
// holds more than `max_names` names. On error `names` is left as it was.
// Pure; never throws.
boost::system::error_code parse_all_dbs(std::string_view body, std::vector<std::string>& names,
                                        std::size_t max_names = 1'000'000, std::string* detail = nullptr);

// Pages through `_all_dbs` so that 100,000 databases never arrive in one
// response. The rule (CouchDB 2/3, recordings 16a-16c):
//   * names come in byte order; `start_key` is a JSON string and inclusive;
//     `limit` caps the count;
//   * the first request is `limit=P`; every later one is
//     `start_key="<greatest name so far>"&limit=P+1`: the page starts with
//     that name again if it still exists, so the extra slot keeps P new
//     names per page, and names up to the greatest one seen are dropped;
//   * a page with fewer names than its limit is the last one; so is a page
//     with more (the server ignored `limit`, e.g. pouchdb-server: it sent
//     everything);
//   * a full page with no new name means the server ignores `start_key`:
//     step::not_advancing; the caller should list without paging instead.
// A name deleted or created between two pages may be missed or seen; that
// is what `_db_updates` (or the next poll) is for.
//
// Not thread-safe; one instance per listing.
class all_dbs_pager {
public:
    enum class step {
        more,          // request next_query() again
        done,          // the listing is complete
        not_advancing, // a full page brought nothing new: the server does not page
    };

    explicit all_dbs_pager(std::size_t page_size = 1000);

    // The query string (without '?') of the next request, e.g. "limit=1000"
    // or "start_key=%22fx_c%22&limit=1001" (the key JSON-encoded, then
    // percent-encoded).
    std::string next_query() const;

    // The names of the page that answered next_query(). Appends the ones new
    // to this listing to `fresh`. After done or not_advancing, further calls
    // return the same step and append nothing.
    step on_page(std::vector<std::string> const& names, std::vector<std::string>& fresh);

    std::size_t page_size() const noexcept { return page_size_; }
    std::size_t pages() const noexcept { return pages_; }
    std::size_t names_seen() const noexcept { return names_seen_; }

private:
    std::size_t page_size_;
    std::size_t pages_ = 0;
    std::size_t names_seen_ = 0;
    bool have_last_ = false;
    std::string last_; // the greatest name so far
    step state_ = step::more;
};

// `s` as a JSON string literal, then percent-encoded for a query parameter
// (everything but RFC 3986 unreserved characters). For start_key/end_key.
std::string json_query_key(std::string_view s);

} // namespace couch
