#pragma once

// Test-only helpers for the ChangeMeta tests: a strict, independent reader of
// the record format (DESIGN §4), and a minimal reader of rows from the
// recorded CouchDB responses. Neither uses bridge code, so they can judge it.

#include "bridge/change_meta.hpp"
#include "couch/row.hpp"

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace bridge_test {

// Parses one record and returns it, or throws std::runtime_error naming the
// field at fault when the text is not exactly a record: a JSON object with
// exactly the twelve fields, each once, in the documented order, with the
// documented JSON types (strings, nullable strings, a boolean, an integer),
// data_source_type "couch", attempts >= 0, and both timestamps exactly
// "YYYY-MM-DDTHH:MM:SS.ffffffZ" naming a real calendar instant.
bridge::change_meta read_change_meta_strict(std::string_view json);

// Parses "YYYY-MM-DDTHH:MM:SS.ffffffZ" (27 characters exactly, a real date
// and time of day); throws std::runtime_error otherwise.
bridge::timestamp parse_timestamp_strict(std::string_view text);

// The _changes rows of a file under tests/data (`relative_path`), in order:
// either a recorded HTTP response (`HTTP/1.1 ...`, chunked or not; its
// framing is removed) or a plain file of one JSON row per line. Rows are
// the lines that start with `{"seq"` (normal feeds put one row per line,
// continuous feeds too); `"doc":null` counts as no doc. Throws
// std::runtime_error on unreadable or malformed input.
std::vector<couch::row> load_rows(std::string const& relative_path);
// The text of each row of the same recording, as load_rows() sees them.
std::vector<std::string> load_row_texts(std::string const& relative_path);

} // namespace bridge_test

// How Boost.Test prints these in failed assertions (found by ADL).
namespace bridge {
inline std::ostream& boost_test_print_type(std::ostream& os, change_meta const& m) {
    std::string json;
    serialize(m, json);
    return os << json;
}
} // namespace bridge
