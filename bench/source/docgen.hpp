#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bench_source {

// splitmix64: a tiny, well-mixed, portable hash/PRNG step. Used instead of
// <random> distributions because those are not specified bit-exactly across
// standard libraries, and the same seed must give the same documents
// everywhere.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30U)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27U)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31U);
}

// Deterministic random stream from a seed.
class rng {
public:
    explicit rng(std::uint64_t seed) noexcept : state_(seed) {}
    std::uint64_t next() noexcept
    {
        state_ += 0x9E3779B97F4A7C15ULL;
        return mix64(state_);
    }
    // Uniform in [lo, hi] (hi >= lo). The modulo bias is irrelevant here.
    std::uint64_t between(std::uint64_t lo, std::uint64_t hi) noexcept { return lo + next() % (hi - lo + 1); }

private:
    std::uint64_t state_;
};

// One pre-generated document body: everything of the document's JSON text
// after `"_id":"…","_rev":"…",` up to and including its closing brace. The
// server writes `_id` and `_rev` per change (they differ for every change) and
// copies this tail, so serving costs a memcpy, not a generation.
struct doc_template {
    std::string doc_type;
    std::string tail;
};

struct docgen_options {
    std::uint64_t seed = 42;
    std::size_t pool_size = 1024;   // distinct document bodies
    std::size_t min_bytes = 1024;   // whole document size, including _id/_rev
    std::size_t max_bytes = 2048;
    std::size_t domains = 50;       // distinct `domain` values
};

// Generates `pool_size` CommCare-shaped documents (CommCareCase with `type`,
// XFormInstance with `xmlns` and a nested `form`, CommCareUser, WebUser,
// Domain with `name`, Group, Location, Application, a few `-Deleted` and
// XFormArchived, and an unknown type that routes to the default topic), with a
// realistic mix (cases and forms dominate) and a size drawn uniformly from
// [min_bytes, max_bytes]. Deterministic for a given seed. Throws
// std::invalid_argument when the options make no sense (empty pool,
// min > max, sizes too small for the fixed fields).
std::vector<doc_template> generate_pool(docgen_options const& opt);

// Appends the 32 lowercase hex characters of two 64-bit words.
void append_hex128(std::string& out, std::uint64_t a, std::uint64_t b);

} // namespace bench_source
