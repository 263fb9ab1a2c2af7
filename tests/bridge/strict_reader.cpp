#include "tests/bridge/strict_reader.hpp"

#include "tests/support/test_env.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>

namespace bridge_test {

namespace {

constexpr std::array<std::string_view, 12> field_order{
    "document_id", "document_rev", "data_source_type", "data_source_name", "document_type", "document_subtype",
    "domain", "is_deletion", "publish_timestamp", "attempts", "original_publication_datetime",
    "associated_document_id"};

[[noreturn]] void reject(std::string const& why) {
    throw std::runtime_error("not a ChangeMeta record: " + why);
}

// Collects the keys of the top-level object exactly as written, so that a
// repeated key (which boost::json::parse would silently collapse) is caught.
struct top_level_keys {
    static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);
    using ec_t = boost::json::error_code;
    using sv_t = boost::json::string_view;

    int depth = 0;
    std::string partial;
    std::vector<std::string> keys;

    bool on_document_begin(ec_t&) { return true; }
    bool on_document_end(ec_t&) { return true; }
    bool on_array_begin(ec_t&) {
        ++depth;
        return true;
    }
    bool on_array_end(std::size_t, ec_t&) {
        --depth;
        return true;
    }
    bool on_object_begin(ec_t&) {
        ++depth;
        return true;
    }
    bool on_object_end(std::size_t, ec_t&) {
        --depth;
        return true;
    }
    bool on_string_part(sv_t, std::size_t, ec_t&) { return true; }
    bool on_string(sv_t, std::size_t, ec_t&) { return true; }
    bool on_key_part(sv_t s, std::size_t, ec_t&) {
        partial.append(s.data(), s.size());
        return true;
    }
    bool on_key(sv_t s, std::size_t, ec_t&) {
        partial.append(s.data(), s.size());
        if (depth == 1) {
            keys.push_back(partial);
        }
        partial.clear();
        return true;
    }
    bool on_number_part(sv_t, ec_t&) { return true; }
    bool on_int64(std::int64_t, sv_t, ec_t&) { return true; }
    bool on_uint64(std::uint64_t, sv_t, ec_t&) { return true; }
    bool on_double(double, sv_t, ec_t&) { return true; }
    bool on_bool(bool, ec_t&) { return true; }
    bool on_null(ec_t&) { return true; }
    bool on_comment_part(sv_t, ec_t&) { return true; }
    bool on_comment(sv_t, ec_t&) { return true; }
};

std::string get_string(boost::json::object const& o, std::string_view key) {
    auto const& v = o.at(key);
    if (!v.is_string()) {
        reject(std::string(key) + " must be a string");
    }
    return std::string(v.get_string().data(), v.get_string().size());
}

std::optional<std::string> get_nullable_string(boost::json::object const& o, std::string_view key) {
    auto const& v = o.at(key);
    if (v.is_null()) {
        return std::nullopt;
    }
    if (!v.is_string()) {
        reject(std::string(key) + " must be a string or null");
    }
    return std::string(v.get_string().data(), v.get_string().size());
}

bridge::timestamp get_timestamp(boost::json::object const& o, std::string_view key) {
    auto const text = get_string(o, key);
    try {
        return parse_timestamp_strict(text);
    } catch (std::runtime_error const& e) {
        reject(std::string(key) + ": " + e.what());
    }
}

unsigned digits(std::string_view text, std::size_t pos, std::size_t n) {
    unsigned v = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
        if (text[i] < '0' || text[i] > '9') {
            throw std::runtime_error("timestamp '" + std::string(text) + "' has a non-digit at position " +
                                     std::to_string(i));
        }
        v = v * 10 + static_cast<unsigned>(text[i] - '0');
    }
    return v;
}

// Removes HTTP/1.1 chunked framing; stops at the last chunk, at the end of
// the recording (streams cut by the client) or at a size line that is not
// hex (recording 06k writes a whole response inside the body).
std::string dechunk(std::string_view body) {
    std::string out;
    std::size_t pos = 0;
    while (pos < body.size()) {
        auto const eol = body.find("\r\n", pos);
        if (eol == std::string_view::npos) {
            break;
        }
        auto const size_line = body.substr(pos, eol - pos);
        std::size_t size = 0;
        bool hex = !size_line.empty();
        for (char c : size_line) {
            int d = -1;
            if (c >= '0' && c <= '9') {
                d = c - '0';
            } else if (c >= 'a' && c <= 'f') {
                d = c - 'a' + 10;
            } else if (c >= 'A' && c <= 'F') {
                d = c - 'A' + 10;
            }
            if (d < 0) {
                hex = false;
                break;
            }
            size = size * 16 + static_cast<std::size_t>(d);
        }
        if (!hex || size == 0) {
            break;
        }
        pos = eol + 2;
        out.append(body.substr(pos, size));
        pos += size + 2;
    }
    return out;
}

couch::row to_row(boost::json::object const& o, std::size_t wire_bytes) {
    couch::row r;
    r.id = std::string(o.at("id").as_string());
    r.seq = couch::seq::from_json(o.at("seq"));
    if (auto const* d = o.if_contains("deleted")) {
        r.deleted = d->as_bool();
    }
    for (auto const& c : o.at("changes").as_array()) {
        r.revs.emplace_back(c.as_object().at("rev").as_string());
    }
    if (auto const* doc = o.if_contains("doc"); doc != nullptr && doc->is_object()) {
        r.has_doc = true;
        r.doc = couch::doc_fields::from_object(doc->as_object());
    }
    r.wire_bytes = wire_bytes;
    return r;
}

} // namespace

bridge::timestamp parse_timestamp_strict(std::string_view text) {
    using namespace std::chrono;
    if (text.size() != 27 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
        text[16] != ':' || text[19] != '.' || text[26] != 'Z') {
        throw std::runtime_error("timestamp '" + std::string(text) + "' is not YYYY-MM-DDTHH:MM:SS.ffffffZ");
    }
    year_month_day const ymd{year{static_cast<int>(digits(text, 0, 4))}, month{digits(text, 5, 2)},
                             day{digits(text, 8, 2)}};
    auto const h = digits(text, 11, 2);
    auto const m = digits(text, 14, 2);
    auto const s = digits(text, 17, 2);
    auto const us = digits(text, 20, 6);
    if (!ymd.ok() || h > 23 || m > 59 || s > 59) {
        throw std::runtime_error("timestamp '" + std::string(text) + "' is not a valid date and time");
    }
    return sys_days{ymd} + hours{h} + minutes{m} + seconds{s} + microseconds{us};
}

bridge::change_meta read_change_meta_strict(std::string_view json) {
    boost::json::basic_parser<top_level_keys> keys_parser(boost::json::parse_options{});
    boost::json::error_code ec;
    auto const consumed = keys_parser.write_some(false, json.data(), json.size(), ec);
    if (!ec && consumed != json.size()) {
        ec = boost::json::error::extra_data;
    }
    if (ec) {
        reject("invalid JSON: " + ec.message());
    }
    auto const value = boost::json::parse(json);
    if (!value.is_object()) {
        reject("not a JSON object");
    }
    auto const& keys = keys_parser.handler().keys;
    for (std::size_t i = 0; i < keys.size(); ++i) {
        if (i >= field_order.size()) {
            reject("extra field '" + keys[i] + "'");
        }
        if (keys[i] != field_order[i]) {
            bool known = false;
            for (auto f : field_order) {
                known = known || f == keys[i];
            }
            reject(known ? "field '" + keys[i] + "' out of order or repeated (expected '" +
                               std::string(field_order[i]) + "' at position " + std::to_string(i + 1) + ")"
                         : "extra field '" + keys[i] + "'");
        }
    }
    if (keys.size() < field_order.size()) {
        reject("missing field '" + std::string(field_order[keys.size()]) + "'");
    }

    auto const& o = value.get_object();
    bridge::change_meta m;
    m.document_id = get_string(o, "document_id");
    m.document_rev = get_nullable_string(o, "document_rev");
    m.data_source_type = get_string(o, "data_source_type");
    if (m.data_source_type != "couch") {
        reject("data_source_type must be \"couch\"");
    }
    m.data_source_name = get_string(o, "data_source_name");
    m.document_type = get_nullable_string(o, "document_type");
    m.document_subtype = get_nullable_string(o, "document_subtype");
    m.domain = get_nullable_string(o, "domain");
    auto const& deletion = o.at("is_deletion");
    if (!deletion.is_bool()) {
        reject("is_deletion must be a boolean");
    }
    m.is_deletion = deletion.get_bool();
    m.publish_timestamp = get_timestamp(o, "publish_timestamp");
    auto const& attempts = o.at("attempts");
    if (attempts.is_int64() && attempts.get_int64() >= 0 && attempts.get_int64() <= std::numeric_limits<int>::max()) {
        m.attempts = static_cast<int>(attempts.get_int64());
    } else if (attempts.is_uint64() && attempts.get_uint64() <= std::numeric_limits<int>::max()) {
        m.attempts = static_cast<int>(attempts.get_uint64());
    } else {
        reject("attempts must be a non-negative integer");
    }
    m.original_publication_datetime = get_timestamp(o, "original_publication_datetime");
    m.associated_document_id = get_nullable_string(o, "associated_document_id");
    return m;
}

std::vector<std::string> load_row_texts(std::string const& relative_path) {
    auto const raw = test_support::read_file(test_support::data_dir() + "/" + relative_path);
    std::string body = raw;
    if (raw.starts_with("HTTP/")) {
        auto const header_end = raw.find("\r\n\r\n");
        if (header_end == std::string::npos) {
            throw std::runtime_error(relative_path + ": no end of headers");
        }
        auto const headers = std::string_view(raw).substr(0, header_end);
        body = raw.substr(header_end + 4);
        if (headers.find("Transfer-Encoding: chunked") != std::string_view::npos) {
            body = dechunk(body);
        }
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
        if (line.starts_with("{\"seq\"")) {
            out.emplace_back(line);
        }
    }
    return out;
}

std::vector<couch::row> load_rows(std::string const& relative_path) {
    std::vector<couch::row> rows;
    for (auto const& line : load_row_texts(relative_path)) {
        boost::json::error_code ec;
        auto const v = boost::json::parse(line, ec);
        if (ec || !v.is_object()) {
            throw std::runtime_error(relative_path + ": row " + std::to_string(rows.size() + 1) +
                                     " is not a JSON object: " + ec.message());
        }
        rows.push_back(to_row(v.get_object(), line.size()));
    }
    return rows;
}

} // namespace bridge_test
