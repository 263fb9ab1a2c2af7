#pragma once

#include "bench/source/docgen.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bench_source {

enum class seq_format { integer, opaque };

struct catalog_options {
    std::size_t databases = 1;
    std::string db_prefix = "bench-";
    std::uint64_t changes_per_db = 10000;
    seq_format seqs = seq_format::integer;
    unsigned deleted_permille = 10; // share of rows that are deletions
    docgen_options docs;
    // Opaque seqs only: pad each seq to about this many characters with
    // base64url-like filler, as CouchDB 3's are (115-260 characters in the
    // recordings under tests/data/couchdb-3.4.3). 0: the short form.
    std::size_t seq_bytes = 0;
};

// The synthetic content of the server: K databases named
// `<prefix>0000`, `<prefix>0001`, … each with N changes whose seqs are 1..N
// (as integers, or as CouchDB-3-like opaque strings `"<n>-g1AAAA…"`).
// Change n of database d has a stable `_id`/`_rev` derived from the seed and
// a body picked from the pre-generated pool, so every response is
// reproducible and costs only copies to produce.
//
// Immutable after construction: all member functions are const and safe to
// call from any number of threads at once.
class catalog {
public:
    // Generates the document pool. Throws std::invalid_argument for bad
    // options (no databases, bad sizes).
    explicit catalog(catalog_options opt);

    std::size_t databases() const noexcept { return opt_.databases; }
    std::uint64_t changes_per_db() const noexcept { return opt_.changes_per_db; }
    std::string db_name(std::size_t index) const;
    // Index of a database by name, nullopt when the server has no such one.
    std::optional<std::size_t> find_db(std::string_view name) const;

    // Appends the JSON text of seq n (1-based; 0 is "the beginning").
    void append_seq(std::string& out, std::uint64_t n) const;
    // Position after the `since` query value: 0 for "0" or empty, the update
    // seq for "now", else the leading decimal number of the value (it works
    // for integer and for this server's opaque seqs). nullopt for garbage.
    std::optional<std::uint64_t> parse_since(std::string_view since) const;

    // Appends the row of change n (1-based) of database `db`:
    // `{"seq":…,"id":"…","changes":[{"rev":"…"}][,"deleted":true][,"doc":{…}]}`.
    // `with_seq` false writes `"seq":null` (what CouchDB does between
    // seq_interval rows).
    void append_row(std::string& out, std::size_t db, std::uint64_t n, bool include_docs, bool with_seq) const;

    // The `_id` of change n of database `db` (as in its row).
    std::string doc_id(std::size_t db, std::uint64_t n) const;

    // Average whole-row size with include_docs, for the log line.
    std::size_t average_row_bytes() const;
    // The pool, for tests and for size statistics.
    std::vector<doc_template> const& pool() const noexcept { return pool_; }

private:
    catalog_options opt_;
    std::vector<doc_template> pool_;
};

} // namespace bench_source
