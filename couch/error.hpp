#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace couch {

// Errors of the couch module (category "couch"). The feed turns them into a
// state and a message; the parser returns them from feed()/finish().
enum class errc {
    row_too_large = 1,     // a row (or continuous line) is larger than max_row_bytes
    malformed_row,         // a row is not valid JSON or lacks a string "id"
    malformed_body,        // the normal-feed envelope is not {"results":[...],...}
    envelope_too_large,    // the normal-feed envelope (without rows) exceeds its limit
    server_error_row,      // the server wrote an {"error":...} object into the feed
    chunk_size_not_hex,    // a chunk-size line starts with a non-hex byte (CouchDB's 404-in-body race)
    bad_chunk_framing,     // chunked framing broken otherwise (missing CRLF, oversized size line)
    truncated_body,        // the body ended in the middle of a row or before the envelope closed
};

boost::system::error_category const& error_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

} // namespace couch

namespace boost::system {
template <>
struct is_error_code_enum<couch::errc> : std::true_type {};
} // namespace boost::system
