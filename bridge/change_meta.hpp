#pragma once

#include "couch/row.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace bridge {

// Wall-clock time of a publication. Records carry microseconds; finer
// precision is truncated by make_change_meta() so that what is serialized and
// what the struct holds are the same instant.
using timestamp = std::chrono::system_clock::time_point;

// "YYYY-MM-DDTHH:MM:SS.ffffffZ" in UTC, always exactly 27 characters
// (timestamp_length). Sub-microsecond precision is truncated (floor), never
// rounded, so a record never claims a later instant than the clock read.
// Thread-safe, never throws.
inline constexpr std::size_t timestamp_length = 27;
std::string format_timestamp(timestamp t);

// Writes format_timestamp(t) into out[0..27). No allocation (hot path).
void format_timestamp(timestamp t, char (&out)[timestamp_length]);

// One change record, compatible with pillowtop's ChangeMeta (DESIGN §4).
// Every field is always serialized, absent optionals as JSON null.
struct change_meta {
    std::string document_id;
    std::optional<std::string> document_rev;
    std::string data_source_type = "couch";
    std::string data_source_name;
    std::optional<std::string> document_type;
    std::optional<std::string> document_subtype;
    std::optional<std::string> domain;
    bool is_deletion = false;
    timestamp publish_timestamp;
    int attempts = 0;
    timestamp original_publication_datetime;
    std::optional<std::string> associated_document_id;

    friend bool operator==(change_meta const&, change_meta const&) = default;
};

// Builds the record for one _changes row of `database` published at `now`
// (floored to microseconds; both timestamps get it: first publication).
//
// Rules (DESIGN §4, CommCare HQ's document_types.py):
// - document_rev: the doc's `_rev`, else the first changes[].rev, else null.
// - document_type: the doc's `doc_type` when it is a non-empty string, else
//   null (a tombstone, a doc without doc_type, a row without a doc). A
//   non-string doc_type is treated as absent, like HQ does for a falsy one.
// - document_subtype: `type` for case doc types, `xmlns` for form-like doc
//   types, else null.
// - domain: `name` for Domain doc types, else the doc's `domain`.
// - is_deletion: the row is a deletion (CouchDB `deleted`), or doc_type ends
//   in `-Deleted`, or is `Domain-DUPLICATE`.
// Fields that are present but not strings (e.g. `"domain": 7`) become null:
// the record stays well-formed and the document is still published.
// Thread-safe (pure function); throws only std::bad_alloc.
change_meta make_change_meta(couch::row const& row, std::string_view database, timestamp now);

// Appends the record's JSON object to `out`: the fields in the order of the
// struct, no whitespace, strings escaped per RFC 8259 (`"`, `\`, and control
// characters; other bytes, including UTF-8 sequences, are copied as they are,
// so the input strings must be valid UTF-8 — they are: they come from a
// validating JSON parser). Timestamps as format_timestamp().
// Hot path: builds no JSON value and allocates nothing except out's growth
// (one reserve up front). Thread-safe for distinct `out`s; never throws
// except std::bad_alloc.
void serialize(change_meta const& m, std::string& out);

// What a record's value holds (--payload):
//  stub          the ChangeMeta object (pillowtop's stub; the default)
//  stub_and_doc  the ChangeMeta object with a last member "doc": the document
//                bytes exactly as CouchDB sent them (null when it sent none)
//  doc           the document bytes alone (null when CouchDB sent none)
enum class payload_mode { stub, stub_and_doc, doc };
// "stub", "stub+doc", "doc"; throws std::invalid_argument for anything else.
payload_mode parse_payload_mode(std::string_view s);

// Appends the record's value in `mode` to `out`. `doc_text` is the document's
// JSON text as received (couch::row::doc_text), copied without re-serializing.
void serialize_payload(change_meta const& m, payload_mode mode, std::string_view doc_text, std::string& out);

// Appends `s` as a JSON string literal (with the quotes) to `out`. Exposed
// for the producer's headers and for tests.
void append_json_string(std::string_view s, std::string& out);

// CommCare HQ's document-type families (corehq/apps/change_feed), shared by
// make_change_meta() and the commcare routing profile. Exact, case-sensitive
// matches.
namespace doc_types {
// CommCareCase, CommCareCase-Deleted
bool is_case(std::string_view doc_type) noexcept;
// XFormInstance, XFormArchived, XFormDeprecated, XFormDuplicate, XFormError,
// SubmissionErrorLog, each also with -Deleted, and HQSubmission
bool is_form(std::string_view doc_type) noexcept;
// Domain, Domain-Deleted, Domain-DUPLICATE
bool is_domain(std::string_view doc_type) noexcept;
// ends with -Deleted, or is Domain-DUPLICATE
bool is_deletion(std::string_view doc_type) noexcept;
} // namespace doc_types

} // namespace bridge
