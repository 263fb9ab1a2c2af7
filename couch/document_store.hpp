#pragma once

#include "couch/changes_feed.hpp" // client_config

#include <boost/json/value.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace couch {

// What the store says about one requested document.
enum class doc_state {
    found,   // `doc` holds the current revision
    missing, // the database has no document with this id (never had one, or purged)
    deleted, // the current revision is a deletion (tombstone)
};

struct fetched_doc {
    std::string id;
    doc_state state = doc_state::missing;
    // found: the document as the server sent it; deleted: the tombstone when
    // the server sent one ({"_id","_rev","_deleted":true}), else null;
    // missing: null.
    boost::json::value doc;
};

// The outcome of one fetch: either `error` (and no docs), or one entry per
// requested id, in request order.
struct fetch_result {
    // Empty on success. Otherwise a sentence for people: connection or TLS
    // failure, 401/403 (credentials), 404 (database missing), another
    // status, or a reply that is not _bulk_get's. Never holds credentials.
    std::string error;
    std::vector<fetched_doc> docs;
};

// The "document store" of a ChangeMeta record whose data_source_type is
// `couch`: the databases of one CouchDB, read in batches with
// `POST /{db}/_bulk_get` (current revisions). Ids the server does not return
// a document for are then asked about with one `POST /{db}/_all_docs` with
// their keys, which tells a deleted document from one that never existed on
// both CouchDB 3 and pouchdb-server (pouchdb-server's _bulk_get answers `{}`
// for both, and CouchDB's only says "not_found"). Blocking, for tools and
// subscribers (`couch-kafka-bridge tail --fetch-docs`), never for the
// bridge's event loop.
//
// Built on a couch::client of its own (couch/client.hpp): authentication as
// the feeds do it (basic, or one cookie login, renewed after a 401), HTTPS
// verified the same way, a kept-alive connection reopened when the server
// closed it. Every request has a deadline of `timeout`.
//
// Thread safety: none (one user at a time).
class document_store {
public:
    // Throws std::invalid_argument for a URL that is not http(s)://host...,
    // or an unreadable CA file (named).
    explicit document_store(client_config config, std::chrono::milliseconds timeout = std::chrono::seconds(30));
    ~document_store();
    document_store(document_store const&) = delete;
    document_store& operator=(document_store const&) = delete;

    // Fetches the current revision of each of `ids` in `database` (ids may
    // repeat; an empty list makes no request).
    fetch_result fetch(std::string const& database, std::vector<std::string> const& ids);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// Interprets a `_bulk_get` response body for `ids` (distinct ids, in request
// order; exposed for tests with recorded replies). `{"ok":{doc}}` is found (or
// deleted for a tombstone), `not_found` with reason "deleted" is deleted, and
// any other `not_found` or an empty `{}` is missing for now (fetch() then asks
// _all_docs). Returns an error text in `error` when the body is not
// `{"results":[{"id":..,"docs":[{..}]},..]}` with one result per id in order,
// or for an error other than not_found.
fetch_result parse_bulk_get(std::string const& body, std::vector<std::string> const& ids);

// Interprets a `POST /{db}/_all_docs` body for `keys` (no include_docs):
// `{"key":..,"error":"not_found"}` is missing, a row whose value has
// `"deleted":true` is deleted, a live row is found (with a null doc).
fetch_result parse_all_docs_keys(std::string const& body, std::vector<std::string> const& keys);

} // namespace couch
