#pragma once

#include "couch/changes_parser.hpp"
#include "couch/error.hpp"
#include "couch/seq.hpp"

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace couch {

enum class db_update_type { created, updated, deleted, other };

char const* to_string(db_update_type t) noexcept;

// One row of `_db_updates`: "database `db_name` was created/updated/deleted".
// CouchDB coalesces: a normal read gives only the latest row per (db, type),
// and live rows are batched every 500 ms, so an `updated` row means "changed
// since", not "one write" (recordings 15a-15e).
struct db_update {
    std::string db_name;
    db_update_type type = db_update_type::other;
    std::string type_name; // the server's word as sent ("created", ... or an unknown one)
    // Byte-exact raw JSON of the row's seq (a position in `_global_changes`,
    // to resume with `since=`); empty when the row has none or null.
    couch::seq seq;
};

// Incremental parser of a `_db_updates` response body (already de-chunked):
//   feed_kind::normal      {"results":[row,...],"last_seq":...} (normal and longpoll)
//   feed_kind::continuous  one JSON object per line; blank lines are
//                          heartbeats; may end with a {"last_seq":...} line
// Bytes may be cut anywhere between feed() calls. Memory is bounded: a row
// (or line) longer than max_row_bytes is errc::row_too_large, a normal
// envelope (the body without its rows) past 64 KiB is
// errc::envelope_too_large. Other errors (couch::errc, sticky, with
// error_detail()): malformed_body (not the shapes above, data after the end),
// malformed_row (invalid JSON, no string db_name or type, a seq that is not a
// string, number or null), server_error_row (an {"error":...} row),
// truncated_body (finish() inside a row or before the envelope closed).
// Events appended before an error are complete and valid.
//
// Not thread-safe; one instance per response (or reset()).
class db_updates_parser {
public:
    explicit db_updates_parser(feed_kind kind, std::size_t max_row_bytes = std::size_t{64} << 10);

    // Parses `bytes`, appending every complete row to `out`.
    boost::system::error_code feed(std::string_view bytes, std::vector<db_update>& out);

    // The body has ended: for a normal feed an unclosed envelope, for a
    // continuous feed a partial last line, is errc::truncated_body. A
    // continuous body that simply stops (no last_seq line) is not an error.
    boost::system::error_code finish();

    // A last_seq was read (the normal envelope, or a continuous end line).
    bool has_last_seq() const noexcept { return !last_seq_.empty(); }
    couch::seq const& last_seq() const noexcept { return last_seq_; }
    // Nothing more will come from this response.
    bool ended() const noexcept { return ended_; }
    std::string const& error_detail() const noexcept { return error_detail_; }
    std::uint64_t events_parsed() const noexcept { return events_; }
    // Blank lines of a continuous feed (the watchdog's sign of life).
    std::uint64_t heartbeats() const noexcept { return heartbeats_; }
    feed_kind kind() const noexcept { return kind_; }

    void reset(feed_kind kind);

private:
    boost::system::error_code feed_continuous(std::string_view bytes, std::vector<db_update>& out);
    boost::system::error_code feed_normal(std::string_view bytes, std::vector<db_update>& out);
    boost::system::error_code on_line(std::string_view line, std::vector<db_update>& out);
    boost::system::error_code on_row(std::string_view text, bool continuous, std::vector<db_update>& out);
    boost::system::error_code parse_envelope();
    boost::system::error_code fail(boost::system::error_code ec, std::string detail);
    boost::system::error_code too_large();

    feed_kind kind_;
    std::size_t max_row_bytes_;
    std::string pending_; // continuous: a partial line; normal: the row being collected
    couch::seq last_seq_;
    bool ended_ = false;
    boost::system::error_code error_;
    std::string error_detail_;
    std::uint64_t events_ = 0;
    std::uint64_t heartbeats_ = 0;

    // normal-body scanner
    enum class nstate { envelope, results, row, done };
    nstate nstate_ = nstate::envelope;
    std::string envelope_; // the body without the rows
    int depth_ = 0;        // nesting of the envelope (1 = the top object)
    int row_depth_ = 0;
    bool in_string_ = false;
    bool escape_ = false;
    bool collecting_key_ = false;
    bool seen_results_ = false;
    std::string key_; // last string at depth 1 (the key before "results"), capped
};

} // namespace couch
