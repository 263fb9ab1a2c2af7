#include "bridge/change_meta.hpp"

#include <boost/json/string.hpp>
#include <boost/json/value.hpp>

#include <array>
#include <charconv>
#include <stdexcept>
#include <cstdint>

namespace bridge {

namespace {

void put2(char* p, unsigned v) noexcept {
    p[0] = static_cast<char>('0' + v / 10);
    p[1] = static_cast<char>('0' + v % 10);
}

// A string member of the doc, or nullopt when absent, null or not a string.
std::optional<std::string> string_member(couch::doc_fields const& doc, couch::doc_fields::field f) {
    auto const v = doc.get(f);
    if (!v) {
        return std::nullopt;
    }
    return std::string(*v);
}

bool ends_with(std::string_view s, std::string_view suffix) noexcept {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

void append_optional(std::optional<std::string> const& v, std::string& out) {
    if (v) {
        append_json_string(*v, out);
    } else {
        out += "null";
    }
}

void append_timestamp(timestamp t, std::string& out) {
    char buf[timestamp_length];
    format_timestamp(t, buf);
    out += '"';
    out.append(buf, timestamp_length);
    out += '"';
}

std::size_t optional_size(std::optional<std::string> const& v) noexcept {
    return v ? v->size() : 4;
}

} // namespace

void format_timestamp(timestamp t, char (&out)[timestamp_length]) {
    using namespace std::chrono;
    auto const us = floor<microseconds>(t);
    auto const day = floor<days>(us);
    year_month_day const ymd{day};
    auto const since_midnight = us - day;
    hh_mm_ss const hms{since_midnight};

    // system_clock's range (about 1678..2262 with nanosecond ticks) keeps
    // the year within four digits.
    auto const year = static_cast<unsigned>(static_cast<int>(ymd.year()));
    put2(out + 0, year / 100);
    put2(out + 2, year % 100);
    out[4] = '-';
    put2(out + 5, static_cast<unsigned>(ymd.month()));
    out[7] = '-';
    put2(out + 8, static_cast<unsigned>(ymd.day()));
    out[10] = 'T';
    put2(out + 11, static_cast<unsigned>(hms.hours().count()));
    out[13] = ':';
    put2(out + 14, static_cast<unsigned>(hms.minutes().count()));
    out[16] = ':';
    put2(out + 17, static_cast<unsigned>(hms.seconds().count()));
    out[19] = '.';
    auto frac = static_cast<std::uint32_t>(hms.subseconds().count());
    for (int i = 25; i >= 20; --i) {
        out[i] = static_cast<char>('0' + frac % 10);
        frac /= 10;
    }
    out[26] = 'Z';
}

std::string format_timestamp(timestamp t) {
    char buf[timestamp_length];
    format_timestamp(t, buf);
    return std::string(buf, timestamp_length);
}

namespace doc_types {

bool is_case(std::string_view doc_type) noexcept {
    return doc_type == "CommCareCase" || doc_type == "CommCareCase-Deleted";
}

bool is_form(std::string_view doc_type) noexcept {
    // DESIGN §4 lists the form-like types "and their -Deleted forms"; HQ's
    // all_known_formlike_doc_types() adds HQSubmission (a legacy type).
    static constexpr std::array<std::string_view, 6> base{
        "XFormInstance", "XFormArchived", "XFormDeprecated", "XFormDuplicate", "XFormError", "SubmissionErrorLog"};
    if (doc_type == "HQSubmission") {
        return true;
    }
    constexpr std::string_view deleted = "-Deleted";
    std::string_view stem = doc_type;
    if (ends_with(stem, deleted)) {
        stem.remove_suffix(deleted.size());
    }
    for (auto b : base) {
        if (stem == b) {
            return true;
        }
    }
    return false;
}

bool is_domain(std::string_view doc_type) noexcept {
    return doc_type == "Domain" || doc_type == "Domain-Deleted" || doc_type == "Domain-DUPLICATE";
}

bool is_deletion(std::string_view doc_type) noexcept {
    return ends_with(doc_type, "-Deleted") || doc_type == "Domain-DUPLICATE";
}

} // namespace doc_types

change_meta make_change_meta(couch::row const& row, std::string_view database, timestamp now) {
    change_meta m;
    m.document_id = row.id;
    m.data_source_name = std::string(database);
    m.is_deletion = row.deleted;
    auto const published = std::chrono::floor<std::chrono::microseconds>(now);
    m.publish_timestamp = published;
    m.original_publication_datetime = published;

    if (row.has_doc) {
        auto const& doc = row.doc;
        using f = couch::doc_fields;
        m.document_rev = string_member(doc, f::rev);
        auto doc_type = string_member(doc, f::doc_type);
        if (doc_type && doc_type->empty()) {
            // HQ treats a falsy doc_type as no doc_type at all.
            doc_type.reset();
        }
        if (doc_type) {
            std::string_view const t = *doc_type;
            if (doc_types::is_case(t)) {
                m.document_subtype = string_member(doc, f::type);
            } else if (doc_types::is_form(t)) {
                m.document_subtype = string_member(doc, f::xmlns);
            }
            m.domain = string_member(doc, doc_types::is_domain(t) ? f::name : f::domain);
            m.is_deletion = m.is_deletion || doc_types::is_deletion(t);
        } else {
            m.domain = string_member(doc, f::domain);
        }
        m.document_type = std::move(doc_type);
    }
    if (!m.document_rev && !row.revs.empty()) {
        m.document_rev = row.revs.front();
    }
    return m;
}

void append_json_string(std::string_view s, std::string& out) {
    static constexpr char hex[] = "0123456789abcdef";
    out += '"';
    std::size_t run_start = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        auto const c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        out.append(s.data() + run_start, i - run_start);
        run_start = i + 1;
        switch (c) {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\b':
            out += "\\b";
            break;
        case '\f':
            out += "\\f";
            break;
        case '\n':
            out += "\\n";
            break;
        case '\r':
            out += "\\r";
            break;
        case '\t':
            out += "\\t";
            break;
        default: {
            char const esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            out.append(esc, sizeof esc);
            break;
        }
        }
    }
    out.append(s.data() + run_start, s.size() - run_start);
    out += '"';
}

payload_mode parse_payload_mode(std::string_view s) {
    if (s == "stub") {
        return payload_mode::stub;
    }
    if (s == "stub+doc") {
        return payload_mode::stub_and_doc;
    }
    if (s == "doc") {
        return payload_mode::doc;
    }
    throw std::invalid_argument("payload must be stub, stub+doc or doc, not '" + std::string(s) + "'");
}

void serialize_payload(change_meta const& m, payload_mode mode, std::string_view doc_text, std::string& out) {
    std::string_view const doc = doc_text.empty() ? std::string_view("null") : doc_text;
    if (mode == payload_mode::doc) {
        out.append(doc);
        return;
    }
    serialize(m, out);
    if (mode == payload_mode::stub_and_doc) {
        out.pop_back(); // the object's closing brace
        out.reserve(out.size() + doc.size() + 8);
        out.append(",\"doc\":");
        out.append(doc);
        out.push_back('}');
    }
}

void serialize(change_meta const& m, std::string& out) {
    // Field names and punctuation take ~290 bytes; escaping rarely grows a
    // value, so one reserve almost always covers the whole record.
    out.reserve(out.size() + 320 + m.document_id.size() + optional_size(m.document_rev) + m.data_source_type.size() +
                m.data_source_name.size() + optional_size(m.document_type) + optional_size(m.document_subtype) +
                optional_size(m.domain) + optional_size(m.associated_document_id));
    out += "{\"document_id\":";
    append_json_string(m.document_id, out);
    out += ",\"document_rev\":";
    append_optional(m.document_rev, out);
    out += ",\"data_source_type\":";
    append_json_string(m.data_source_type, out);
    out += ",\"data_source_name\":";
    append_json_string(m.data_source_name, out);
    out += ",\"document_type\":";
    append_optional(m.document_type, out);
    out += ",\"document_subtype\":";
    append_optional(m.document_subtype, out);
    out += ",\"domain\":";
    append_optional(m.domain, out);
    out += ",\"is_deletion\":";
    out += m.is_deletion ? "true" : "false";
    out += ",\"publish_timestamp\":";
    append_timestamp(m.publish_timestamp, out);
    out += ",\"attempts\":";
    // std::to_chars: no locale, no allocation.
    char digits[16];
    auto const [end, ec] = std::to_chars(digits, digits + sizeof digits, m.attempts);
    (void)ec; // an int always fits in 16 characters
    out.append(digits, static_cast<std::size_t>(end - digits));
    out += ",\"original_publication_datetime\":";
    append_timestamp(m.original_publication_datetime, out);
    out += ",\"associated_document_id\":";
    append_optional(m.associated_document_id, out);
    out += '}';
}

} // namespace bridge
