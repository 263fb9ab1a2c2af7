// Differential check of the DOM-free row reader (couch::row_scanner behind
// couch::changes_parser) against the DOM path it replaced: for every row of
// the CouchDB 3.4.3 recordings and a set of tricky rows, the parser must give
// exactly what building a Boost.JSON DOM of the row and reading it gave —
// the same fields, the same byte-exact seq and doc bytes, the same error
// code and message.
#include "couch/changes_parser.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct outcome {
    boost::system::error_code ec;
    std::string detail;
    bool has_row = false;
    std::string id;
    std::string seq;
    bool deleted = false;
    std::vector<std::string> revs;
    bool has_doc = false;
    couch::doc_fields doc;
    std::string doc_text;
    std::size_t wire_bytes = 0;
    std::string last_seq;
    std::optional<std::uint64_t> pending;
};

std::string describe(std::string_view id) {
    return id.empty() ? std::string("doc id unknown") : "doc id '" + std::string(id) + "'";
}

// The DOM path as it was before the scanner (changes_parser::on_row_value of
// commit eff7a70), for one continuous-feed line: parse the row into a
// boost::json::value, then read it.
outcome reference(std::string_view text) {
    outcome o;
    auto fail = [&](couch::errc e, std::string detail) {
        o.ec = e;
        o.detail = std::move(detail);
        return o;
    };
    boost::json::parse_options opt;
    opt.max_depth = 1000;
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec, {}, opt);
    if (ec) {
        return fail(couch::errc::malformed_row,
                    describe(couch::sniff_doc_id(text)) + ": invalid JSON (" + ec.message() + ")");
    }
    auto* obj = v.if_object();
    if (obj == nullptr) {
        return fail(couch::errc::malformed_row, "a change row is not a JSON object");
    }
    if (auto const* err = obj->if_contains("error")) {
        std::string detail = "error " + boost::json::serialize(*err);
        if (auto const* reason = obj->if_contains("reason")) {
            detail += ", reason " + boost::json::serialize(*reason);
        }
        return fail(couch::errc::server_error_row, std::move(detail));
    }
    auto const* id = obj->if_contains("id");
    if (id == nullptr) {
        auto const* ls = obj->if_contains("last_seq");
        if (ls != nullptr && (ls->is_string() || ls->is_number())) {
            o.last_seq = std::string(couch::find_member_raw(text, "last_seq"));
            if (auto const* p = obj->if_contains("pending"); p != nullptr && p->is_number()) {
                boost::system::error_code pec;
                auto const n = p->to_number<std::uint64_t>(pec);
                if (!pec) {
                    o.pending = n;
                }
            }
            return o;
        }
        return fail(couch::errc::malformed_row, "a change row has no id");
    }
    if (!id->is_string()) {
        return fail(couch::errc::malformed_row, "a change row's id is not a string");
    }
    o.has_row = true;
    o.id.assign(id->get_string().data(), id->get_string().size());
    auto const* s = obj->if_contains("seq");
    if (s == nullptr || !(s->is_null() || s->is_string() || s->is_number())) {
        o.has_row = false;
        auto detail = describe(o.id) + ": row without a valid seq";
        o.id.clear();
        return fail(couch::errc::malformed_row, std::move(detail));
    }
    if (s->is_string()) {
        constexpr std::string_view key = "\"seq\":\"";
        auto const& str = s->get_string();
        auto const pos = text.find(key);
        if (pos != std::string_view::npos) {
            auto const start = pos + key.size() - 1;
            auto const raw = text.substr(start, str.size() + 2);
            if (raw.size() == str.size() + 2 && raw.back() == '"' &&
                raw.substr(1, str.size()) == std::string_view(str.data(), str.size())) {
                o.seq = std::string(raw);
            }
        }
    }
    if (!s->is_null() && o.seq.empty()) {
        std::string candidate = boost::json::serialize(*s);
        constexpr std::string_view key = "\"seq\":";
        bool found = false;
        for (auto pos = text.find(key); pos != std::string_view::npos; pos = text.find(key, pos + 1)) {
            if (text.substr(pos + key.size()).starts_with(candidate)) {
                found = true;
                break;
            }
        }
        if (!found) {
            auto const raw = couch::find_member_raw(text, "seq");
            if (!raw.empty()) {
                candidate.assign(raw.data(), raw.size());
            }
        }
        o.seq = std::move(candidate);
    }
    if (auto const* d = obj->if_contains("deleted"); d != nullptr && d->is_bool()) {
        o.deleted = d->get_bool();
    }
    if (auto const* ch = obj->if_contains("changes"); ch != nullptr && ch->is_array()) {
        for (auto const& c : ch->get_array()) {
            if (auto const* co = c.if_object()) {
                if (auto const* rev = co->if_contains("rev"); rev != nullptr && rev->is_string()) {
                    o.revs.emplace_back(rev->get_string().data(), rev->get_string().size());
                }
            }
        }
    }
    if (auto const* doc = obj->if_contains("doc"); doc != nullptr && doc->is_object()) {
        o.has_doc = true;
        o.doc = couch::doc_fields::from_object(doc->get_object());
        o.doc_text = std::string(couch::find_member_raw(text, "doc"));
    }
    o.wire_bytes = text.size();
    return o;
}

outcome from_rows(couch::changes_parser const& parser, boost::system::error_code ec, std::vector<couch::row> const& rows) {
    outcome o;
    o.ec = ec;
    o.detail = parser.error_detail();
    o.last_seq = parser.last_seq().raw_json();
    o.pending = parser.pending();
    BOOST_REQUIRE_LE(rows.size(), 1u);
    if (rows.size() == 1) {
        auto const& r = rows.front();
        o.has_row = true;
        o.id = r.id;
        o.seq = r.seq.raw_json();
        o.deleted = r.deleted;
        o.revs = r.revs;
        o.has_doc = r.has_doc;
        o.doc = r.doc;
        o.doc_text = std::string(r.doc_text);
        o.wire_bytes = r.wire_bytes;
    }
    return o;
}

// The parser under test, continuous feed: the row as one line.
outcome scanned_continuous(std::string_view text) {
    couch::changes_parser parser(couch::feed_kind::continuous);
    parser.keep_doc_text(true);
    std::vector<couch::row> rows;
    auto ec = parser.feed(std::string(text) + "\n", rows);
    if (!ec && rows.empty() && !parser.ended()) {
        // A null-seq row is held until a row with a seq comes.
        ec = parser.feed("{\"seq\":\"9-z\",\"id\":\"next\",\"changes\":[]}\n", rows);
        BOOST_TEST(rows.size() == 2u);
        rows.resize(1);
    }
    if (!ec) {
        ec = parser.finish(rows);
    }
    return from_rows(parser, ec, rows);
}

// The parser under test, normal feed: the row as the only result, fed in
// pieces of `stride` bytes (the row straddles feed() calls).
outcome scanned_normal(std::string_view text, std::size_t stride) {
    couch::changes_parser parser(couch::feed_kind::normal);
    parser.keep_doc_text(true);
    std::vector<couch::row> rows;
    std::string const body = "{\"results\":[\n" + std::string(text) + "\n]}";
    boost::system::error_code ec;
    for (std::size_t at = 0; at < body.size() && !ec; at += stride) {
        ec = parser.feed(std::string_view(body).substr(at, stride), rows);
    }
    if (!ec) {
        ec = parser.finish(rows);
    }
    return from_rows(parser, ec, rows);
}

void check_same(outcome const& want, outcome const& got) {
    BOOST_TEST(want.ec == got.ec);
    BOOST_TEST(want.detail == got.detail);
    BOOST_REQUIRE_EQUAL(want.has_row, got.has_row);
    BOOST_TEST(want.id == got.id);
    BOOST_TEST(want.seq == got.seq);
    BOOST_TEST(want.deleted == got.deleted);
    BOOST_TEST((want.revs == got.revs));
    BOOST_TEST(want.has_doc == got.has_doc);
    BOOST_TEST((want.doc == got.doc));
    using f = couch::doc_fields;
    for (auto field : {f::rev, f::doc_type, f::type, f::xmlns, f::domain, f::name}) {
        BOOST_TEST(want.doc.get(field).value_or("<absent>") == got.doc.get(field).value_or("<absent>"));
    }
    BOOST_TEST(want.doc_text == got.doc_text);
    BOOST_TEST(want.wire_bytes == got.wire_bytes);
}

// Both feed kinds against the reference. A last_seq line is a row only in a
// continuous feed; a normal feed reads it as a row without an id.
void differential(std::string_view text) {
    auto const want = reference(text);
    BOOST_TEST_CONTEXT("continuous: " << text.substr(0, 300)) { check_same(want, scanned_continuous(text)); }
    if (!want.last_seq.empty()) {
        return;
    }
    for (std::size_t stride : {std::size_t{1} << 20, std::size_t{7}, std::size_t{1}}) {
        if (stride == 1 && text.size() > 4096) {
            continue; // byte by byte: enough for the small rows
        }
        if (!text.starts_with("{") || want.detail.find("invalid JSON") != std::string::npos) {
            // A normal feed frames rows itself: text that is not one JSON
            // object fails there as a malformed body, or with the part read
            // so far (parser_test covers those).
            continue;
        }
        auto got = scanned_normal(text, stride);
        BOOST_TEST_CONTEXT("normal/" << stride << ": " << text.substr(0, 300)) { check_same(want, got); }
    }
}

// The rows of a recorded response: the lines that start with {"seq".
std::vector<std::string> recorded_rows(std::filesystem::path const& file) {
    auto const raw = test_support::read_file(file.string());
    auto const end = raw.find("\r\n\r\n");
    if (end == std::string::npos) {
        return {};
    }
    std::string_view const headers(raw.data(), end);
    std::string_view wire = std::string_view(raw).substr(end + 4);
    std::string body;
    if (headers.find("Transfer-Encoding: chunked") != std::string_view::npos) {
        couch::chunked_decoder dec;
        while (!wire.empty() && !dec.done()) {
            std::string_view piece;
            if (dec.next(wire, piece)) {
                break;
            }
            body.append(piece);
        }
    } else {
        body.assign(wire);
    }
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos < body.size()) {
        auto eol = body.find('\n', pos);
        if (eol == std::string::npos) {
            eol = body.size();
        }
        std::string_view line = std::string_view(body).substr(pos, eol - pos);
        pos = eol + 1;
        while (!line.empty() && (line.back() == '\r' || line.back() == ',')) {
            line.remove_suffix(1);
        }
        if (line.starts_with("{\"seq\"") || line.starts_with("{\"last_seq\"")) {
            out.emplace_back(line);
        }
    }
    return out;
}

std::string big_doc_row() {
    std::string doc = R"({"_id":"big","_rev":"3-abc","doc_type":"CommCareCase","type":"patient","domain":"d")";
    for (int i = 0; i < 20000; ++i) {
        doc += ",\"k" + std::to_string(i) + "\":\"value " + std::to_string(i) + " with \\\"quotes\\\" and \\u00e9\"";
        if (i % 1000 == 0) {
            doc += R"(,"nested":{"doc_type":"Inner","domain":"inner","deep":[[[{"type":"x"}]]]})";
        }
    }
    doc += R"(,"name":")" + std::string(100000, 'n') + "\"}";
    return R"({"seq":"9-g1AAAA","id":"big","changes":[{"rev":"3-abc"}],"doc":)" + doc + "}";
}

} // namespace

BOOST_AUTO_TEST_SUITE(row_scanner)

BOOST_AUTO_TEST_CASE(every_recorded_row_reads_as_the_dom_read_it) {
    std::size_t rows = 0;
    std::size_t with_doc = 0;
    for (auto const& entry : std::filesystem::directory_iterator(test_support::data_dir() + "/couchdb-3.4.3")) {
        if (entry.path().extension() != ".http") {
            continue;
        }
        for (auto const& text : recorded_rows(entry.path())) {
            BOOST_TEST_CONTEXT(entry.path().filename().string()) { differential(text); }
            ++rows;
            with_doc += text.find("\"doc\":{") != std::string::npos ? 1 : 0;
        }
    }
    // The recordings hold a few hundred rows, many with documents.
    BOOST_TEST(rows >= 100u);
    BOOST_TEST(with_doc >= 20u);
}

BOOST_AUTO_TEST_CASE(tricky_rows_read_as_the_dom_read_them) {
    std::vector<std::string> const rows = {
        // escapes and unicode in ids, revs and doc fields
        R"({"seq":"1-a","id":"a\"b\\c\/d\u00e9\ud83d\ude00","changes":[{"rev":"1-\u0078"}]})",
        "{\"seq\":\"1-a\",\"id\":\"\xc3\xbc-doc \xe2\x82\xac\",\"changes\":[{\"rev\":\"1-x\"}],\"doc\":{\"doc_type\":\"Caf\xc3\xa9\",\"domain\":\"\xe6\x97\xa5\"}}",
        R"({"seq":"2-b","id":"f","changes":[{"rev":"2-y"}],"doc":{"_id":"f","_rev":"2-y","doc_type":"XFormInstance","xmlns":"http:\/\/openrosa.org\/formdesigner\/AB-CD","domain":"d\u00e9mo\n"}})",
        // doc_type-like keys inside sub-objects and arrays must not count
        R"({"seq":"3-c","id":"n","changes":[{"rev":"1-n"}],"doc":{"meta":{"doc_type":"Wrong","domain":"no","_rev":"no"},"list":[{"type":"x"},{"xmlns":"y"}],"doc_type":"CommCareCase","type":"t","domain":"yes"}})",
        R"({"seq":"3-c","id":"n2","changes":[{"rev":"1-n"}],"doc":{"doc_type":"Domain","name":"dom","a":{"b":{"name":"deep"}}}})",
        R"({"seq":"3-c","id":"n3","changes":[{"rev":"1-n"}],"doc":{"a":[{"doc_type":"X"}],"b":{"doc":{"doc_type":"Y"}}}})",
        // keys that look like the ones read; long keys
        R"({"seq":"4-d","id":"k","changes":[{"rev":"1-k"}],"doc":{"doc_types":"A","domainX":"B","_revs":"C","typ":"D","":"E","a_very_long_key_that_is_not_read":"F","xmlns":"G"}})",
        // fields that are not strings count as absent; duplicates: the last wins
        R"({"seq":"5-e","id":"t","changes":[{"rev":"1-t"}],"doc":{"doc_type":5,"domain":null,"xmlns":{"a":1},"type":["x"],"name":true,"_rev":1.5}})",
        R"({"seq":"5-e","id":"t2","changes":[{"rev":"1-t"}],"doc":{"domain":"a","domain":"b","doc_type":"X","doc_type":7,"type":[],"type":"T"}})",
        R"({"seq":"5-e","id":"dup","id":"dup2","seq":"5-f","deleted":true,"deleted":1,"changes":[{"rev":"1-a"}],"changes":[{"rev":"2-b"},{"rev":"2-c","rev":"2-d"},{"rev":3},7,"s"],"doc":{"doc_type":"A"},"doc":{"doc_type":"B"}})",
        R"({"seq":"5-e","id":"dup3","changes":[{"rev":"1-a"}],"doc":{"doc_type":"A"},"doc":null})",
        R"({"seq":"5-e","id":"arr","changes":{"rev":"1-a"},"doc":[{"doc_type":"A"}]})",
        // deletions: without doc, with a tombstone, with doc null
        R"({"seq":"6-f","id":"gone","changes":[{"rev":"2-y"}],"deleted":true})",
        R"({"seq":"6-f","id":"gone","changes":[{"rev":"2-y"}],"deleted":true,"doc":{"_id":"gone","_rev":"2-y","_deleted":true}})",
        R"({"seq":"6-f","id":"gone","changes":[{"rev":"2-y"}],"deleted":true,"doc":null})",
        R"({"seq":"6-f","id":"gone","changes":[],"deleted":"yes"})",
        // seqs: numbers, null, escapes, whitespace, position, nested seq keys
        R"({"seq":42,"id":"n","changes":[]})",
        R"({"seq":-0,"id":"n","changes":[]})",
        R"({"seq":1.5e3,"id":"n","changes":[]})",
        R"({"seq":1.50,"id":"n","changes":[]})",
        R"({"seq":18446744073709551615,"id":"n","changes":[]})",
        R"({"seq":-9223372036854775808,"id":"n","changes":[]})",
        R"({"seq":null,"id":"n","changes":[{"rev":"1-a"}]})",
        R"({"seq":"with \"escape\" \u0041","id":"n","changes":[]})",
        R"({ "seq" : "1-spaced" , "id" : "n" , "changes" : [ { "rev" : "1-a" } ] })",
        R"({"id":"n","changes":[],"doc":{"seq":"not this","x":{"seq":1}},"seq":"2-last"})",
        R"({"id":"n","changes":[],"doc":{"seq":12345},"seq":123})",
        R"({"id":"n","changes":[],"doc":{"seq":1E3},"seq":1.0e3})",
        // huge document
        big_doc_row(),
        // not rows: errors and the end line
        R"({"error":"not_found","reason":"missing"})",
        R"({"id":"a","seq":1,"error":null})",
        R"({"id":"a","seq":1,"error":{"x":[1]},"reason":"r"})",
        R"({"last_seq":"5-x","pending":3})",
        R"({"last_seq":17})",
        R"({"last_seq":null})",
        R"([1,2])",
        R"("a string")",
        R"(5)",
        R"({"seq":1,"changes":[]})",
        R"({"id":7,"seq":1})",
        R"({"id":"a","id":7,"seq":1})",
        R"({"id":"a","changes":[]})",
        R"({"id":"a","seq":{"x":1}})",
        R"({"id":"a","seq":true})",
        R"({"id":"a","seq":[1]})",
        R"({"id":"a","seq":"1","seq":false})",
        // malformed JSON: the same parse errors
        R"({"id":"a","seq":1,,})",
        R"({"id":"a","seq":1} x)",
        R"({"id":"a","seq":01})",
        R"({"id":"a","seq":1,"doc":{"x":tru}})",
        "{\"id\":\"a\xff\",\"seq\":1}",
        "{\"id\":\"a\",\"seq\":1,\"doc\":{\"x\":\"\xed\xa0\x80\"}}",
        R"({"id":"a","seq":1,"doc":{"x":"\ud800"}})",
        "{\"id\":\"a\",\"seq\":1,\"doc\":{\"x\":\"tab\there\"}}",
        R"({"id":"a","seq":1e99999})",
        std::string(1001, '[') + std::string(1001, ']'),
        R"({"id":"a","seq":1,"doc":)" + std::string(999, '[') + std::string(999, ']') + "}",
        R"({"id":"a","seq":1,"doc":)" + std::string(1000, '[') + std::string(1000, ']') + "}",
    };
    for (auto const& text : rows) {
        differential(text);
    }
}

BOOST_AUTO_TEST_SUITE_END()
