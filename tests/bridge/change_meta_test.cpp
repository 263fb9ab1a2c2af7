#include "bridge/change_meta.hpp"
#include "tests/bridge/strict_reader.hpp"
#include "tests/support/test_env.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include "couch/changes_parser.hpp"

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono;
using namespace std::chrono_literals;

// The clock of the golden records: 2024-05-06T07:08:09.123456789Z (the
// nanoseconds must be truncated, not rounded).
bridge::timestamp golden_now() {
    auto const t = sys_days{2024y / May / 6} + 7h + 8min + 9s + 123456789ns;
    return time_point_cast<bridge::timestamp::duration>(t);
}

struct golden_case {
    std::string file;
    std::string database;
    std::size_t row_number = 0;
    std::string id;
    std::string expected;
    std::size_t line = 0;
};

std::vector<golden_case> load_golden() {
    std::istringstream in(test_support::read_file(test_support::data_dir() + "/bridge/golden_records.txt"));
    std::vector<golden_case> cases;
    std::string line;
    std::size_t line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.empty() || line[0] == '#') {
            continue;
        }
        if (line.rfind("@ ", 0) != 0) {
            throw std::runtime_error("golden_records.txt:" + std::to_string(line_no) + ": expected a '@' header");
        }
        std::istringstream header(line.substr(2));
        golden_case c;
        header >> c.file >> c.database >> c.row_number;
        std::string rest;
        std::getline(header, rest);
        c.id = std::string(boost::json::parse(rest).as_string());
        c.line = line_no;
        if (!std::getline(in, c.expected)) {
            throw std::runtime_error("golden_records.txt:" + std::to_string(line_no) + ": no expected record");
        }
        ++line_no;
        cases.push_back(std::move(c));
    }
    return cases;
}

std::string to_json(bridge::change_meta const& m) {
    std::string out;
    bridge::serialize(m, out);
    return out;
}

// A well-formed record to mutate in the strict-reader tests.
std::string const good_record =
    R"({"document_id":"d","document_rev":"1-a","data_source_type":"couch","data_source_name":"db",)"
    R"("document_type":"CommCareCase","document_subtype":"patient","domain":"demo","is_deletion":false,)"
    R"("publish_timestamp":"2024-05-06T07:08:09.123456Z","attempts":0,)"
    R"("original_publication_datetime":"2024-05-06T07:08:09.123456Z","associated_document_id":null})";

std::string replace_once(std::string s, std::string const& from, std::string const& to) {
    auto const pos = s.find(from);
    BOOST_REQUIRE_MESSAGE(pos != std::string::npos, "test bug: '" << from << "' not in the record");
    s.replace(pos, from.size(), to);
    return s;
}

std::string rejection(std::string const& json) {
    try {
        bridge_test::read_change_meta_strict(json);
    } catch (std::runtime_error const& e) {
        return e.what();
    }
    return "accepted";
}

} // namespace

BOOST_AUTO_TEST_SUITE(change_meta)

BOOST_AUTO_TEST_CASE(golden_records_match_hand_written_expectations) {
    auto const cases = load_golden();
    BOOST_TEST_REQUIRE(cases.size() >= 20u);
    std::map<std::string, std::vector<couch::row>> rows_by_file;
    for (auto const& c : cases) {
        BOOST_TEST_CONTEXT("golden_records.txt:" << c.line << " (" << c.file << " row " << c.row_number << ")") {
            auto [it, inserted] = rows_by_file.try_emplace(c.file);
            if (inserted) {
                it->second = bridge_test::load_rows(c.file);
            }
            auto const& rows = it->second;
            BOOST_TEST_REQUIRE(c.row_number >= 1u);
            BOOST_TEST_REQUIRE(c.row_number <= rows.size());
            auto const& row = rows[c.row_number - 1];
            BOOST_TEST_REQUIRE(row.id == c.id);

            auto const meta = bridge::make_change_meta(row, c.database, golden_now());
            auto const json = to_json(meta);
            BOOST_TEST(json == c.expected);

            // The expectation itself is a valid record, and reading the
            // output back gives the record that was written.
            BOOST_TEST(bridge_test::read_change_meta_strict(c.expected) == meta);
            BOOST_TEST(bridge_test::read_change_meta_strict(json) == meta);
        }
    }
}

BOOST_AUTO_TEST_CASE(every_row_of_the_recordings_round_trips_through_the_strict_reader) {
    std::size_t checked = 0;
    for (auto const* file : {
             "couchdb-3.4.3/03b_changes_include_docs.http",
             "couchdb-3.4.3/03d_changes_all_docs_conflicts.http",
             "couchdb-3.4.3/05a_continuous_since0_heartbeat500_include_docs.http",
             "couchdb-3.4.3/05c_continuous_since_now_live_writes.http",
             "couchdb-3.4.3/10a_changes_escaped_ids_include_docs.http",
             "couchdb-3.4.3/14d_changes_q2.http",
             "couchdb-3.4.3/11a_continuous_include_docs_large_doc.http",
             "bridge/extra_rows.jsonl",
         }) {
        auto const rows = bridge_test::load_rows(file);
        BOOST_TEST_CONTEXT(file) {
            BOOST_TEST(!rows.empty());
            for (auto const& row : rows) {
                auto const meta = bridge::make_change_meta(row, "db", golden_now());
                auto const json = to_json(meta);
                bridge::change_meta back;
                BOOST_CHECK_NO_THROW(back = bridge_test::read_change_meta_strict(json));
                BOOST_TEST(back == meta, "row " << row.id);
                BOOST_TEST(meta.document_id == row.id);
                BOOST_TEST(meta.document_rev.has_value());
                ++checked;
            }
        }
    }
    BOOST_TEST(checked >= 30u);
}

BOOST_AUTO_TEST_CASE(timestamps_have_exactly_six_fraction_digits_and_z) {
    BOOST_TEST(bridge::format_timestamp(bridge::timestamp{}) == "1970-01-01T00:00:00.000000Z");
    BOOST_TEST(bridge::format_timestamp(golden_now()) == "2024-05-06T07:08:09.123456Z");
    // Truncated, never rounded up into the next microsecond or second.
    auto const almost = time_point_cast<bridge::timestamp::duration>(sys_days{1999y / December / 31} + 23h + 59min +
                                                                     59s + 999999999ns);
    BOOST_TEST(bridge::format_timestamp(almost) == "1999-12-31T23:59:59.999999Z");
    BOOST_TEST(bridge::format_timestamp(sys_days{2024y / February / 29} + 1us) == "2024-02-29T00:00:00.000001Z");
    // Before the epoch (negative durations) still counts forward within the second.
    BOOST_TEST(bridge::format_timestamp(bridge::timestamp{} - 1us) == "1969-12-31T23:59:59.999999Z");
    BOOST_TEST(bridge::format_timestamp(sys_days{2262y / January / 1}) == "2262-01-01T00:00:00.000000Z");
    for (auto t : {bridge::timestamp{}, golden_now(), almost, bridge::timestamp{} - 1us}) {
        auto const s = bridge::format_timestamp(t);
        BOOST_TEST(s.size() == bridge::timestamp_length);
        BOOST_TEST((bridge_test::parse_timestamp_strict(s) == floor<microseconds>(t)));
    }
}

BOOST_AUTO_TEST_CASE(make_change_meta_truncates_now_to_microseconds_for_both_timestamps) {
    couch::row row;
    row.id = "x";
    row.revs = {"1-a"};
    auto const m = bridge::make_change_meta(row, "db", golden_now());
    BOOST_TEST((m.publish_timestamp == m.original_publication_datetime));
    BOOST_TEST((m.publish_timestamp == floor<microseconds>(golden_now())));
    BOOST_TEST(m.attempts == 0);
    BOOST_TEST(m.data_source_type == "couch");
    BOOST_TEST(!m.associated_document_id.has_value());
}

BOOST_AUTO_TEST_CASE(serialize_appends_and_escapes_every_control_character) {
    bridge::change_meta m;
    m.document_id.push_back('\0');
    for (char c = 1; c < 0x20; ++c) {
        m.document_id.push_back(c);
    }
    m.document_id += "\"\\/\x7f\xc3\xa9";
    m.data_source_name = "db";
    m.associated_document_id = "assoc";
    m.attempts = 12345;
    std::string out = "prefix|";
    bridge::serialize(m, out);
    BOOST_TEST_REQUIRE(out.rfind("prefix|", 0) == 0u);
    auto const json = out.substr(7);
    for (unsigned char c : json) {
        BOOST_TEST(c >= 0x20u, "raw control character " << int(c) << " in the output");
    }
    BOOST_TEST(json.find(R"("document_id":"\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r)") !=
               std::string::npos);
    BOOST_TEST(json.find(R"(\u001f\"\\/)") != std::string::npos);
    auto const back = bridge_test::read_change_meta_strict(json);
    BOOST_TEST(back.document_id == m.document_id);
    BOOST_TEST(back.attempts == 12345);
    BOOST_TEST((back.associated_document_id == m.associated_document_id));
}

BOOST_AUTO_TEST_CASE(doc_type_families) {
    BOOST_TEST(bridge::doc_types::is_case("CommCareCase"));
    BOOST_TEST(bridge::doc_types::is_case("CommCareCase-Deleted"));
    BOOST_TEST(!bridge::doc_types::is_case("commcarecase"));
    for (auto const* t : {"XFormInstance", "XFormArchived", "XFormDeprecated", "XFormDuplicate", "XFormError",
                          "SubmissionErrorLog", "XFormInstance-Deleted", "XFormError-Deleted",
                          "SubmissionErrorLog-Deleted", "HQSubmission"}) {
        BOOST_TEST(bridge::doc_types::is_form(t), t);
    }
    BOOST_TEST(!bridge::doc_types::is_form("XForm"));
    BOOST_TEST(!bridge::doc_types::is_form("-Deleted"));
    BOOST_TEST(!bridge::doc_types::is_form("XFormInstance-Deleted-Deleted"));
    BOOST_TEST(bridge::doc_types::is_domain("Domain-DUPLICATE"));
    BOOST_TEST(!bridge::doc_types::is_domain("DomainX"));
    BOOST_TEST(bridge::doc_types::is_deletion("Anything-Deleted"));
    BOOST_TEST(bridge::doc_types::is_deletion("Domain-DUPLICATE"));
    BOOST_TEST(!bridge::doc_types::is_deletion("CommCareCase"));
    BOOST_TEST(!bridge::doc_types::is_deletion("Group-DUPLICATE"));
}

BOOST_AUTO_TEST_CASE(strict_reader_accepts_the_reference_record) {
    auto const m = bridge_test::read_change_meta_strict(good_record);
    BOOST_TEST(m.document_id == "d");
    BOOST_TEST((m.document_subtype == std::optional<std::string>("patient")));
    BOOST_TEST(!m.associated_document_id.has_value());
    BOOST_TEST(to_json(m) == good_record);
}

BOOST_AUTO_TEST_CASE(strict_reader_rejects_missing_extra_repeated_and_reordered_fields) {
    BOOST_TEST(rejection(replace_once(good_record, R"(,"associated_document_id":null)", "")) ==
               "not a ChangeMeta record: missing field 'associated_document_id'");
    BOOST_TEST(rejection(replace_once(good_record, R"("attempts":0,)", "")).find("'original_publication_datetime'") !=
               std::string::npos);
    BOOST_TEST(rejection(replace_once(good_record, "null}", R"(null,"extra":1})")) ==
               "not a ChangeMeta record: extra field 'extra'");
    BOOST_TEST(rejection(replace_once(good_record, R"("domain":"demo")", R"("tenant":"demo")")) ==
               "not a ChangeMeta record: extra field 'tenant'");
    BOOST_TEST(rejection(replace_once(good_record, "null}", R"(null,"document_id":"d"})")).find("extra field") !=
               std::string::npos);
    BOOST_TEST(rejection(replace_once(good_record, R"("document_rev":"1-a",)", R"("document_id":"e",)"))
                   .find("repeated") != std::string::npos);
    auto const swapped =
        replace_once(good_record, R"("domain":"demo","is_deletion":false)", R"("is_deletion":false,"domain":"demo")");
    BOOST_TEST(rejection(swapped).find("out of order") != std::string::npos);
    BOOST_TEST(rejection("[]").find("not a JSON object") != std::string::npos);
    BOOST_TEST(rejection(good_record + "x").find("invalid JSON") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(strict_reader_rejects_wrong_json_types) {
    struct mutation {
        char const* from;
        char const* to;
        char const* field;
    };
    for (auto const& m : std::vector<mutation>{
             {R"("document_id":"d")", R"("document_id":null)", "document_id"},
             {R"("document_id":"d")", R"("document_id":7)", "document_id"},
             {R"("document_rev":"1-a")", R"("document_rev":1)", "document_rev"},
             {R"("data_source_type":"couch")", R"("data_source_type":"sql")", "data_source_type"},
             {R"("data_source_name":"db")", R"("data_source_name":null)", "data_source_name"},
             {R"("document_type":"CommCareCase")", R"("document_type":["x"])", "document_type"},
             {R"("document_subtype":"patient")", R"("document_subtype":false)", "document_subtype"},
             {R"("domain":"demo")", R"("domain":{})", "domain"},
             {R"("is_deletion":false)", R"("is_deletion":"false")", "is_deletion"},
             {R"("is_deletion":false)", R"("is_deletion":0)", "is_deletion"},
             {R"("attempts":0)", R"("attempts":"0")", "attempts"},
             {R"("attempts":0)", R"("attempts":0.0)", "attempts"},
             {R"("attempts":0)", R"("attempts":-1)", "attempts"},
             {R"("attempts":0)", R"("attempts":null)", "attempts"},
             {R"("associated_document_id":null)", R"("associated_document_id":0)", "associated_document_id"},
             {R"("publish_timestamp":"2024-05-06T07:08:09.123456Z")", R"("publish_timestamp":1714979289)",
              "publish_timestamp"},
         }) {
        auto const why = rejection(replace_once(good_record, m.from, m.to));
        BOOST_TEST(why.find(m.field) != std::string::npos, m.to << " -> " << why);
        BOOST_TEST(why != "accepted");
    }
}

BOOST_AUTO_TEST_CASE(strict_reader_rejects_timestamps_in_any_other_shape) {
    for (auto const* bad : {
             "2024-05-06T07:08:09.123Z",        // three fraction digits
             "2024-05-06T07:08:09.1234567Z",    // seven
             "2024-05-06T07:08:09Z",            // none
             "2024-05-06T07:08:09.123456",      // no Z
             "2024-05-06T07:08:09.123456+00:00", // offset instead of Z
             "2024-05-06 07:08:09.123456Z",     // space instead of T
             "2024-05-06t07:08:09.123456z",     // lower case
             "2024/05/06T07:08:09.123456Z",     // other separators
             "2024-13-06T07:08:09.123456Z",     // month 13
             "2023-02-29T07:08:09.123456Z",     // not a leap year
             "2024-05-06T24:00:00.000000Z",     // hour 24
             "2024-05-06T07:60:09.123456Z",     // minute 60
             "2024-05-06T07:08:60.123456Z",     // leap second
             "2024-05-06T07:08:09.12345aZ",     // non-digit
             "+024-05-06T07:08:09.123456Z",     // sign
         }) {
        std::string const field = "\"original_publication_datetime\":\"";
        auto const record =
            replace_once(good_record, field + "2024-05-06T07:08:09.123456Z\"", field + std::string(bad) + "\"");
        auto const why = rejection(record);
        BOOST_TEST(why.find("original_publication_datetime") != std::string::npos, bad << " -> " << why);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(payload)

// The `doc` member's bytes of a recorded row, found without the code under
// test: CouchDB writes `"doc":{...}` as the row's last member.
std::string raw_doc_of(std::string const& file, std::size_t row_number) {
    auto const rows = bridge_test::load_row_texts(file);
    auto const& line = rows.at(row_number - 1);
    auto const at = line.rfind("\"doc\":");
    if (at == std::string::npos) {
        return {};
    }
    return line.substr(at + 6, line.size() - (at + 6) - 1);
}

BOOST_AUTO_TEST_CASE(all_three_modes_over_the_golden_records) {
    auto const cases = load_golden();
    std::size_t with_doc = 0;
    for (auto const& c : cases) {
        BOOST_TEST_CONTEXT("golden_records.txt:" << c.line) {
            auto rows = bridge_test::load_rows(c.file);
            auto row = rows.at(c.row_number - 1);
            std::string const raw_doc = raw_doc_of(c.file, c.row_number);
            row.doc_text = raw_doc;
            auto const meta = bridge::make_change_meta(row, c.database, golden_now());
            std::string const doc = row.doc_text.empty() ? std::string("null") : std::string(row.doc_text);
            with_doc += row.doc_text.empty() ? 0 : 1;

            std::string stub;
            bridge::serialize_payload(meta, bridge::payload_mode::stub, row.doc_text, stub);
            BOOST_TEST(stub == c.expected);

            std::string both;
            bridge::serialize_payload(meta, bridge::payload_mode::stub_and_doc, row.doc_text, both);
            BOOST_TEST(both == c.expected.substr(0, c.expected.size() - 1) + ",\"doc\":" + doc + "}");
            auto const parsed = boost::json::parse(both).as_object();
            BOOST_TEST(parsed.size() == 13u);
            BOOST_TEST(parsed.at("doc") == boost::json::parse(doc));

            std::string alone;
            bridge::serialize_payload(meta, bridge::payload_mode::doc, row.doc_text, alone);
            BOOST_TEST(alone == doc);
        }
    }
    BOOST_TEST(with_doc >= 10u); // most golden rows carry a document
}

BOOST_AUTO_TEST_CASE(the_parser_keeps_the_doc_bytes_as_sent) {
    std::size_t checked = 0;
    for (auto const* file : {"couchdb-3.4.3/03b_changes_include_docs.http",
                             "couchdb-3.4.3/10a_changes_escaped_ids_include_docs.http"}) {
        auto const texts = bridge_test::load_row_texts(file);
        couch::changes_parser parser(couch::feed_kind::continuous);
        parser.keep_doc_text(true);
        std::vector<couch::row> rows;
        for (auto const& t : texts) {
            BOOST_REQUIRE(!parser.feed(t + "\n", rows));
        }
        BOOST_REQUIRE(rows.size() == texts.size());
        for (std::size_t i = 0; i < rows.size(); ++i) {
            BOOST_TEST(rows[i].doc_text == raw_doc_of(file, i + 1), file << " row " << i + 1);
            checked += rows[i].doc_text.empty() ? 0 : 1;
        }
    }
    BOOST_TEST(checked >= 5u);
}

BOOST_AUTO_TEST_CASE(payload_names) {
    BOOST_TEST((bridge::parse_payload_mode("stub") == bridge::payload_mode::stub));
    BOOST_TEST((bridge::parse_payload_mode("stub+doc") == bridge::payload_mode::stub_and_doc));
    BOOST_TEST((bridge::parse_payload_mode("doc") == bridge::payload_mode::doc));
    BOOST_CHECK_THROW(bridge::parse_payload_mode("full"), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
