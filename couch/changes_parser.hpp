#pragma once

#include "couch/error.hpp"
#include "couch/row.hpp"
#include "couch/seq.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/stream_parser.hpp>
#include <boost/json/storage_ptr.hpp>
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

// Decodes HTTP/1.1 chunked transfer encoding incrementally and without
// copying: next() hands out pieces of the caller's input. Knows CouchDB's
// 06k race: a chunk-size line that does not start with a hex digit (CouchDB
// wrote a whole `HTTP/1.1 404` response into the open body) is reported as
// errc::chunk_size_not_hex, which the feed treats as "database missing".
//
// Not thread-safe; one instance per response.
class chunked_decoder {
public:
    // Consumes bytes from the front of `in` (advancing it) up to and
    // including the next piece of body data, which is returned in `piece`
    // (a view into the original input, possibly empty when `in` held only
    // framing). Call repeatedly until `in` is empty or done(). Errors are
    // sticky: after an error, every call returns it again.
    boost::system::error_code next(std::string_view& in, std::string_view& piece);

    // The terminating `0\r\n\r\n` (and any trailers) has been consumed.
    bool done() const noexcept { return state_ == state::done; }

    void reset() noexcept { *this = chunked_decoder(); }

private:
    enum class state { size, extension, size_lf, data, data_cr, data_lf, trailer_start, trailer, final_lf, done };
    state state_ = state::size;
    std::uint64_t remaining_ = 0;
    int size_digits_ = 0;
    std::size_t remaining_extension_ = 0;
    boost::system::error_code error_;
};

// Which _changes response shape a parser reads.
enum class feed_kind {
    continuous, // one JSON object per line; blank lines are heartbeats; may end with a {"last_seq":...} line
    normal,     // {"results":[row,...],"last_seq":...,"pending":N} (pending absent on PouchDB)
};

// Streaming parser of a _changes response body (already de-chunked). Rows
// are split out of the byte stream without buffering the whole response
// (only a row that straddles two feed() calls is copied) and each row is
// parsed once with a reused Boost.JSON parser: in a continuous feed the row
// ends at the newline (memchr), in a normal feed the JSON parser itself finds
// the end of each row, so no byte of a row is scanned twice.
//
// Memory: the rows appended by one feed() call share one
// boost::json::monotonic_resource (each row holds it in row.doc_storage), so
// a document costs a few block allocations per batch instead of one heap
// allocation per string, key and container, and destroying it is free. The
// batch's memory is returned when the last row of that feed() call is
// destroyed; keep rows only as long as needed (the pipeline drops them after
// publishing). A row's doc must not outlive the row (see row::doc_storage),
// and copies made with its storage must stay on the thread that owns the rows
// (the resource is not thread-safe for allocation).
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

    // Keep each row's `doc` bytes in row::doc_text (a copy: costs a scan and
    // an allocation per row; off by default). Survives reset().
    void keep_doc_text(bool on) noexcept { keep_doc_text_ = on; }

    void reset(feed_kind kind);

private:
    boost::system::error_code feed_continuous(std::string_view bytes, std::vector<row>& out);
    boost::system::error_code feed_normal(std::string_view bytes, std::vector<row>& out);
    boost::system::error_code on_line(std::string_view line, std::vector<row>& out);
    boost::system::error_code on_row_text(std::string_view text, std::vector<row>& out);
    boost::system::error_code on_row_value(std::string_view text, boost::json::value v, std::vector<row>& out);
    boost::system::error_code row_parse_failed(std::string_view partial, boost::system::error_code ec);
    void start_row();
    boost::system::error_code parse_envelope();
    boost::system::error_code fail(boost::system::error_code ec, std::string detail);
    boost::system::error_code too_large(std::string_view partial);
    void emit(row r, std::vector<row>& out);
    void release_held(std::vector<row>& out);

    feed_kind kind_;
    std::size_t max_row_bytes_;
    // The monotonic resource of the current feed() call (null until its first
    // row), and the one the row being parsed lives in (a row that straddles
    // feed() calls stays in the resource of the call where it began).
    // Declared before json_, which may hold values in them, so they outlive it.
    std::shared_ptr<boost::json::monotonic_resource> batch_storage_;
    std::shared_ptr<boost::json::monotonic_resource> row_storage_;
    boost::json::stream_parser json_;
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

// Finds the raw JSON text of the member `key` of the JSON object `object_text`
// (top level only). Returns an empty view when absent or the text is not an
// object. Does not validate beyond what it needs.
std::string_view find_member_raw(std::string_view object_text, std::string_view key);

// Best-effort doc id from the start of a (possibly partial) row text, for
// error messages about rows too large to parse. Empty if none found.
std::string sniff_doc_id(std::string_view partial_row);

} // namespace couch
