#include "couch/all_dbs.hpp"
#include "couch/changes_parser.hpp"
#include "couch/db_updates_parser.hpp"
#include "couch/shard_seq.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// Expected values were counted in the recordings independently (a few lines
// of Python with json.loads over the de-chunked bodies) and agree with the
// fixtures README (15a: 636 rows, 314 created, 314 updated, 8 deleted).

namespace {

std::string recording(std::string const& name) {
    return test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + name);
}

std::pair<bool, std::string_view> split_response(std::string const& raw) {
    auto const end = raw.find("\r\n\r\n");
    BOOST_REQUIRE(end != std::string::npos);
    std::string_view headers(raw.data(), end);
    bool const chunked = headers.find("Transfer-Encoding: chunked") != std::string_view::npos;
    return {chunked, std::string_view(raw).substr(end + 4)};
}

struct parsed {
    std::vector<couch::db_update> events;
    boost::system::error_code ec;
    couch::seq last_seq;
    bool ended = false;
    std::uint64_t heartbeats = 0;
    std::string detail;
};

// Drives the chunked decoder and the parser over `wire` in pieces ending at
// `cuts`, or `stride` bytes at a time when stride > 0.
parsed run(std::string_view wire, bool chunked, couch::feed_kind kind, std::vector<std::size_t> cuts,
           std::size_t stride = 0, std::size_t max_row = std::size_t{64} << 10) {
    if (stride > 0) {
        cuts.clear();
        for (std::size_t c = stride; c < wire.size(); c += stride) {
            cuts.push_back(c);
        }
    }
    parsed r;
    couch::chunked_decoder dec;
    couch::db_updates_parser parser(kind, max_row);
    auto deliver = [&](std::string_view in) {
        while (!r.ec && !in.empty()) {
            if (!chunked) {
                r.ec = parser.feed(in, r.events);
                break;
            }
            if (dec.done()) {
                break;
            }
            std::string_view piece;
            if (auto ec = dec.next(in, piece)) {
                r.ec = ec;
                break;
            }
            if (!piece.empty()) {
                r.ec = parser.feed(piece, r.events);
            }
        }
    };
    std::size_t from = 0;
    for (auto cut : cuts) {
        deliver(wire.substr(from, cut - from));
        from = cut;
    }
    deliver(wire.substr(from));
    if (!r.ec) {
        r.ec = parser.finish();
    }
    r.last_seq = parser.last_seq();
    r.ended = parser.ended();
    r.heartbeats = parser.heartbeats();
    r.detail = parser.error_detail();
    return r;
}

void check_same(parsed const& a, parsed const& b) {
    BOOST_REQUIRE_EQUAL(a.events.size(), b.events.size());
    BOOST_TEST(a.ec == b.ec);
    BOOST_TEST(a.last_seq.raw_json() == b.last_seq.raw_json());
    BOOST_TEST(a.ended == b.ended);
    for (std::size_t i = 0; i < a.events.size(); ++i) {
        BOOST_TEST(a.events[i].db_name == b.events[i].db_name);
        BOOST_TEST(a.events[i].type_name == b.events[i].type_name);
        BOOST_TEST((a.events[i].type == b.events[i].type));
        BOOST_TEST(a.events[i].seq.raw_json() == b.events[i].seq.raw_json());
    }
}

// Whole, one byte at a time, and cut once at every byte boundary (every
// `single_cut_stride`-th for the big 15a); each must give the same result.
parsed sweep(std::string const& name, couch::feed_kind kind, std::size_t single_cut_stride = 1) {
    auto const raw = recording(name);
    auto const [chunked, wire] = split_response(raw);
    auto const whole = run(wire, chunked, kind, {});
    BOOST_TEST_CONTEXT(name << " byte by byte") { check_same(whole, run(wire, chunked, kind, {}, 1)); }
    for (std::size_t cut = 1; cut < wire.size(); cut += single_cut_stride) {
        auto const split = run(wire, chunked, kind, {cut});
        BOOST_TEST_CONTEXT(name << " cut at " << cut) { check_same(whole, split); }
        if (split.events.size() != whole.events.size()) {
            break;
        }
    }
    return whole;
}

void check_event(couch::db_update const& e, std::string_view db, couch::db_update_type type,
                 std::string_view seq_prefix) {
    BOOST_TEST(e.db_name == db);
    BOOST_TEST((e.type == type));
    BOOST_TEST(e.type_name == couch::to_string(type));
    BOOST_TEST(e.seq.raw_json().rfind("\"" + std::string(seq_prefix) + "-g1AAAA", 0) == 0u);
}

// Every _db_updates seq is a clustered seq of the q=2 _global_changes db,
// and its prefix is the one the event shows.
void check_seqs_decode(parsed const& p) {
    for (auto const& e : p.events) {
        auto const d = couch::decode_shard_seq(e.seq);
        BOOST_TEST_CONTEXT(e.db_name << " " << e.type_name) {
            BOOST_TEST((d.shape == couch::seq_shape::clustered));
            BOOST_TEST(d.shards.size() == 2u);
            BOOST_TEST(e.seq.raw_json().rfind("\"" + std::to_string(d.number) + "-", 0) == 0u);
        }
    }
}

using t = couch::db_update_type;

parsed parse_text(std::string_view body, couch::feed_kind kind, std::size_t max_row = std::size_t{64} << 10) {
    return run(body, false, kind, {}, 0, max_row);
}

} // namespace

BOOST_AUTO_TEST_SUITE(db_updates)

BOOST_AUTO_TEST_CASE(normal_08b_every_split) {
    auto const r = sweep("08b_db_updates_normal.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.ended);
    BOOST_REQUIRE_EQUAL(r.events.size(), 6u);
    check_event(r.events[0], "dbu_a", t::created, "2");
    check_event(r.events[1], "_dbs", t::updated, "3");
    check_event(r.events[2], "dbu_a", t::updated, "4");
    check_event(r.events[3], "dbu_b", t::created, "5");
    check_event(r.events[4], "dbu_b", t::deleted, "6");
    check_event(r.events[5], "dbu_b", t::updated, "7");
    // last_seq byte-exact, equal to the last row's here.
    BOOST_TEST(r.last_seq.raw_json() == r.events[5].seq.raw_json());
    BOOST_TEST(r.last_seq.raw_json() ==
               "\"7-g1AAAACbeJzLYWBgYMpgTmEQTM4vTc5ISXIwNDLXMwBCwxyQVCJDUv3___-zMpgTWXKBAuwWaZamJqbG2DTgMSaPBUgyNACp_"
               "1DTmCGmGScaJZlgNS0LAAPUJ_w\"");
    check_seqs_decode(r);
}

BOOST_AUTO_TEST_CASE(continuous_08c_every_split) {
    auto const r = sweep("08c_db_updates_continuous_heartbeat500.http", couch::feed_kind::continuous);
    BOOST_TEST(!r.ec); // the client hung up: no terminator, but no partial line either
    BOOST_TEST(!r.ended);
    BOOST_TEST(r.last_seq.empty());
    BOOST_TEST(r.heartbeats == 4u);
    BOOST_REQUIRE_EQUAL(r.events.size(), 8u);
    check_event(r.events[0], "dbu_a", t::created, "2");
    check_event(r.events[4], "dbu_b", t::deleted, "6");
    check_event(r.events[6], "_dbs", t::updated, "8");
    check_event(r.events[7], "dbu_c", t::created, "9");
    check_seqs_decode(r);
}

BOOST_AUTO_TEST_CASE(longpoll_08d_every_split) {
    auto const r = sweep("08d_db_updates_longpoll_since_now.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.ended);
    BOOST_REQUIRE_EQUAL(r.events.size(), 1u);
    check_event(r.events[0], "dbu_c", t::updated, "10");
    BOOST_TEST(r.last_seq.raw_json() == r.events[0].seq.raw_json());
}

BOOST_AUTO_TEST_CASE(normal_15a_whole_history) {
    auto const r = sweep("15a_db_updates_normal_since0.http", couch::feed_kind::normal, 509);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.ended);
    BOOST_REQUIRE_EQUAL(r.events.size(), 636u);
    std::map<t, std::size_t> by_type;
    for (auto const& e : r.events) {
        ++by_type[e.type];
    }
    BOOST_TEST(by_type[t::created] == 314u);
    BOOST_TEST(by_type[t::updated] == 314u);
    BOOST_TEST(by_type[t::deleted] == 8u);
    BOOST_TEST(by_type[t::other] == 0u);
    check_event(r.events.front(), "_users", t::updated, "2");
    check_event(r.events.back(), "_dbs", t::updated, "960");
    BOOST_TEST(r.last_seq.raw_json().rfind("\"960-g1AAAA", 0) == 0u);
    // The fx_b recreate: deleted (911-), created (912-), updated (913-).
    std::vector<std::string> fx_b;
    for (auto const& e : r.events) {
        if (e.db_name == "fx_b") {
            fx_b.push_back(e.type_name + " " + e.seq.raw_json().substr(1, 4));
        }
    }
    BOOST_TEST((fx_b == std::vector<std::string>{"deleted 911-", "created 912-", "updated 913-"}));
    check_seqs_decode(r);
}

BOOST_AUTO_TEST_CASE(continuous_15b_live_recreate) {
    auto const r = sweep("15b_db_updates_continuous_since_now_live.http", couch::feed_kind::continuous);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.heartbeats == 6u);
    BOOST_REQUIRE_EQUAL(r.events.size(), 8u);
    check_event(r.events[0], "fx_c", t::created, "961");
    check_event(r.events[1], "_dbs", t::updated, "962");
    check_event(r.events[2], "fx_c", t::updated, "963");
    check_event(r.events[3], "fx_c", t::deleted, "964");
    check_event(r.events[4], "_dbs", t::updated, "965");
    check_event(r.events[5], "_dbs", t::updated, "966");
    check_event(r.events[6], "fx_c", t::created, "967");
    check_event(r.events[7], "fx_c", t::updated, "968");
    check_seqs_decode(r);
}

BOOST_AUTO_TEST_CASE(normal_15c_since_seq_coalesced) {
    auto const r = sweep("15c_db_updates_normal_since_seq.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    BOOST_REQUIRE_EQUAL(r.events.size(), 4u);
    check_event(r.events[0], "_dbs", t::updated, "963");
    check_event(r.events[1], "fx_c", t::deleted, "966");
    check_event(r.events[2], "fx_c", t::created, "967");
    check_event(r.events[3], "fx_c", t::updated, "968");
    BOOST_TEST(r.last_seq.raw_json() == r.events[3].seq.raw_json());
}

BOOST_AUTO_TEST_CASE(missing_global_changes_15d) {
    // A 404 body with a Content-Length: the parser names it a server error.
    auto const r = sweep("15d_db_updates_no_global_changes.http", couch::feed_kind::normal);
    BOOST_TEST(r.ec == couch::make_error_code(couch::errc::server_error_row));
    BOOST_TEST(r.detail.find("not_found") != std::string::npos);
    BOOST_TEST(r.events.empty());
    auto const c = sweep("15d_db_updates_no_global_changes.http", couch::feed_kind::continuous);
    BOOST_TEST(c.ec == couch::make_error_code(couch::errc::server_error_row));
}

BOOST_AUTO_TEST_CASE(continuous_15e_burst_is_one_row) {
    auto const r = sweep("15e_db_updates_continuous_burst.http", couch::feed_kind::continuous);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.heartbeats == 5u);
    BOOST_REQUIRE_EQUAL(r.events.size(), 1u);
    check_event(r.events[0], "fx_a", t::updated, "969");
}

BOOST_AUTO_TEST_CASE(continuous_end_line_and_odd_rows) {
    auto const r = parse_text("{\"db_name\":\"a\",\"type\":\"created\",\"seq\":\"1-x\"}\r\n\n"
                              "{\"db_name\":\"b\",\"type\":\"ddoc_updated\",\"seq\":7}\n"
                              "{\"db_name\":\"c/d\",\"type\":\"deleted\",\"ok\":true}\n"
                              "{\"db_name\":\"e\",\"type\":\"updated\",\"seq\":null}\n"
                              "{\"last_seq\":\"9-y\"}\n\n",
                              couch::feed_kind::continuous);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.ended);
    BOOST_TEST(r.last_seq.raw_json() == "\"9-y\"");
    BOOST_TEST(r.heartbeats == 2u);
    BOOST_REQUIRE_EQUAL(r.events.size(), 4u);
    BOOST_TEST(r.events[0].seq.raw_json() == "\"1-x\"");
    BOOST_TEST((r.events[1].type == t::other));
    BOOST_TEST(r.events[1].type_name == "ddoc_updated");
    BOOST_TEST(r.events[1].seq.raw_json() == "7");
    BOOST_TEST(r.events[2].db_name == "c/d");
    BOOST_TEST(r.events[2].seq.empty()); // CouchDB 1.x rows have no seq
    BOOST_TEST(r.events[3].seq.empty());

    // Byte-exact seq even with spacing and escapes the serializer would change.
    auto const s = parse_text("{ \"db_name\" : \"a\" , \"seq\" : \"1-a\\/b\" , \"type\":\"created\" }\n",
                              couch::feed_kind::continuous);
    BOOST_REQUIRE_EQUAL(s.events.size(), 1u);
    BOOST_TEST(s.events[0].seq.raw_json() == "\"1-a\\/b\"");
}

BOOST_AUTO_TEST_CASE(malformed_and_oversized_input) {
    using couch::errc;
    using couch::feed_kind;
    auto const code = [](errc e) { return couch::make_error_code(e); };
    struct bad_case {
        std::string body;
        feed_kind kind;
        errc expected;
    };
    std::vector<bad_case> const cases{
        {"{\"db_name\":\"a\",\"type\":\"created\"}\n{\"last_seq\":1}\n{\"db_name\":\"b\",\"type\":\"created\"}\n",
         feed_kind::continuous, errc::malformed_body},
        {"{\"db_name\":\"a\",\"type\":\"crea", feed_kind::continuous, errc::truncated_body},
        {"not json\n", feed_kind::continuous, errc::malformed_row},
        {"[1]\n", feed_kind::continuous, errc::malformed_row},
        {"{\"type\":\"created\"}\n", feed_kind::continuous, errc::malformed_row},
        {"{\"db_name\":1,\"type\":\"created\"}\n", feed_kind::continuous, errc::malformed_row},
        {"{\"db_name\":\"a\"}\n", feed_kind::continuous, errc::malformed_row},
        {"{\"db_name\":\"a\",\"type\":\"created\",\"seq\":[1]}\n", feed_kind::continuous, errc::malformed_row},
        {"{\"error\":\"unauthorized\",\"reason\":\"x\"}\n", feed_kind::continuous, errc::server_error_row},
        {"{\"db_name\":\"" + std::string(70000, 'a') + "\",\"type\":\"created\"}\n", feed_kind::continuous,
         errc::row_too_large},
        {std::string(70000, 'a'), feed_kind::continuous, errc::row_too_large},
        {"[]", feed_kind::normal, errc::malformed_body},
        {"{\"results\":[]} x", feed_kind::normal, errc::malformed_body},
        {"{\"results\":[1]}", feed_kind::normal, errc::malformed_body},
        {"{\"results\":{}}", feed_kind::normal, errc::malformed_body},
        {"{\"last_seq\":\"1-x\"}", feed_kind::normal, errc::malformed_body},
        {"{\"results\":[{\"db_name\":\"a\",\"type\":\"created\"}", feed_kind::normal, errc::truncated_body},
        {"{\"results\":[{\"db_name\":\"a\",\"ty", feed_kind::normal, errc::truncated_body},
        {"{\"results\":[{\"db_name\":\"a\",\"type\":\"created\",}]}", feed_kind::normal, errc::malformed_row},
        {"{\"results\":[],\"pad\":\"" + std::string(70000, ' ') + "\"}", feed_kind::normal, errc::envelope_too_large},
        {"{\"results\":[{\"db_name\":\"" + std::string(70000, 'a') + "\",\"type\":\"created\"}]}", feed_kind::normal,
         errc::row_too_large},
        {"{\"results\":[{\"db_name\":\"a\",\"type\":\"x\",\"d\":" + std::string(40, '[') + std::string(40, ']') + "}]}",
         feed_kind::normal, errc::malformed_row},
    };
    for (auto const& c : cases) {
        BOOST_TEST_CONTEXT(c.body.substr(0, 80)) {
            auto const whole = parse_text(c.body, c.kind);
            BOOST_TEST(whole.ec == code(c.expected));
            BOOST_TEST(!whole.detail.empty());
            // Byte at a time: the same error.
            BOOST_TEST(run(c.body, false, c.kind, {}, 1).ec == code(c.expected));
        }
    }
    // Events before an error are kept; errors are sticky.
    couch::db_updates_parser p(couch::feed_kind::continuous);
    std::vector<couch::db_update> out;
    BOOST_TEST(p.feed("{\"db_name\":\"a\",\"type\":\"created\"}\nnope\n", out) == code(errc::malformed_row));
    BOOST_TEST(out.size() == 1u);
    BOOST_TEST(p.feed("{\"db_name\":\"b\",\"type\":\"created\"}\n", out) == code(errc::malformed_row));
    BOOST_TEST(out.size() == 1u);
    BOOST_TEST(p.finish() == code(errc::malformed_row));
    p.reset(couch::feed_kind::normal);
    BOOST_TEST(!p.feed("{\"results\":[],\"last_seq\":0}", out));
    BOOST_TEST(!p.finish());
    BOOST_TEST(p.last_seq().raw_json() == "0");
    // A small row limit applies to normal rows too.
    auto const small = run("{\"results\":[{\"db_name\":\"abcdef\",\"type\":\"created\"}]}", false,
                           couch::feed_kind::normal, {}, 0, 16);
    BOOST_TEST(small.ec == code(errc::row_too_large));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------

namespace {

std::vector<std::string> all_dbs_of(std::string const& name) {
    auto const raw = recording(name);
    auto const [chunked, wire] = split_response(raw);
    BOOST_REQUIRE(chunked);
    couch::chunked_decoder dec;
    std::string body;
    std::string_view in = wire;
    while (!in.empty() && !dec.done()) {
        std::string_view piece;
        BOOST_REQUIRE(!dec.next(in, piece));
        body.append(piece);
    }
    BOOST_REQUIRE(dec.done());
    std::vector<std::string> names;
    std::string detail;
    BOOST_REQUIRE(!couch::parse_all_dbs(body, names, 1'000'000, &detail));
    return names;
}

std::string percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
            i += 2;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

// A stand-in for CouchDB's _all_dbs over `all` (sorted): honours start_key
// (inclusive, JSON) and limit unless told to ignore them.
std::vector<std::string> serve(std::vector<std::string> const& all, std::string const& query, bool use_start_key = true,
                               bool use_limit = true) {
    std::optional<std::string> start;
    std::size_t limit = all.size();
    std::string_view q = query;
    while (!q.empty()) {
        auto const amp = q.find('&');
        auto const param = q.substr(0, amp);
        q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
        if (param.starts_with("start_key=")) {
            start = std::string(boost::json::parse(percent_decode(param.substr(10))).as_string());
        } else if (param.starts_with("limit=")) {
            limit = std::stoul(std::string(param.substr(6)));
        }
    }
    std::vector<std::string> page;
    for (auto const& n : all) {
        if (use_start_key && start && n < *start) {
            continue;
        }
        if (use_limit && page.size() == limit) {
            break;
        }
        page.push_back(n);
    }
    return page;
}

} // namespace

BOOST_AUTO_TEST_SUITE(all_dbs)

BOOST_AUTO_TEST_CASE(recorded_pages) {
    auto const all = all_dbs_of("16a_all_dbs.http");
    BOOST_REQUIRE_EQUAL(all.size(), 314u);
    BOOST_TEST(all[0] == "_global_changes");
    BOOST_TEST(all[1] == "_replicator");
    BOOST_TEST(all[2] == "_users");
    BOOST_TEST(all[3] == "fx_a");
    BOOST_TEST(all.back() == "rz2");
    BOOST_TEST(std::is_sorted(all.begin(), all.end())); // byte order, which the pager relies on
    BOOST_TEST((all_dbs_of("16b_all_dbs_limit2.http") == std::vector<std::string>{"_global_changes", "_replicator"}));
    BOOST_TEST((all_dbs_of("16c_all_dbs_start_key.http") == std::vector<std::string>{"fx_a", "fx_b", "fx_c"}));
    // The stand-in server gives what the recorded server gave for the same queries.
    BOOST_TEST((serve(all, "limit=2") == all_dbs_of("16b_all_dbs_limit2.http")));
    BOOST_TEST((serve(all, "start_key=" + couch::json_query_key("fx_") + "&limit=3") ==
                all_dbs_of("16c_all_dbs_start_key.http")));
    BOOST_TEST(couch::json_query_key("fx_") == "%22fx_%22"); // as recorded in 16c's request
    BOOST_TEST(couch::json_query_key("a/b+c$(d)") == "%22a%2Fb%2Bc%24%28d%29%22");
}

BOOST_AUTO_TEST_CASE(parse_errors) {
    std::vector<std::string> names{"kept"};
    std::string detail;
    auto const bad = couch::make_error_code(couch::errc::malformed_body);
    BOOST_TEST(couch::parse_all_dbs("{\"a\":1}", names, 10, &detail) == bad);
    BOOST_TEST(!detail.empty());
    BOOST_TEST(couch::parse_all_dbs("[\"a\",1]", names) == bad);
    BOOST_TEST(couch::parse_all_dbs("[\"a\"", names) == bad);
    BOOST_TEST(couch::parse_all_dbs("", names) == bad);
    BOOST_TEST(couch::parse_all_dbs("[\"a\",\"b\",\"c\"]", names, 2) ==
               couch::make_error_code(couch::errc::row_too_large));
    BOOST_TEST((names == std::vector<std::string>{"kept"}));
    BOOST_TEST(!couch::parse_all_dbs(" [ ] ", names));
    BOOST_TEST(!couch::parse_all_dbs("[\"x\"]", names));
    BOOST_TEST((names == std::vector<std::string>{"kept", "x"}));
}

BOOST_AUTO_TEST_CASE(pager_lists_every_name_once) {
    auto const all = all_dbs_of("16a_all_dbs.http");
    for (std::size_t page_size : {1u, 2u, 3u, 7u, 100u, 313u, 314u, 315u, 1000u}) {
        BOOST_TEST_CONTEXT("page size " << page_size) {
            couch::all_dbs_pager pager(page_size);
            std::vector<std::string> got;
            auto step = couch::all_dbs_pager::step::more;
            std::size_t requests = 0;
            while (step == couch::all_dbs_pager::step::more && requests < 1000) {
                auto const page = serve(all, pager.next_query());
                BOOST_TEST(page.size() <= page_size + 1);
                step = pager.on_page(page, got);
                ++requests;
            }
            BOOST_TEST((step == couch::all_dbs_pager::step::done));
            BOOST_TEST((got == all));
            BOOST_TEST(pager.names_seen() == all.size());
            // P new names per page, and one more request when 314 divides evenly.
            BOOST_TEST(requests == all.size() / page_size + 1);
            BOOST_TEST(pager.pages() == requests);
        }
    }
    couch::all_dbs_pager first(2);
    BOOST_TEST(first.next_query() == "limit=2");
    std::vector<std::string> got;
    first.on_page(all_dbs_of("16b_all_dbs_limit2.http"), got);
    BOOST_TEST(first.next_query() == "start_key=%22_replicator%22&limit=3");
}

BOOST_AUTO_TEST_CASE(pager_against_servers_that_do_not_page) {
    auto const all = all_dbs_of("16a_all_dbs.http");
    using step = couch::all_dbs_pager::step;
    {
        // Ignores limit (pouchdb-server): everything in the first answer.
        couch::all_dbs_pager pager(10);
        std::vector<std::string> got;
        BOOST_TEST((pager.on_page(serve(all, pager.next_query(), true, false), got) == step::done));
        BOOST_TEST((got == all));
    }
    {
        // Honours limit but ignores start_key: cannot page; says so.
        couch::all_dbs_pager pager(10);
        std::vector<std::string> got;
        // Page 2 (limit 11) repeats page 1 plus one name, page 3 nothing new.
        BOOST_TEST((pager.on_page(serve(all, pager.next_query(), false, true), got) == step::more));
        BOOST_TEST((pager.on_page(serve(all, pager.next_query(), false, true), got) == step::more));
        BOOST_TEST(got.size() == 11u);
        BOOST_TEST((pager.on_page(serve(all, pager.next_query(), false, true), got) == step::not_advancing));
        BOOST_TEST(got.size() == 11u);
        BOOST_TEST((pager.on_page(all, got) == step::not_advancing)); // sticky
        BOOST_TEST(got.size() == 11u);
    }
    {
        // Ignores both, with exactly one page worth of databases: complete.
        std::vector<std::string> const five(all.begin(), all.begin() + 5);
        couch::all_dbs_pager pager(5);
        std::vector<std::string> got;
        BOOST_TEST((pager.on_page(five, got) == step::more));
        BOOST_TEST((pager.on_page(five, got) == step::done));
        BOOST_TEST((got == five));
    }
    {
        // The last name of a page is deleted before the next request: the
        // next page starts after it and nothing is lost or repeated.
        auto shrinking = all;
        couch::all_dbs_pager pager(3);
        std::vector<std::string> got;
        BOOST_TEST((pager.on_page(serve(shrinking, pager.next_query()), got) == step::more));
        shrinking.erase(std::find(shrinking.begin(), shrinking.end(), got.back()));
        while (pager.on_page(serve(shrinking, pager.next_query()), got) == step::more) {
        }
        BOOST_TEST((got == all));
    }
}

BOOST_AUTO_TEST_SUITE_END()
