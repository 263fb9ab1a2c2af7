#pragma once

#include "couch/http_session.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace couch {

// Every database name of the server, from `GET /_all_dbs` paged with
// start_key/limit (couch/all_dbs.hpp's all_dbs_pager), so that 100,000
// databases never come in one response. A server that ignores paging
// (pouchdb-server sends everything at once) is listed in one request, or,
// if it sends exactly a page and ignores start_key, listed once more
// without paging.
struct all_dbs_listing {
    std::vector<std::string> names; // in the server's order (byte order on CouchDB)
    std::size_t pages = 0;          // requests made
    // Empty on success. Otherwise why the listing failed (transport, a
    // status with CouchDB's reason, a body that is not a list of names);
    // `names` is then incomplete and must not be taken for the whole set.
    std::string error;
    unsigned status = 0; // the failing answer's status, 0 for transport trouble
};

// Lists the server's databases. Never throws for trouble on the wire.
boost::asio::awaitable<all_dbs_listing> list_all_dbs(http_session& session, std::size_t page_size = 1000);

// Whether database `db` exists now (`GET /{db}`): true on 200, false on 404,
// nullopt when the server could not tell (transport trouble, another
// status). Never throws for trouble on the wire.
boost::asio::awaitable<std::optional<bool>> database_exists(http_session& session, std::string db);

// The `error`/`reason` of a CouchDB error body ("not_found: Database does
// not exist."), else its first 200 bytes.
std::string couch_reason(std::string const& body);

} // namespace couch
