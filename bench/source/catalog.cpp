#include "bench/source/catalog.hpp"

#include <charconv>
#include <cstdio>
#include <stdexcept>

namespace bench_source {

namespace {

void append_uint(std::string& out, std::uint64_t v)
{
    char buf[24];
    auto const res = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, res.ptr);
}

// Stable per-change identity words.
std::uint64_t change_key(std::uint64_t seed, std::size_t db, std::uint64_t n) noexcept
{
    return mix64(seed ^ mix64((static_cast<std::uint64_t>(db) << 40U) ^ n));
}

} // namespace

catalog::catalog(catalog_options opt) : opt_(std::move(opt))
{
    if (opt_.databases == 0) {
        throw std::invalid_argument("bench-source: need at least one database");
    }
    if (opt_.deleted_permille > 1000) {
        throw std::invalid_argument("bench-source: deleted share must be at most 1000 per mille");
    }
    pool_ = generate_pool(opt_.docs);
}

std::string catalog::db_name(std::size_t index) const
{
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04zu", index);
    return opt_.db_prefix + buf;
}

std::optional<std::size_t> catalog::find_db(std::string_view name) const
{
    if (!name.starts_with(opt_.db_prefix)) {
        return std::nullopt;
    }
    auto const digits = name.substr(opt_.db_prefix.size());
    std::size_t index = 0;
    auto const [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec != std::errc{} || ptr != digits.data() + digits.size() || index >= opt_.databases) {
        return std::nullopt;
    }
    // Reject aliases such as "bench-7" for "bench-0007".
    if (db_name(index) != name) {
        return std::nullopt;
    }
    return index;
}

void catalog::append_seq(std::string& out, std::uint64_t n) const
{
    if (opt_.seqs == seq_format::integer) {
        append_uint(out, n);
        return;
    }
    // Shaped like CouchDB 3's `"<n>-g1AAAA…"`; the leading number lets
    // parse_since() find the position again, the rest is opaque filler.
    out += '"';
    append_uint(out, n);
    auto const start = out.size();
    out += "-g1AAAAB";
    append_hex128(out, mix64(n), mix64(n + 1));
    if (opt_.seq_bytes > 0) {
        // Deterministic filler from the base64url alphabet CouchDB uses.
        static constexpr std::string_view alphabet =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        auto state = mix64(n ^ 0x5eedU);
        for (auto len = out.size() - start; len + 1 < opt_.seq_bytes; ++len) {
            state = mix64(state);
            out += alphabet[state % alphabet.size()];
        }
    }
    out += '"';
}

std::optional<std::uint64_t> catalog::parse_since(std::string_view since) const
{
    if (since.empty()) {
        return 0;
    }
    if (since == "now") {
        return opt_.changes_per_db;
    }
    std::uint64_t n = 0;
    auto const [ptr, ec] = std::from_chars(since.data(), since.data() + since.size(), n);
    if (ec != std::errc{}) {
        return std::nullopt;
    }
    auto const rest = since.substr(static_cast<std::size_t>(ptr - since.data()));
    if (!rest.empty() && rest.front() != '-') {
        return std::nullopt;
    }
    return n;
}

void catalog::append_row(std::string& out, std::size_t db, std::uint64_t n, bool include_docs, bool with_seq) const
{
    auto const key = change_key(opt_.docs.seed, db, n);
    auto const deleted = (mix64(key + 7) % 1000) < opt_.deleted_permille;
    auto const id_at = [&](std::string& o) { append_hex128(o, key, mix64(key + 1)); };
    auto const rev_at = [&](std::string& o) {
        o += deleted ? "2-" : "1-";
        append_hex128(o, mix64(key + 2), mix64(key + 3));
    };

    out += "{\"seq\":";
    if (with_seq) {
        append_seq(out, n);
    } else {
        out += "null";
    }
    out += ",\"id\":\"";
    id_at(out);
    out += "\",\"changes\":[{\"rev\":\"";
    rev_at(out);
    out += "\"}]";
    if (deleted) {
        out += ",\"deleted\":true";
    }
    if (include_docs) {
        out += ",\"doc\":{\"_id\":\"";
        id_at(out);
        out += "\",\"_rev\":\"";
        rev_at(out);
        if (deleted) {
            // CouchDB's tombstone: no doc_type, so the bridge must rely on
            // the row's `deleted` flag.
            out += "\",\"_deleted\":true}";
        } else {
            out += "\",";
            out += pool_[mix64(key + 4) % pool_.size()].tail;
        }
    }
    out += '}';
}

std::string catalog::doc_id(std::size_t db, std::uint64_t n) const
{
    auto const key = change_key(opt_.docs.seed, db, n);
    std::string out;
    append_hex128(out, key, mix64(key + 1));
    return out;
}

std::size_t catalog::average_row_bytes() const
{
    std::string row;
    std::size_t total = 0;
    constexpr std::uint64_t samples = 1000;
    for (std::uint64_t n = 1; n <= samples; ++n) {
        row.clear();
        append_row(row, 0, n, true, true);
        total += row.size();
    }
    return total / samples;
}

} // namespace bench_source
