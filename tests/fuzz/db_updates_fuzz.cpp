// Fuzzes the _db_updates parser (behind the chunked decoder) and the
// _all_dbs page parser. The first input byte picks the feed kind (bit 0:
// continuous), chunked framing (bit 1), a 64-byte row limit (bit 2) and a
// split stride (high nibble + 1). Every input is parsed twice, whole and in
// stride-sized pieces: both must give the same events and the same error.
#include "couch/all_dbs.hpp"
#include "couch/changes_parser.hpp"
#include "couch/db_updates_parser.hpp"

#include <boost/json/parse.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct outcome {
    std::vector<couch::db_update> events;
    boost::system::error_code ec;
    std::string last_seq;
    bool ended = false;
};

outcome run(std::string_view in, couch::feed_kind kind, bool chunked, std::size_t stride, std::size_t max_row) {
    outcome o;
    couch::chunked_decoder decoder;
    couch::db_updates_parser parser(kind, max_row);
    while (!in.empty() && !o.ec) {
        auto piece_in = in.substr(0, stride);
        in.remove_prefix(piece_in.size());
        if (!chunked) {
            o.ec = parser.feed(piece_in, o.events);
            continue;
        }
        while (!piece_in.empty() && !o.ec && !decoder.done()) {
            std::string_view body;
            o.ec = decoder.next(piece_in, body);
            if (!o.ec && !body.empty()) {
                o.ec = parser.feed(body, o.events);
            }
        }
    }
    if (!o.ec) {
        o.ec = parser.finish();
    }
    o.last_seq = parser.last_seq().raw_json();
    o.ended = parser.ended();
    return o;
}

bool is_json_scalar(std::string const& raw) {
    boost::system::error_code ec;
    auto const v = boost::json::parse(raw, ec);
    return !ec && (v.is_string() || v.is_number());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    std::uint8_t const mode = data[0];
    std::string_view const in(reinterpret_cast<char const*>(data + 1), size - 1);
    auto const kind = (mode & 1) ? couch::feed_kind::continuous : couch::feed_kind::normal;
    bool const chunked = (mode & 2) != 0;
    std::size_t const max_row = (mode & 4) ? 64 : (std::size_t{64} << 10);
    std::size_t const stride = 1 + (mode >> 4);

    auto const whole = run(in, kind, chunked, in.size() + 1, max_row);
    auto const split = run(in, kind, chunked, stride, max_row);
    if (whole.ec != split.ec || whole.events.size() != split.events.size() || whole.last_seq != split.last_seq ||
        whole.ended != split.ended) {
        __builtin_trap();
    }
    for (std::size_t i = 0; i < whole.events.size(); ++i) {
        auto const& a = whole.events[i];
        auto const& b = split.events[i];
        if (a.db_name != b.db_name || a.type_name != b.type_name || a.seq.raw_json() != b.seq.raw_json()) {
            __builtin_trap();
        }
        // A seq is kept as the JSON text of a string or number, nothing else.
        if (!a.seq.empty() && !is_json_scalar(a.seq.raw_json())) {
            __builtin_trap();
        }
    }
    if (!whole.last_seq.empty() && !is_json_scalar(whole.last_seq)) {
        __builtin_trap();
    }

    std::vector<std::string> names;
    std::string detail;
    if (couch::parse_all_dbs(in, names, 1000, &detail) && !names.empty()) {
        __builtin_trap(); // on error nothing is appended
    }
    return 0;
}
