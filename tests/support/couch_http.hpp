#pragma once

#include <boost/json/value.hpp>

#include <string>

namespace test_support {

struct http_result {
    unsigned status = 0;
    std::string body;
};

// A blocking HTTP/1.1 request to the CouchDB-protocol server at `base_url`
// (http://host:port, optional user:password@). `target` is sent as given
// (the caller URL-encodes). `authorization`, when given, is sent as the
// Authorization header instead of Basic credentials from the URL. Throws on
// connection failure.
http_result couch_request(std::string const& base_url, std::string const& method, std::string const& target,
                          std::string const& body = {}, std::string const& authorization = {});

// Convenience: PUT /db (201 or 412 accepted), PUT a document, DELETE one.
void couch_create_db(std::string const& base_url, std::string const& db);
// Returns the new rev. Throws unless 201.
std::string couch_put_doc(std::string const& base_url, std::string const& db, std::string const& id,
                          boost::json::object doc);
std::string couch_delete_doc(std::string const& base_url, std::string const& db, std::string const& id,
                             std::string const& rev);
// Percent-encodes a path segment (doc id or db name).
std::string url_encode(std::string const& s);

} // namespace test_support
