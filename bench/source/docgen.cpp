#include "bench/source/docgen.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <array>
#include <cstdio>
#include <stdexcept>

namespace bench_source {
namespace json = boost::json;

namespace {

// `"_id":"<32 hex>","_rev":"1-<32 hex>",` plus the opening brace: what the
// server adds in front of a template's tail.
constexpr std::size_t id_rev_overhead = 1 + 7 + 32 + 3 + 8 + 2 + 32 + 2;

constexpr std::array<std::string_view, 24> words{
    "alpha", "bravo", "clinic", "district", "follow", "up", "visit", "home", "mother", "child", "referral", "yes",
    "no", "malaria", "nutrition", "vaccine", "community", "health", "worker", "village", "pending", "closed",
    "open", "review"};

std::string hex128(rng& r)
{
    std::string s;
    append_hex128(s, r.next(), r.next());
    return s;
}

std::string words_text(rng& r, std::size_t n)
{
    std::string s;
    for (std::size_t i = 0; i < n; ++i) {
        if (i != 0) {
            s += ' ';
        }
        s += words[r.next() % words.size()];
    }
    return s;
}

std::string date_text(rng& r)
{
    // 2019-01-01 .. 2024-12-28, any time of day, CommCare's microsecond format.
    char buf[40];
    auto const y = 2019 + r.next() % 6;
    auto const mo = 1 + r.next() % 12;
    auto const d = 1 + r.next() % 28;
    auto const h = r.next() % 24;
    auto const mi = r.next() % 60;
    auto const s = r.next() % 60;
    auto const us = r.next() % 1000000;
    std::snprintf(buf, sizeof buf, "%04llu-%02llu-%02lluT%02llu:%02llu:%02llu.%06lluZ", static_cast<unsigned long long>(y),
                  static_cast<unsigned long long>(mo), static_cast<unsigned long long>(d),
                  static_cast<unsigned long long>(h), static_cast<unsigned long long>(mi),
                  static_cast<unsigned long long>(s), static_cast<unsigned long long>(us));
    return buf;
}

std::string domain_name(rng& r, std::size_t domains)
{
    return "demo-project-" + std::to_string(r.next() % domains);
}

// Weighted doc-type mix, in percent (sums to 100): cases and forms dominate a
// CommCare HQ database; the rest exercises every routing branch.
struct weighted_type {
    std::string_view doc_type;
    unsigned weight;
};
constexpr std::array<weighted_type, 12> type_mix{{
    {"CommCareCase", 50},
    {"XFormInstance", 35},
    {"CommCareUser", 3},
    {"WebUser", 1},
    {"Domain", 1},
    {"Group", 1},
    {"Location", 2},
    {"Application", 1},
    {"CommCareCase-Deleted", 1},
    {"XFormArchived", 1},
    {"SyncLog", 2},
    {"BenchUnknownType", 2},
}};

std::string_view pick_type(rng& r)
{
    auto roll = static_cast<unsigned>(r.next() % 100);
    for (auto const& t : type_mix) {
        if (roll < t.weight) {
            return t.doc_type;
        }
        roll -= t.weight;
    }
    return type_mix.front().doc_type;
}

constexpr std::array<std::string_view, 5> case_types{"patient", "household", "pregnancy", "child", "visit"};

json::object make_case(rng& r, std::string_view doc_type, std::string const& domain)
{
    json::object o;
    o["doc_type"] = doc_type;
    o["domain"] = domain;
    o["type"] = case_types[r.next() % case_types.size()];
    o["name"] = words_text(r, 2);
    o["owner_id"] = hex128(r);
    o["user_id"] = hex128(r);
    o["opened_on"] = date_text(r);
    o["modified_on"] = date_text(r);
    o["server_modified_on"] = date_text(r);
    o["closed"] = (r.next() % 5) == 0;
    o["external_id"] = nullptr;
    json::array xform_ids;
    for (std::size_t i = 0, n = 1 + r.next() % 3; i < n; ++i) {
        xform_ids.emplace_back(hex128(r));
    }
    o["xform_ids"] = std::move(xform_ids);
    json::array indices;
    if (r.next() % 2 == 0) {
        indices.emplace_back(json::object{{"doc_type", "CommCareCaseIndex"},
                                          {"identifier", "parent"},
                                          {"referenced_type", "household"},
                                          {"referenced_id", hex128(r)},
                                          {"relationship", "child"}});
    }
    o["indices"] = std::move(indices);
    return o;
}

json::object make_form(rng& r, std::string_view doc_type, std::string const& domain)
{
    std::string xmlns = "http://openrosa.org/formdesigner/" + hex128(r);
    json::object o;
    o["doc_type"] = doc_type;
    o["domain"] = domain;
    o["xmlns"] = xmlns;
    o["received_on"] = date_text(r);
    o["server_modified_on"] = date_text(r);
    o["app_id"] = hex128(r);
    o["build_id"] = hex128(r);
    o["partial_submission"] = false;
    o["history"] = json::array{};
    json::object meta{{"@xmlns", "http://openrosa.org/jr/xforms"},
                      {"deviceID", "android-" + hex128(r).substr(0, 16)},
                      {"timeStart", date_text(r)},
                      {"timeEnd", date_text(r)},
                      {"username", words_text(r, 1)},
                      {"userID", hex128(r)},
                      {"instanceID", hex128(r)},
                      {"appVersion", "CommCare Android, version 2.53"}};
    json::object case_block{{"@xmlns", "http://commcarehq.org/case/transaction/v2"},
                            {"@case_id", hex128(r)},
                            {"@date_modified", date_text(r)},
                            {"@user_id", hex128(r)},
                            {"update", json::object{{"visit_type", words_text(r, 1)}, {"status", words_text(r, 1)}}}};
    json::object form{{"@xmlns", xmlns},
                      {"@name", words_text(r, 3)},
                      {"@uiVersion", "1"},
                      {"@version", std::to_string(1 + r.next() % 300)},
                      {"meta", std::move(meta)},
                      {"case", std::move(case_block)}};
    o["form"] = std::move(form);
    return o;
}

json::object make_other(rng& r, std::string_view doc_type, std::string const& domain)
{
    json::object o;
    o["doc_type"] = doc_type;
    if (doc_type == "Domain") {
        // Real Domain documents carry their name, not a `domain` field; the
        // bridge must read `name` for them.
        o["name"] = domain;
        o["is_active"] = true;
        o["date_created"] = date_text(r);
        o["hr_name"] = words_text(r, 3);
    } else {
        o["domain"] = domain;
    }
    if (doc_type == "CommCareUser" || doc_type == "WebUser") {
        o["username"] = words_text(r, 1) + "@" + domain + ".commcarehq.org";
        o["first_name"] = words_text(r, 1);
        o["last_name"] = words_text(r, 1);
        o["is_active"] = true;
        o["date_joined"] = date_text(r);
        o["last_login"] = date_text(r);
    }
    if (doc_type == "Location") {
        o["location_type"] = "district";
        o["site_code"] = words_text(r, 1);
        o["latitude"] = static_cast<double>(r.next() % 180000) / 1000.0 - 90.0;
        o["longitude"] = static_cast<double>(r.next() % 360000) / 1000.0 - 180.0;
    }
    if (doc_type == "Application") {
        o["name"] = words_text(r, 2);
        o["version"] = static_cast<std::int64_t>(r.next() % 500);
        o["langs"] = json::array{"en", "fra"};
    }
    o["created"] = date_text(r);
    return o;
}

} // namespace

void append_hex128(std::string& out, std::uint64_t a, std::uint64_t b)
{
    static constexpr char digits[] = "0123456789abcdef";
    for (std::uint64_t w : {a, b}) {
        for (int shift = 60; shift >= 0; shift -= 4) {
            out += digits[(w >> static_cast<unsigned>(shift)) & 0xFU];
        }
    }
}

std::vector<doc_template> generate_pool(docgen_options const& opt)
{
    if (opt.pool_size == 0) {
        throw std::invalid_argument("docgen: the document pool must not be empty");
    }
    if (opt.min_bytes > opt.max_bytes) {
        throw std::invalid_argument("docgen: min document size is larger than max");
    }
    if (opt.domains == 0) {
        throw std::invalid_argument("docgen: need at least one domain");
    }
    rng r(opt.seed);
    std::vector<doc_template> pool;
    pool.reserve(opt.pool_size);
    for (std::size_t i = 0; i < opt.pool_size; ++i) {
        auto const doc_type = pick_type(r);
        auto const domain = domain_name(r, opt.domains);
        json::object o;
        if (doc_type.starts_with("CommCareCase")) {
            o = make_case(r, doc_type, domain);
        } else if (doc_type.starts_with("XForm")) {
            o = make_form(r, doc_type, domain);
        } else {
            o = make_other(r, doc_type, domain);
        }
        auto const target = r.between(opt.min_bytes, opt.max_bytes);
        // Pad with case-property-like fields until the size is reached (real
        // CommCare documents grow by their dynamic properties).
        // The size is tracked, not re-serialized per property (that was
        // quadratic: minutes for a 1 MiB document). Keys and values are
        // plain letters, so `,"key":"value"` adds exactly key + value + 6.
        std::size_t size = json::serialize(o).size();
        for (std::size_t k = 0; size + id_rev_overhead < target; ++k) {
            auto const missing = target - (size + id_rev_overhead);
            auto value = words_text(r, 1 + r.next() % 6);
            // Key + quotes + colon + comma is ~16 bytes; trim the last value
            // so the document lands close to its target size.
            if (value.size() + 16 > missing) {
                value.resize(missing > 16 ? missing - 16 : 1);
            }
            auto key = "property_" + std::to_string(k);
            size += key.size() + value.size() + 6;
            o[key] = value;
        }
        std::string const text = json::serialize(o);
        // serialize() gives "{...}"; the tail is everything after "{".
        pool.push_back(doc_template{std::string(doc_type), text.substr(1)});
    }
    return pool;
}

} // namespace bench_source
