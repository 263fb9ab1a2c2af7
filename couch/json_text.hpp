#pragma once

#include <cstddef>
#include <string>
#include <string_view>

// Small structural scans over JSON text that is already known (or assumed)
// to be well-formed: they find things, they do not validate. Used by the
// _changes parser for byte-exact seqs, the raw `doc` bytes and error
// messages.
namespace couch {

inline bool is_json_ws(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Finds the raw JSON text of the member `key` of the JSON object `object_text`
// (top level only). Returns an empty view when absent or the text is not an
// object. Does not validate beyond what it needs.
std::string_view find_member_raw(std::string_view object_text, std::string_view key);

// Best-effort doc id from the start of a (possibly partial) row text, for
// error messages about rows too large to parse. Empty if none found.
std::string sniff_doc_id(std::string_view partial_row);

// "doc id 'X'", or "doc id unknown" for an empty id.
std::string describe_id(std::string_view id);

} // namespace couch
