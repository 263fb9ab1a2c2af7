// Microbenchmarks of the per-change hot path (issue #7): parsing _changes
// rows out of the byte stream, building the ChangeMeta record, serializing it.
// The input is the same seeded CommCare-shaped data bench-source serves.
//
// Run: bench-micro [--benchmark_filter=...] [--benchmark_format=json]
// Figures are reported per row (items_per_second) and per byte.
#include "bench/source/catalog.hpp"
#include "bridge/change_meta.hpp"
#include "couch/changes_parser.hpp"

#include <benchmark/benchmark.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr std::uint64_t rows_per_body = 10000;
constexpr std::size_t piece_bytes = 64 * 1024; // what one socket read typically hands the parser

bench_source::catalog const& data()
{
    static bench_source::catalog const cat{bench_source::catalog_options{
        .databases = 1, .db_prefix = "bench-", .changes_per_db = rows_per_body, .seqs = {}, .deleted_permille = 10,
        .docs = {}}};
    return cat;
}

// The de-chunked body of a _changes response of `rows_per_body` rows.
std::string make_body(couch::feed_kind kind, bool include_docs)
{
    std::string body;
    if (kind == couch::feed_kind::normal) {
        body += "{\"results\":[\n";
    }
    for (std::uint64_t n = 1; n <= rows_per_body; ++n) {
        data().append_row(body, 0, n, include_docs, true);
        if (kind == couch::feed_kind::continuous) {
            body += '\n';
        } else if (n != rows_per_body) {
            body += ",\n";
        }
    }
    if (kind == couch::feed_kind::normal) {
        body += "\n],\n\"last_seq\":" + std::to_string(rows_per_body) + ",\"pending\":0}\n";
    }
    return body;
}

std::vector<couch::row> parse_all(couch::feed_kind kind, std::string const& body)
{
    couch::changes_parser parser(kind);
    std::vector<couch::row> rows;
    if (auto ec = parser.feed(body, rows); ec) {
        throw std::runtime_error("bench-micro: the parser rejected the generated body: " + ec.message() + " " +
                                 parser.error_detail());
    }
    if (auto ec = parser.finish(rows); ec) {
        throw std::runtime_error("bench-micro: the parser rejected the end of the body: " + ec.message());
    }
    return rows;
}

void parse(benchmark::State& state, couch::feed_kind kind, bool include_docs)
{
    auto const body = make_body(kind, include_docs);
    std::vector<couch::row> rows;
    rows.reserve(rows_per_body);
    for (auto _ : state) {
        couch::changes_parser parser(kind);
        rows.clear();
        std::string_view rest = body;
        while (!rest.empty()) {
            auto const piece = rest.substr(0, piece_bytes);
            rest.remove_prefix(piece.size());
            if (auto ec = parser.feed(piece, rows); ec) {
                state.SkipWithError(ec.message().c_str());
                return;
            }
        }
        if (auto ec = parser.finish(rows); ec) {
            state.SkipWithError(ec.message().c_str());
            return;
        }
        if (rows.size() != rows_per_body) {
            state.SkipWithError("wrong number of rows parsed");
            return;
        }
        benchmark::DoNotOptimize(rows.data());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rows_per_body));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}

void BM_parse_continuous_docs(benchmark::State& state) { parse(state, couch::feed_kind::continuous, true); }
void BM_parse_normal_docs(benchmark::State& state) { parse(state, couch::feed_kind::normal, true); }
void BM_parse_continuous_no_docs(benchmark::State& state) { parse(state, couch::feed_kind::continuous, false); }

auto const publish_time = std::chrono::system_clock::time_point{} + std::chrono::hours(24 * 365 * 55);

void BM_make_change_meta(benchmark::State& state)
{
    auto const rows = parse_all(couch::feed_kind::continuous, make_body(couch::feed_kind::continuous, true));
    std::size_t i = 0;
    for (auto _ : state) {
        auto meta = bridge::make_change_meta(rows[i], "bench-0000", publish_time);
        benchmark::DoNotOptimize(meta);
        i = i + 1 == rows.size() ? 0 : i + 1;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void BM_serialize(benchmark::State& state)
{
    auto const rows = parse_all(couch::feed_kind::continuous, make_body(couch::feed_kind::continuous, true));
    std::vector<bridge::change_meta> metas;
    metas.reserve(rows.size());
    for (auto const& r : rows) {
        metas.push_back(bridge::make_change_meta(r, "bench-0000", publish_time));
    }
    std::string out;
    std::size_t i = 0;
    std::int64_t bytes = 0;
    for (auto _ : state) {
        out.clear();
        bridge::serialize(metas[i], out);
        bytes += static_cast<std::int64_t>(out.size());
        benchmark::DoNotOptimize(out.data());
        i = i + 1 == metas.size() ? 0 : i + 1;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
    state.SetBytesProcessed(bytes);
}

// Everything the bridge does per row between the socket and produce():
// parse, build, serialize.
void BM_row_to_record(benchmark::State& state)
{
    auto const body = make_body(couch::feed_kind::continuous, true);
    std::vector<couch::row> rows;
    rows.reserve(rows_per_body);
    std::string out;
    for (auto _ : state) {
        couch::changes_parser parser(couch::feed_kind::continuous);
        rows.clear();
        std::string_view rest = body;
        while (!rest.empty()) {
            auto const piece = rest.substr(0, piece_bytes);
            rest.remove_prefix(piece.size());
            if (auto ec = parser.feed(piece, rows); ec) {
                state.SkipWithError(ec.message().c_str());
                return;
            }
        }
        for (auto const& r : rows) {
            out.clear();
            bridge::serialize(bridge::make_change_meta(r, "bench-0000", publish_time), out);
            benchmark::DoNotOptimize(out.data());
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rows_per_body));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}

BENCHMARK(BM_parse_continuous_docs)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_parse_normal_docs)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_parse_continuous_no_docs)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_make_change_meta);
BENCHMARK(BM_serialize);
BENCHMARK(BM_row_to_record)->Unit(benchmark::kMicrosecond);

} // namespace

BENCHMARK_MAIN();
