#pragma once

#include "couch/changes_feed.hpp"

#include <string>
#include <string_view>

namespace couch {

// A CouchDB base URL taken apart, credentials decoded (client_config's
// user/password win over the URL's). `redacted` is the URL without them, for
// messages. Shared by the feeds and the document store.
struct parsed_url {
    bool tls = false;
    std::string host, port, prefix, user, password, redacted;
};

// Throws std::invalid_argument (naming the redacted URL) for a URL that is
// not http(s)://host[:port][/prefix].
parsed_url parse_url(client_config const& cfg);

// Standard base64 with padding (Basic authentication).
std::string base64(std::string_view in);

} // namespace couch
