#pragma once

#include "couch/seq.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

// Reading the inside of a CouchDB 2/3 clustered seq, for one purpose only:
// telling a re-created database and a source rewind apart from normal
// progress. Everything else keeps treating seqs as opaque (couch/seq.hpp):
// nothing here is used to order rows or build a `since`.
//
// A clustered seq is `N-<base64url>` (N is the sum of the shard seqs). The
// base64url part is Erlang's term_to_binary, usually compressed (byte 131,
// byte 80, a 4-byte big-endian uncompressed size, a zlib stream), of a list
// with one entry per shard range:
//     [{Node, [RangeBegin, RangeEnd], ShardSeq}, ...]
// where ShardSeq is one of
//     {Seq, UuidPrefix, EpochNode}   CouchDB >= 2.1: the usual form
//     {Seq, UuidPrefix}              CouchDB 2.0
//     Seq                            a bare integer: the shard has not reported
//                                    yet (recording 20a), or a purge_seq
// Exactly that subset is decoded; anything else (split-shard entries, other
// term types, trailing bytes, a range listed twice, sizes past the limits)
// is `opaque`. Decoding
// never throws and never reads past its input: every length is checked
// against the bytes present and against shard_seq_limits, and the subset has
// a fixed shape, so nesting depth is bounded by construction (no recursion).
//
// All functions here are pure and thread-safe.
namespace couch {

// A shard's hash range as in shard file names, both ends inclusive.
struct shard_range {
    std::uint32_t begin = 0;
    std::uint32_t end = 0;

    friend bool operator==(shard_range const&, shard_range const&) = default;
    // "00000000-3fffffff", as CouchDB names shard files.
    std::string to_string() const;
};

// One entry of a clustered seq.
struct shard_position {
    std::string node; // the node the seq was read from, e.g. "couchdb@127.0.0.1" (UTF-8)
    shard_range range;
    std::uint64_t seq = 0;   // the shard copy's own update seq
    std::string uuid_prefix; // first characters of the shard file's uuid; empty = unknown (bare integer, empty binary)
    std::string epoch_node;  // empty when the entry has none ({Seq, Uuid} and bare forms)

    bool has_uuid() const noexcept { return !uuid_prefix.empty(); }
};

enum class seq_shape {
    clustered, // N-<base64url> decoded into shards
    integer,   // CouchDB 1.x / PouchDB: a plain non-negative integer
    opaque,    // anything else, including malformed and over-limit clustered seqs
};

struct decoded_seq {
    seq_shape shape = seq_shape::opaque;
    // clustered: the N of "N-..." (the server's sum, not checked against the
    // shards); integer: the value. 0 for opaque.
    std::uint64_t number = 0;
    bool compressed = false;              // clustered: the term was zlib-compressed
    std::vector<shard_position> shards;   // clustered: one per entry, in the term's order (never empty)
    std::string opaque_reason;            // opaque: a short reason for logs; never contains the seq itself
};

// Hard limits of the decoder. The defaults are far above anything CouchDB
// produces (a q=8 seq is ~300 characters and ~600 bytes of term; a q=1024
// one would be ~80 KiB of term) and small enough that a hostile value costs
// at most a few MiB and a few milliseconds (compare_incarnation pairs shards
// in O(q^2): a million string comparisons at the shard limit).
struct shard_seq_limits {
    std::size_t max_text_bytes = std::size_t{1} << 20; // the seq's text, without JSON quotes
    std::size_t max_term_bytes = std::size_t{4} << 20; // the term after base64 and inflation
    std::size_t max_shards = 1024;                     // entries in the list (one per range: q)
    std::size_t max_atom_bytes = 1020;                 // Erlang's limit: 255 characters of up to 4 bytes
    std::size_t max_uuid_bytes = 64;                   // CouchDB sends 7
};

// Decodes a seq given as its text without JSON quotes (what is sent as
// `since`): "2-g1AAAA..." or "42". Never throws; malformed input is `opaque`.
decoded_seq decode_shard_seq(std::string_view text, shard_seq_limits const& limits = {});

// Decodes a couch::seq (its raw JSON: a string or a number). A JSON number
// that is a non-negative integer is `integer`; a JSON string is decoded as
// above (a string with escapes is `opaque`); an empty seq is `opaque`.
decoded_seq decode_shard_seq(seq const& s, shard_seq_limits const& limits = {});

// ---------------------------------------------------------------------------
// Comparing two seqs of one database name.

enum class incarnation {
    same_incarnation, // at least one shard copy matches by uuid, none went backwards
    recreated,        // every comparable shard changed uuid: a new database under the old name
    rewound,          // a shard with the same uuid is at a lower seq than the checkpoint
    unknown,          // cannot tell: opaque or integer seq, or too few comparable shards
};

char const* to_string(incarnation i) noexcept;

// A shard pair that differs: for `rewinds` the uuids are equal and
// server_seq < checkpoint_seq; for `replaced` the uuids differ on the same node.
struct shard_difference {
    shard_range range;
    std::string node; // the server-side entry's node
    std::string checkpoint_uuid;
    std::string server_uuid;
    std::uint64_t checkpoint_seq = 0;
    std::uint64_t server_seq = 0;
};

struct incarnation_check {
    incarnation verdict = incarnation::unknown;
    std::size_t compared = 0; // shard pairs that could be compared (matching + changed)
    std::size_t matching = 0; // pairs with the same uuid prefix
    std::size_t changed = 0;  // pairs with different uuid prefixes on the same node
    std::vector<shard_difference> rewinds;  // every shard that went backwards (verdict rewound)
    std::vector<shard_difference> replaced; // every changed pair (all of them when recreated; with
                                            // a matching pair too: one copy replaced, not the database)
    std::string reason;                     // one line for the log, e.g. "4 of 4 shard uuids changed"
};

struct incarnation_options {
    // `recreated` needs at least this many compared shards, all changed.
    std::size_t min_compared_shards = 1;
};

// Classifies `server` (a db's update_seq, a row's seq or a last_seq of the
// same database name) against `checkpoint` (the seq the bridge stored).
//
// Shards are paired by range. A pair is compared only when both sides carry
// a uuid prefix and either the uuids are equal (the same shard file, wherever
// it lives now: a moved shard keeps its uuid) or the nodes are equal (the
// same copy's place, so a new uuid means a new file). Different uuids on
// different nodes are two copies of one shard on a cluster with n > 1 and
// say nothing; bare-integer entries (not reported yet) and ranges present on
// one side only (a split) are skipped too.
//
// Verdict, in this order:
//   unknown           either side is not clustered, or fewer pairs than
//                     options.min_compared_shards could be compared;
//   recreated         no pair matches and every compared pair changed
//                     (recordings 17a -> 17b: all four uuids differ);
//   rewound           some pair matches and at least one matching pair has
//                     server seq < checkpoint seq (CouchDB after a shard move
//                     or node replacement: rows will be sent again);
//   same_incarnation  otherwise (a changed pair next to a matching one is
//                     listed in `replaced`: a copy was rebuilt, the database
//                     was not).
// Pure, never throws.
incarnation_check compare_incarnation(decoded_seq const& checkpoint, decoded_seq const& server,
                                      incarnation_options const& options = {});

// Convenience: decodes both with default limits, then compares.
incarnation_check compare_incarnation(seq const& checkpoint, seq const& server,
                                      incarnation_options const& options = {});

} // namespace couch
