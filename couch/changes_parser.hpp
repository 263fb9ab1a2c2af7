#pragma once

#include "couch/chunked_decoder.hpp"
#include "couch/error.hpp"
#include "couch/json_text.hpp"
#include "couch/row.hpp"
#include "couch/row_scanner.hpp"
#include "couch/seq.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace couch {

// Which _changes response shape a parser reads.
enum class feed_kind {
    continuous, // one JSON object per line; blank lines are heartbeats; may end with a {"last_seq":...} line
    normal,     // {"results":[row,...],"last_seq":...,"pending":N} (pending absent on PouchDB)
};

// Streaming parser of a _changes response body (already de-chunked). Rows
// are split out of the byte stream without buffering the whole response
// (only a row that straddles two feed() calls is copied) and each row is
// read once by a reused couch::row_scanner, which builds no document: in a
// continuous feed the row ends at the newline (memchr), in a normal feed the
// scanner itself finds the end of each row, so no byte of a row is scanned
// twice (except the `doc` member's when its bytes are kept, below).
//
// Memory: a row owns its id, seq, revs and doc fields (a few small
// allocations). With keep_doc_text(true) the `doc` bytes of the rows of one
// feed() call are copied into one boost::json::monotonic_resource that the
// rows share (row.doc_storage); it is returned when the last row of that call
// is destroyed, so keep rows only as long as needed (the pipeline drops them
// after publishing).
//
// Seqs are kept byte-exact: row.seq.raw_json() is the text the server sent.
// A `"seq":null` row (seq_interval) gets an empty seq; such a row is never the
// last row handed out by a normal-feed response that ends cleanly, because the
// parser holds null-seq rows back until a row with a seq (or the response's
// last_seq, which CouchDB makes equal to the last row's position) arrives, so a
// checkpoint at the last row of any batch covers every row before it. One
// exception bounds memory: once the held rows reach max_held_bytes (large
// documents), they are handed out at once, and a batch may then end on a
// null-seq row; a consumer checkpoints only at rows that have a seq.
//
// Not thread-safe; one instance per response (or reset()).
class changes_parser {
public:
    // Null-seq rows held back beyond this many wire bytes are handed out
    // without waiting for a seq (see above).
    static constexpr std::size_t max_held_bytes = std::size_t{4} << 20;

    explicit changes_parser(feed_kind kind, std::size_t max_row_bytes = std::size_t{64} << 20);

    // Parses `bytes` and appends every complete row to `out`. Returns an
    // error from couch::errc (sticky); rows appended before the error are
    // valid and complete. `error_detail()` then names the doc id (if known).
    boost::system::error_code feed(std::string_view bytes, std::vector<row>& out);

    // The body has ended. For a normal feed, an envelope that did not close is
    // errc::truncated_body; for a continuous feed, a partial last line is.
    // Releases rows still held back (seq_interval) into `out`.
    boost::system::error_code finish(std::vector<row>& out);

    // A `last_seq` was read (the continuous end line, or the normal envelope).
    bool has_last_seq() const noexcept { return !last_seq_.empty(); }
    couch::seq const& last_seq() const noexcept { return last_seq_; }
    std::optional<std::uint64_t> pending() const noexcept { return pending_; }
    // A normal envelope closed, or a continuous `last_seq` line was read:
    // nothing more will come from this response.
    bool ended() const noexcept { return ended_; }
    // Human-readable detail of the last error ("doc id ..."), empty if none.
    std::string const& error_detail() const noexcept { return error_detail_; }
    // Rows parsed so far (for tests and metrics).
    std::uint64_t rows_parsed() const noexcept { return rows_parsed_; }
    feed_kind kind() const noexcept { return kind_; }

    // Keep each row's `doc` bytes in row::doc_text (a copy into the batch's
    // arena: costs a scan of the doc; off by default). Survives reset().
    void keep_doc_text(bool on) noexcept { keep_doc_text_ = on; }

    void reset(feed_kind kind);

private:
    boost::system::error_code feed_continuous(std::string_view bytes, std::vector<row>& out);
    boost::system::error_code feed_normal(std::string_view bytes, std::vector<row>& out);
    boost::system::error_code on_line(std::string_view line, std::vector<row>& out);
    boost::system::error_code on_row_text(std::string_view text, std::vector<row>& out);
    boost::system::error_code on_row_done(std::string_view text, std::vector<row>& out);
    boost::system::error_code on_unusual_row(std::string_view text, std::vector<row>& out);
    std::string_view keep_doc(std::string_view doc);
    boost::system::error_code row_parse_failed(std::string_view partial, boost::system::error_code ec);
    void start_row();
    boost::system::error_code parse_envelope();
    boost::system::error_code fail(boost::system::error_code ec, std::string detail);
    boost::system::error_code too_large(std::string_view partial);
    void emit(row r, std::vector<row>& out);
    void release_held(std::vector<row>& out);

    feed_kind kind_;
    std::size_t max_row_bytes_;
    // The arena of the current feed() call for kept doc bytes (null until
    // its first kept doc).
    std::shared_ptr<boost::json::monotonic_resource> batch_storage_;
    row_scanner scan_;
    std::size_t batch_bytes_ = 0; // size of the current feed() input, to size the first block
    std::string pending_bytes_; // a row/line that straddles feed() calls
    std::vector<row> held_;     // null-seq rows waiting for a seq (seq_interval)
    std::size_t held_bytes_ = 0; // their wire bytes
    couch::seq last_seq_;
    std::optional<std::uint64_t> pending_;
    bool ended_ = false;
    bool keep_doc_text_ = false;
    boost::system::error_code error_;
    std::string error_detail_;
    std::uint64_t rows_parsed_ = 0;

    // normal-feed scanner state
    enum class nstate { before_results, in_results, in_row, after_results, done };
    nstate nstate_ = nstate::before_results;
    std::string envelope_;  // the body without the rows (small; bounded)
    int depth_ = 0;         // JSON nesting depth (1 = the envelope object)
    bool in_string_ = false;
    bool escape_ = false;
    std::string last_key_;  // last string seen at depth 1 (the key before "results")
    bool collecting_key_ = false;
};

} // namespace couch
