// Fuzzes the _all_dbs page parser, the pager that walks the pages and the
// start_key encoder. The first input byte is the page size (mode % 8 + 1) and
// the name limit (bit 3: at most 4 names); the rest is split at every 0xFF
// byte into page bodies (at most 16; the rest is the last page), parsed in
// turn and fed to one pager. Checked:
//   * parse_all_dbs leaves `names` untouched on error and appends exactly
//     the array's strings on success (a JSON re-parse agrees);
//   * the pager never hands out a name of an earlier page again, each new
//     name is greater than every name of the earlier pages, it ends after a short or overlong page, keeps answering
//     the same step afterwards, and its query is well-formed;
//   * json_query_key percent-decodes back to the JSON string of the key.
#include "couch/all_dbs.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

// The inverse of the percent-encoding half of json_query_key; traps on
// anything it would never produce.
std::string percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char const c = s[i];
        bool const unreserved =
            (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            out.push_back(c);
            continue;
        }
        if (c != '%' || i + 2 >= s.size() || hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0) {
            __builtin_trap();
        }
        out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
        i += 2;
    }
    return out;
}

void check_key(std::string const& key) {
    auto const json = percent_decode(couch::json_query_key(key));
    boost::system::error_code ec;
    auto const v = boost::json::parse(json, ec);
    // Only valid UTF-8 survives as a JSON string; other bytes are escaped or
    // rejected by the parser, which is not this encoder's business.
    if (!ec && (!v.is_string() || std::string_view(v.get_string()) != key)) {
        __builtin_trap();
    }
}

void check_parse(std::string_view body, std::size_t max_names, std::vector<std::string>& names) {
    std::vector<std::string> const before = names;
    std::string detail;
    auto const ec = couch::parse_all_dbs(body, names, max_names, &detail);
    if (ec) {
        if (names != before || detail.empty()) {
            __builtin_trap(); // on error nothing is appended, and the error says why
        }
        return;
    }
    boost::system::error_code jec;
    auto const v = boost::json::parse(body, jec);
    if (jec || !v.is_array() || v.get_array().size() > max_names ||
        names.size() != before.size() + v.get_array().size()) {
        __builtin_trap();
    }
    for (std::size_t i = 0; i < v.get_array().size(); ++i) {
        auto const* s = v.get_array()[i].if_string();
        if (s == nullptr || std::string_view(*s) != names[before.size() + i]) {
            __builtin_trap();
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    std::uint8_t const mode = data[0];
    std::size_t const page_size = (mode % 8) + 1;
    std::size_t const max_names = (mode & 8) ? 4 : 1000;
    std::string_view in(reinterpret_cast<char const*>(data + 1), size - 1);

    couch::all_dbs_pager pager(page_size);
    std::set<std::string> handed_out; // the names of the earlier pages' `fresh`
    std::size_t fresh_total = 0;
    std::string greatest;
    bool have_greatest = false;
    auto step = couch::all_dbs_pager::step::more;
    std::size_t pages = 0;
    while (true) {
        auto const cut = pages + 1 < 16 ? in.find('\xff') : std::string_view::npos;
        auto const body = in.substr(0, cut);
        std::vector<std::string> names;
        check_parse(body, max_names, names);
        check_key(std::string(body.substr(0, 64)));

        auto const query = pager.next_query();
        if (query.empty() || query.find("limit=") == std::string::npos) {
            __builtin_trap();
        }
        auto const was = step;
        std::vector<std::string> fresh;
        step = pager.on_page(names, fresh);
        ++pages;
        if (was != couch::all_dbs_pager::step::more) {
            if (step != was || !fresh.empty()) {
                __builtin_trap(); // finished: the same answer, nothing new
            }
        } else {
            for (auto const& n : fresh) {
                if (handed_out.count(n) != 0 || (have_greatest && n <= greatest)) {
                    __builtin_trap(); // never again, and increasing across pages
                }
            }
            // (A page may repeat a name within itself: CouchDB never does, and
            // the pager does not look for it.)
            handed_out.insert(fresh.begin(), fresh.end());
            fresh_total += fresh.size();
            for (auto const& n : names) {
                if (!have_greatest || n > greatest) {
                    greatest = n;
                    have_greatest = true;
                }
            }
            std::size_t const limit = pages == 1 ? page_size : page_size + 1;
            if (names.size() != limit && step != couch::all_dbs_pager::step::done) {
                __builtin_trap(); // a short (or overlong) page is the last one
            }
            if (names.size() == limit && fresh.empty() && step != couch::all_dbs_pager::step::not_advancing) {
                __builtin_trap();
            }
        }
        if (pager.names_seen() != fresh_total) {
            __builtin_trap();
        }
        if (cut == std::string_view::npos) {
            break;
        }
        in.remove_prefix(cut + 1);
    }
    return 0;
}
