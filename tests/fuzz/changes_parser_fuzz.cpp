// Fuzzes the chunked decoder and the _changes parser together. The first
// input byte picks the feed kind, framing, a split stride and a small row
// limit, so the same corpus explores pieces split at many boundaries.
#include "couch/changes_parser.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    std::uint8_t const mode = data[0];
    std::string_view in(reinterpret_cast<char const*>(data + 1), size - 1);
    auto const kind = (mode & 1) ? couch::feed_kind::continuous : couch::feed_kind::normal;
    bool const chunked = (mode & 2) != 0;
    std::size_t const stride = 1 + (mode >> 4);
    std::size_t const max_row = (mode & 4) ? 64 : (std::size_t{1} << 20);

    couch::chunked_decoder decoder;
    couch::changes_parser parser(kind, max_row);
    std::vector<couch::row> rows;
    boost::system::error_code ec;
    while (!in.empty() && !ec) {
        auto piece_in = in.substr(0, stride);
        in.remove_prefix(piece_in.size());
        if (!chunked) {
            ec = parser.feed(piece_in, rows);
            continue;
        }
        while (!piece_in.empty() && !ec && !decoder.done()) {
            std::string_view body;
            ec = decoder.next(piece_in, body);
            if (!ec && !body.empty()) {
                ec = parser.feed(body, rows);
            }
        }
    }
    if (!ec) {
        ec = parser.finish(rows);
    }
    // Invariants: every row has an id; a row with a seq keeps JSON text; the
    // last row handed out after a clean normal body has a seq.
    for (auto const& r : rows) {
        if (!r.seq.empty() && r.seq.raw_json().empty()) {
            __builtin_trap();
        }
    }
    if (!ec && kind == couch::feed_kind::normal && parser.ended() && parser.has_last_seq() && !rows.empty() &&
        rows.back().seq.empty()) {
        __builtin_trap();
    }
    return 0;
}
