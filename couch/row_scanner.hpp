#pragma once

#include "couch/row.hpp"

#include <boost/json/basic_parser.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace couch {

// Reads one _changes row (a JSON object) without building a document: a
// Boost.JSON basic_parser whose handler keeps only what couch::row needs —
// `id`, `seq`, `deleted`, `changes[].rev`, and from the `doc` object's top
// level the members of couch::doc_fields — and skips everything else. The
// parser validates the whole text exactly as Boost.JSON's DOM parser does
// (same grammar, same limits, same error codes), so malformed rows fail the
// same way they always did.
//
// Semantics follow the DOM (a later duplicate key replaces an earlier one;
// a member of the wrong type counts as absent). Rows the scanner does not
// cover — not an object, an `error` member, no string `id`, a `seq` that is
// not a string, number or null (the continuous feed's `last_seq` line is
// one) — are reported by ordinary() == false; the caller then reads them
// the DOM way, which is rare and produces the documented errors.
//
// Not thread-safe; one per changes_parser. Allocates only for the strings it
// keeps (id, seq, revs, the doc fields).
class row_scanner {
public:
    enum class seq_kind : std::uint8_t { absent, null, string, number, invalid };

    row_scanner();
    ~row_scanner();
    row_scanner(row_scanner const&) = delete;
    row_scanner& operator=(row_scanner const&) = delete;

    // Forgets any row in progress; the next write starts a new row.
    void start();

    // Parses up to `size` bytes of the row; like stream_parser::write_some it
    // stops after the row's value (and the whitespace after it). Returns the
    // bytes consumed; errors are Boost.JSON's (sticky until start()).
    std::size_t write_some(char const* data, std::size_t size, boost::system::error_code& ec);

    // The whole row at once: like stream_parser::write + finish (text after
    // the value is error::extra_data).
    void write_all(std::string_view text, boost::system::error_code& ec);

    // The row's value has been read completely.
    bool done() const noexcept;

    // After done(): the row is one the scanner covers (see above).
    bool ordinary() const noexcept;

    // After done() and ordinary(): the row read so far. Its seq is left
    // empty; the caller makes it byte-exact from the row text with
    // seq_string()/seq_number() (see couch::changes_parser).
    row take_row();
    seq_kind kind_of_seq() const noexcept;
    // A string seq, decoded (escapes resolved).
    std::string const& seq_string() const noexcept;
    // A number seq as Boost.JSON reads it (int64, uint64 or double).
    boost::json::value const& seq_number() const noexcept;

private:
    struct handler;
    struct parser;
    // basic_parser<handler> is a complete type only in row_scanner.cpp,
    // where its template code is instantiated; kept by pointer so that this
    // header does not pull it in everywhere.
    std::unique_ptr<parser> p_;
};

} // namespace couch
