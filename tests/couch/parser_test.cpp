#include "couch/changes_parser.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace couch {
// Lets BOOST_TEST print an expected error in a failure message.
inline std::ostream& operator<<(std::ostream& os, errc e) { return os << make_error_code(e).message(); }
} // namespace couch

namespace {

struct parsed {
    std::vector<couch::row> rows;
    boost::system::error_code ec;       // first error from the decoder or parser
    bool decoder_done = false;          // saw the terminating chunk
    couch::seq last_seq;
    std::optional<std::uint64_t> pending;
    bool ended = false;
    std::string detail;
};

std::string recording(std::string const& name) {
    return test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + name);
}

// Splits a recorded response into (is_chunked, body-on-the-wire).
std::pair<bool, std::string_view> split_response(std::string const& raw) {
    auto const end = raw.find("\r\n\r\n");
    BOOST_REQUIRE(end != std::string::npos);
    std::string_view headers(raw.data(), end);
    bool const chunked = headers.find("Transfer-Encoding: chunked") != std::string_view::npos;
    return {chunked, std::string_view(raw).substr(end + 4)};
}

// Drives decoder + parser over `wire`, delivered in pieces cut at `cuts`.
parsed run(std::string_view wire, bool chunked, couch::feed_kind kind, std::vector<std::size_t> const& cuts,
           std::size_t max_row = std::size_t{64} << 20) {
    parsed r;
    couch::chunked_decoder dec;
    couch::changes_parser parser(kind, max_row);
    parser.keep_doc_text(true); // also checks the kept doc bytes at every split
    std::size_t from = 0;
    auto deliver = [&](std::string_view in) {
        while (!r.ec && !in.empty()) {
            if (!chunked) {
                r.ec = parser.feed(in, r.rows);
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
                r.ec = parser.feed(piece, r.rows);
            }
        }
    };
    for (auto cut : cuts) {
        deliver(wire.substr(from, cut - from));
        from = cut;
    }
    deliver(wire.substr(from));
    if (!r.ec) {
        r.ec = parser.finish(r.rows);
    }
    r.decoder_done = dec.done();
    r.last_seq = parser.last_seq();
    r.pending = parser.pending();
    r.ended = parser.ended();
    r.detail = parser.error_detail();
    return r;
}

void check_same(parsed const& a, parsed const& b) {
    BOOST_REQUIRE_EQUAL(a.rows.size(), b.rows.size());
    BOOST_TEST(a.ec == b.ec);
    BOOST_TEST(a.last_seq.raw_json() == b.last_seq.raw_json());
    for (std::size_t i = 0; i < a.rows.size(); ++i) {
        BOOST_TEST(a.rows[i].id == b.rows[i].id);
        BOOST_TEST(a.rows[i].seq.raw_json() == b.rows[i].seq.raw_json());
        BOOST_TEST((a.rows[i].revs == b.rows[i].revs));
        BOOST_TEST(a.rows[i].deleted == b.rows[i].deleted);
        BOOST_TEST(a.rows[i].has_doc == b.rows[i].has_doc);
        BOOST_TEST((a.rows[i].doc == b.rows[i].doc));
        BOOST_TEST(a.rows[i].doc_text == b.rows[i].doc_text);
        BOOST_TEST(a.rows[i].wire_bytes == b.rows[i].wire_bytes);
    }
}

// Parses a recording whole, then split at every byte boundary (one cut), and
// requires the same outcome each time. Returns the whole-body result.
parsed sweep(std::string const& name, couch::feed_kind kind) {
    auto const raw = recording(name);
    auto const [chunked, wire] = split_response(raw);
    auto const whole = run(wire, chunked, kind, {});
    for (std::size_t cut = 1; cut < wire.size(); ++cut) {
        auto const split = run(wire, chunked, kind, {cut});
        BOOST_TEST_CONTEXT(name << " cut at " << cut) { check_same(whole, split); }
        if (split.rows.size() != whole.rows.size()) {
            break; // one failure report is enough
        }
    }
    return whole;
}

bool starts_with(std::string const& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

} // namespace

BOOST_AUTO_TEST_SUITE(parser)

BOOST_AUTO_TEST_CASE(normal_feed_every_split) {
    auto const r = sweep("03a_changes_normal.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.decoder_done);
    BOOST_TEST(r.ended);
    BOOST_REQUIRE_EQUAL(r.rows.size(), 8u);
    BOOST_TEST(r.rows.front().id == "97ce7c4fb05742a7bcfa5c0ce2a4fced"); // Domain first: q=2 order kept
    BOOST_TEST(r.rows.back().id == "768540dd93bb44ec8105527c48dc7911");
    BOOST_TEST(starts_with(r.last_seq.raw_json(), "\"10-g1AAAA"));
    BOOST_TEST((r.pending == std::optional<std::uint64_t>(0)));
    for (auto const& row : r.rows) {
        BOOST_TEST(starts_with(row.seq.raw_json(), "\""));
        BOOST_TEST(!row.revs.empty());
        BOOST_TEST(!row.has_doc);
    }
}

BOOST_AUTO_TEST_CASE(normal_feed_with_docs_every_split) {
    auto const r = sweep("03b_changes_include_docs.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    BOOST_REQUIRE_EQUAL(r.rows.size(), 8u);
    for (auto const& row : r.rows) {
        BOOST_REQUIRE(row.has_doc);
        BOOST_TEST(boost::json::parse(row.doc_text).at("_id").as_string() == row.id);
        BOOST_TEST(row.doc.get(couch::doc_fields::rev).value_or("<absent>") == row.revs.front());
    }
}

BOOST_AUTO_TEST_CASE(limit_batch_reports_pending_and_last_seq) {
    auto const r = sweep("03e_changes_limit2.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    BOOST_REQUIRE_EQUAL(r.rows.size(), 2u);
    BOOST_TEST((r.pending == std::optional<std::uint64_t>(6)));
    BOOST_TEST(r.rows.back().seq.raw_json() == r.last_seq.raw_json());
}

BOOST_AUTO_TEST_CASE(seq_interval_null_seqs_are_covered_by_a_later_seq) {
    auto const r = sweep("03g_changes_seq_interval3_limit5.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    BOOST_REQUIRE_EQUAL(r.rows.size(), 5u);
    BOOST_TEST(r.rows[0].seq.empty());
    BOOST_TEST(r.rows[1].seq.empty());
    BOOST_TEST(starts_with(r.rows[2].seq.raw_json(), "\"4-"));
    BOOST_TEST(r.rows[3].seq.empty());
    // The last row takes the response's last_seq, so a batch never ends in a
    // row one cannot checkpoint at.
    BOOST_TEST(r.rows[4].seq.raw_json() == r.last_seq.raw_json());
    BOOST_TEST((r.pending == std::optional<std::uint64_t>(3)));
}

// Large documents: the rows held back for a seq are handed out once they
// reach max_held_bytes, so memory does not grow with seq_interval x the
// document size (issue #16's memory bound); order and seqs stay exact.
BOOST_AUTO_TEST_CASE(null_seq_rows_past_the_held_byte_limit_are_handed_out_early) {
    std::string const big(1u << 20, 'x');
    std::string body = R"({"results":[)";
    int const n = 6;
    for (int i = 0; i < n; ++i) {
        body += i == 0 ? "" : ",";
        auto const seq = i == n - 1 ? std::string(R"("6-g1AAAA")") : std::string("null");
        auto const id = "d" + std::to_string(i);
        body += R"({"seq":)" + seq + R"(,"id":")" + id + R"(","changes":[{"rev":"1-a"}],"doc":{"_id":")" + id +
                R"(","_rev":"1-a","doc_type":"CommCareCase","pad":")" + big + R"("}})";
    }
    body += R"(],"last_seq":"6-g1AAAA","pending":0})";
    couch::changes_parser p(couch::feed_kind::normal);
    std::vector<couch::row> out;
    // Everything but the envelope's end: the last row (with its seq) is
    // not complete yet, so only the byte limit can have released rows.
    auto const cut = body.find(R"({"seq":"6-g1AAAA")");
    BOOST_REQUIRE(!p.feed(body.substr(0, cut), out));
    std::size_t const limit_rows = (couch::changes_parser::max_held_bytes + big.size() - 1) / big.size();
    BOOST_TEST(out.size() == limit_rows); // 4 rows of 1 MiB reach 4 MiB
    for (auto const& r : out) {
        BOOST_TEST(r.seq.empty());
    }
    BOOST_REQUIRE(!p.feed(body.substr(cut), out));
    BOOST_REQUIRE(!p.finish(out));
    BOOST_REQUIRE_EQUAL(out.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        BOOST_TEST(out[static_cast<std::size_t>(i)].id == "d" + std::to_string(i));
    }
    BOOST_TEST(out.back().seq.raw_json() == R"("6-g1AAAA")");
}

BOOST_AUTO_TEST_CASE(empty_results_since_now) {
    auto const r = sweep("03h_changes_since_now.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.rows.empty());
    BOOST_TEST(r.ended);
    BOOST_TEST(!r.last_seq.empty());
}

BOOST_AUTO_TEST_CASE(continuous_with_heartbeats_every_split) {
    auto const r = sweep("05a_continuous_since0_heartbeat500_include_docs.http", couch::feed_kind::continuous);
    BOOST_TEST(!r.ec);
    BOOST_TEST(!r.ended); // the client hung up; no last_seq line
    BOOST_REQUIRE_EQUAL(r.rows.size(), 9u);
    for (auto const& row : r.rows) {
        BOOST_TEST(row.has_doc);
        BOOST_TEST(!row.seq.empty());
    }
}

BOOST_AUTO_TEST_CASE(continuous_ends_with_last_seq_line) {
    auto const r = sweep("05b_continuous_since0_timeout1500.http", couch::feed_kind::continuous);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.ended);
    BOOST_TEST(r.decoder_done);
    BOOST_REQUIRE_EQUAL(r.rows.size(), 9u);
    BOOST_TEST(starts_with(r.last_seq.raw_json(), "\"11-"));
    BOOST_TEST((r.pending == std::optional<std::uint64_t>(0)));
}

BOOST_AUTO_TEST_CASE(continuous_live_writes_and_hard_delete) {
    auto const r = sweep("05c_continuous_since_now_live_writes.http", couch::feed_kind::continuous);
    BOOST_TEST(!r.ec);
    BOOST_REQUIRE_EQUAL(r.rows.size(), 5u);
    auto const& del = r.rows.back();
    BOOST_TEST(del.id == "3a7ecbb47e20407f8223444c73f2743e");
    BOOST_TEST(del.deleted);
    BOOST_REQUIRE(del.has_doc);
    BOOST_TEST(boost::json::parse(del.doc_text).at("_deleted").as_bool());
    BOOST_TEST(starts_with(del.seq.raw_json(), "\"16-"));
}

BOOST_AUTO_TEST_CASE(db_deleted_race_404_inside_body_is_reported) {
    auto const r = sweep("06k_continuous_db_deleted_race_404_rawsocket.http", couch::feed_kind::continuous);
    BOOST_TEST(r.ec == couch::errc::chunk_size_not_hex);
    BOOST_REQUIRE_EQUAL(r.rows.size(), 3u);
    BOOST_TEST(r.rows[2].id == "case-1");
    auto const b = sweep("06b_continuous_open_when_db_deleted.http", couch::feed_kind::continuous);
    BOOST_TEST(b.ec == couch::errc::chunk_size_not_hex);
    BOOST_TEST(b.rows.size() == 3u);
}

BOOST_AUTO_TEST_CASE(db_deleted_usual_outcome_is_a_last_seq_end) {
    auto const r = sweep("06h_continuous_heartbeat_db_deleted_rawsocket.http", couch::feed_kind::continuous);
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.ended);
    BOOST_TEST(r.decoder_done);
    BOOST_TEST(r.rows.size() == 2u);
}

BOOST_AUTO_TEST_CASE(escaped_ids_come_back_decoded) {
    auto const r = sweep("10a_changes_escaped_ids_include_docs.http", couch::feed_kind::normal);
    BOOST_TEST(!r.ec);
    std::vector<std::string> ids;
    for (auto const& row : r.rows) {
        ids.push_back(row.id);
    }
    for (std::string const want : {"a/b", "\xc3\xbc-doc", "100%", "with space", "unicode-body"}) {
        BOOST_TEST((std::find(ids.begin(), ids.end(), want) != ids.end()), "missing id " << want);
    }
    auto const c = sweep("10c_changes_escaped_ids_continuous.http", couch::feed_kind::continuous);
    BOOST_TEST(!c.ec);
    BOOST_TEST(c.rows.size() == r.rows.size());
}

BOOST_AUTO_TEST_CASE(large_row_within_limit_and_over_limit) {
    auto const raw = recording("11a_continuous_include_docs_large_doc.http");
    auto const [chunked, wire] = split_response(raw);
    // A handful of cuts inside and around the 1 MB row.
    auto const ok = run(wire, chunked, couch::feed_kind::continuous, {3, 600, 70000, 500000, 1000000});
    BOOST_TEST(!ok.ec);
    BOOST_REQUIRE_EQUAL(ok.rows.size(), 3u);
    BOOST_TEST(ok.rows[1].id == "large-form");
    BOOST_TEST(ok.rows[1].wire_bytes > 1000000u);
    BOOST_TEST(ok.ended);

    auto const big = run(wire, chunked, couch::feed_kind::continuous, {600, 70000}, 100000);
    BOOST_TEST(big.ec == couch::errc::row_too_large);
    BOOST_TEST(big.detail.find("large-form") != std::string::npos, big.detail);
    BOOST_TEST(big.rows.size() == 1u); // small-before only: never a silent skip
}

BOOST_AUTO_TEST_CASE(normal_feed_row_over_limit_names_the_doc) {
    std::string body = R"({"results":[{"seq":1,"id":"small","changes":[]},)"
                       R"({"seq":2,"id":"huge","changes":[],"doc":{"x":")" +
                       std::string(5000, 'x') + R"("}}],"last_seq":2})";
    auto const r = run(body, false, couch::feed_kind::normal, {100, 200}, 1000);
    BOOST_TEST(r.ec == couch::errc::row_too_large);
    BOOST_TEST(r.detail.find("huge") != std::string::npos, r.detail);
    BOOST_TEST(r.rows.size() == 1u);
}

BOOST_AUTO_TEST_CASE(pouchdb_dialect_integer_seqs_seq_last_no_pending) {
    std::string const body =
        R"({"results":[{"id":"d1","changes":[{"rev":"1-a"}],"doc":{"_id":"d1","_rev":"1-a"},"seq":1},)"
        R"({"id":"d2","changes":[{"rev":"2-b"}],"deleted":true,"doc":{"_id":"d2","_rev":"2-b","_deleted":true},"seq":3}],"last_seq":3})";
    for (std::size_t cut = 1; cut < body.size(); ++cut) {
        auto const r = run(body, false, couch::feed_kind::normal, {cut});
        BOOST_REQUIRE(!r.ec);
        BOOST_REQUIRE_EQUAL(r.rows.size(), 2u);
        BOOST_TEST(r.rows[0].seq.raw_json() == "1");
        BOOST_TEST(r.rows[1].seq.raw_json() == "3");
        BOOST_TEST(r.rows[1].deleted);
        BOOST_TEST(r.last_seq.raw_json() == "3");
        BOOST_TEST(!r.pending.has_value());
    }
}

BOOST_AUTO_TEST_CASE(seq_text_is_byte_exact_even_when_reserialization_differs) {
    auto const r = run(R"({"id":"x","seq": 1.50 ,"changes":[]})" "\n" R"({"id":"y","seq":"a\/b","changes":[]})" "\n",
                       false, couch::feed_kind::continuous, {});
    BOOST_TEST(!r.ec);
    BOOST_REQUIRE_EQUAL(r.rows.size(), 2u);
    BOOST_TEST(r.rows[0].seq.raw_json() == "1.50");
    BOOST_TEST(r.rows[1].seq.raw_json() == R"("a\/b")");
}

BOOST_AUTO_TEST_CASE(malformed_input_yields_documented_errors) {
    using couch::errc;
    auto cont = [](std::string_view s) { return run(s, false, couch::feed_kind::continuous, {}); };
    auto norm = [](std::string_view s) { return run(s, false, couch::feed_kind::normal, {}); };
    BOOST_TEST(cont("{not json}\n").ec == errc::malformed_row);
    BOOST_TEST(cont("[1,2]\n").ec == errc::malformed_row);
    BOOST_TEST(cont(R"({"seq":1,"changes":[]})" "\n").ec == errc::malformed_row); // no id
    BOOST_TEST(cont(R"({"id":"a","changes":[]})" "\n").ec == errc::malformed_row); // no seq
    BOOST_TEST(cont(R"({"error":"not_found","reason":"missing"})" "\n").ec == errc::server_error_row);
    BOOST_TEST(cont(R"({"id":"a","seq":1)").ec == errc::truncated_body);
    BOOST_TEST(cont("{\"last_seq\":5}\n{\"id\":\"a\",\"seq\":6}\n").ec == errc::malformed_body);
    BOOST_TEST(norm(R"([1])").ec == errc::malformed_body);
    BOOST_TEST(norm(R"({"results":[1]})").ec == errc::malformed_body);
    BOOST_TEST(norm(R"({"results":[{"id":"a","seq":1})").ec == errc::truncated_body);
    BOOST_TEST(norm(R"({"results":[{"id":"a","seq":1}]} x)").ec == errc::malformed_body);
    BOOST_TEST(norm(R"({"results":[],"last_seq":1,"x":})").ec == errc::malformed_body);
    BOOST_TEST(run("zz\r\n", true, couch::feed_kind::continuous, {}).ec == errc::chunk_size_not_hex);
    BOOST_TEST(run("3\r\nabcX", true, couch::feed_kind::continuous, {}).ec == errc::bad_chunk_framing);
    BOOST_TEST(run("1234567890abcdef0\r\n", true, couch::feed_kind::continuous, {}).ec == errc::bad_chunk_framing);
}

BOOST_AUTO_TEST_CASE(chunk_extensions_and_trailers) {
    std::string const wire = "5;name=value\r\n{\"id\"\r\n11\r\n:\"a\",\"seq\":1}\n\n\n\n\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
    couch::chunked_decoder dec;
    std::string body;
    std::string_view in = wire;
    while (!in.empty() && !dec.done()) {
        std::string_view piece;
        BOOST_REQUIRE(!dec.next(in, piece));
        body.append(piece);
    }
    BOOST_TEST(dec.done());
    BOOST_TEST(in == "NEXT"); // the next response's bytes are left alone
    BOOST_TEST(body == "{\"id\":\"a\",\"seq\":1}\n\n\n\n");
}

BOOST_AUTO_TEST_CASE(member_lookup_and_id_sniffing) {
    BOOST_TEST(couch::find_member_raw(R"( { "a" : [1,{"seq":2}], "seq" : "x\"y" } )", "seq") == R"("x\"y")");
    BOOST_TEST(couch::find_member_raw(R"({"a":1})", "seq").empty());
    BOOST_TEST(couch::find_member_raw(R"([])", "seq").empty());
    BOOST_TEST(couch::sniff_doc_id(R"({"seq":"1-x","id":"a\"b","changes")") == "a\"b");
    BOOST_TEST(couch::sniff_doc_id(R"({"seq":"1-x","doc":{"_id":"q")").empty());
}

// Kept doc bytes live in a per-feed()-call arena owned by the rows
// (row.doc_storage): they must stay valid after the parser is reset or
// destroyed, also for a row that straddles two feed() calls.
BOOST_AUTO_TEST_CASE(docs_outlive_the_parser_and_its_batches) {
    std::string const body = R"({"results":[)"
                             R"({"seq":"1-a","id":"a","changes":[{"rev":"1-x"}],"doc":{"_id":"a","n":"first value, long enough to be a heap string"}},)"
                             R"({"seq":"2-b","id":"b","changes":[{"rev":"1-y"}],"doc":{"_id":"b","n":"second value, long enough to be a heap string"}})"
                             R"(],"last_seq":"2-b","pending":0})";
    std::vector<couch::row> rows;
    {
        std::string input = body; // overwritten below: rows must not point into it
        couch::changes_parser parser(couch::feed_kind::normal);
        parser.keep_doc_text(true);
        // Cut inside the second row's doc: its first half arrives in the
        // first call, the rest in the second call.
        auto const cut = input.find("second value");
        BOOST_REQUIRE(!parser.feed(std::string_view(input).substr(0, cut), rows));
        BOOST_REQUIRE_EQUAL(rows.size(), 1u);
        BOOST_REQUIRE(!parser.feed(std::string_view(input).substr(cut), rows));
        BOOST_REQUIRE(!parser.finish(rows));
        std::fill(input.begin(), input.end(), 'X');
        parser.reset(couch::feed_kind::continuous);
        std::vector<couch::row> more;
        BOOST_REQUIRE(!parser.feed("{\"seq\":3,\"id\":\"c\",\"changes\":[],\"doc\":{\"_id\":\"c\"}}\n", more));
        BOOST_REQUIRE_EQUAL(more.size(), 1u);
        rows.push_back(std::move(more.front()));
    }
    BOOST_REQUIRE_EQUAL(rows.size(), 3u);
    for (auto const& r : rows) {
        BOOST_TEST(r.doc_storage != nullptr);
        BOOST_REQUIRE(r.has_doc);
        BOOST_TEST(boost::json::parse(r.doc_text).at("_id").as_string() == r.id);
    }
    BOOST_TEST(boost::json::parse(rows[0].doc_text).at("n").as_string() == "first value, long enough to be a heap string");
    BOOST_TEST(boost::json::parse(rows[1].doc_text).at("n").as_string() == "second value, long enough to be a heap string");
    BOOST_TEST(rows[1].seq.raw_json() == "\"2-b\"");
    // A row keeps its batch's arena alive on its own.
    couch::row const last = std::move(rows[1]);
    rows.clear();
    BOOST_TEST(last.doc_text == R"({"_id":"b","n":"second value, long enough to be a heap string"})");
}

// Without keep_doc_text the rows hold no arena and no doc bytes, but the
// fields a change record needs.
BOOST_AUTO_TEST_CASE(doc_fields_without_doc_text) {
    couch::changes_parser parser(couch::feed_kind::continuous);
    std::vector<couch::row> rows;
    BOOST_REQUIRE(!parser.feed(R"({"seq":"1-a","id":"a","changes":[{"rev":"1-x"}],"doc":{"_id":"a","_rev":"1-x","doc_type":"XFormInstance","xmlns":"http:\/\/openrosa.org\/x","domain":"d\u00e9mo"}})"
                               "\n",
                               rows));
    BOOST_REQUIRE_EQUAL(rows.size(), 1u);
    auto const& r = rows.front();
    BOOST_TEST(r.has_doc);
    BOOST_TEST(r.doc_storage == nullptr);
    BOOST_TEST(r.doc_text.empty());
    using f = couch::doc_fields;
    BOOST_TEST(*r.doc.get(f::rev) == "1-x");
    BOOST_TEST(*r.doc.get(f::doc_type) == "XFormInstance");
    BOOST_TEST(*r.doc.get(f::xmlns) == "http://openrosa.org/x");
    BOOST_TEST(*r.doc.get(f::domain) == "d\xc3\xa9mo");
    BOOST_TEST(!r.doc.get(f::type).has_value());
    BOOST_TEST(!r.doc.get(f::name).has_value());
}

BOOST_AUTO_TEST_SUITE_END()
