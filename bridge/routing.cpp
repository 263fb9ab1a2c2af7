#include "bridge/routing.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace bridge {

namespace {

constexpr std::size_t max_topic_length = 249;

// Heterogeneous lookup: route() looks doc_types up by string_view without
// building a std::string.
struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using topic_table = std::unordered_map<std::string, std::string, string_hash, std::equal_to<>>;

bool is_topic_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

// A doc_type or topic as it should appear in an error message: JSON-quoted,
// so control characters and quotes stay visible and unambiguous.
std::string json_quoted(std::string_view s) {
    std::string out;
    append_json_string(s, out);
    return out;
}

enum class mode { commcare, prefix, file };

// CommCare HQ's couch topics (corehq/apps/change_feed/topics.py), and the
// doc types each family holds (document_types.py, app_manager's
// app_doc_types(), locations' LOCATION_DOC_TYPE).
void add_commcare_routes(topic_table& t) {
    auto add = [&t](std::string_view topic, std::initializer_list<std::string_view> doc_types) {
        for (auto dt : doc_types) {
            t.emplace(std::string(dt), std::string(topic));
        }
    };
    add("case", {"CommCareCase", "CommCareCase-Deleted"});
    add("form", {"XFormInstance", "XFormArchived", "XFormDeprecated", "XFormDuplicate", "XFormError",
                 "SubmissionErrorLog", "XFormInstance-Deleted", "XFormArchived-Deleted", "XFormDeprecated-Deleted",
                 "XFormDuplicate-Deleted", "XFormError-Deleted", "SubmissionErrorLog-Deleted", "HQSubmission"});
    add("domain", {"Domain", "Domain-Deleted", "Domain-DUPLICATE"});
    add("commcare-user", {"CommCareUser", "CommCareUser-Deleted"});
    add("web-user", {"WebUser", "WebUser-Deleted"});
    add("group", {"Group", "Group-Deleted"});
    add("synclog-sql", {"SyncLog", "SimplifiedSyncLog"});
    add("app", {"Application", "Application-Deleted", "RemoteApp", "RemoteApp-Deleted", "LinkedApplication",
                "LinkedApplication-Deleted"});
    add("location", {"Location"});
    // HQ: "for docs that don't have a doc_type we use the Kafka topic" — a
    // doc_type equal to one of its topic names goes to that topic. emplace
    // keeps the family mappings above should a name ever appear in both.
    for (std::string_view topic : {"case", "case-sql", "commcare-user", "domain", "form", "form-sql", "group",
                                   "ledger", "meta", "sms", "web-user", "app", "location", "synclog-sql"}) {
        t.emplace(std::string(topic), std::string(topic));
    }
}

// Detects what boost::json::parse silently accepts in a routing file (a
// repeated key: the last one would win) and reports syntax errors with a
// position. Only keys are tracked; every other event is accepted as is.
struct duplicate_key_finder {
    static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);

    std::vector<std::set<std::string, std::less<>>> objects;
    std::vector<std::string> object_keys; // key under which each open object sits ("" for the root)
    std::string key;
    std::string last_key;
    std::string duplicate; // "<path>" of the first repeated key, empty if none

    using ec_t = boost::json::error_code;
    using sv_t = boost::json::string_view;
    bool on_document_begin(ec_t&) { return true; }
    bool on_document_end(ec_t&) { return true; }
    bool on_array_begin(ec_t&) {
        last_key.clear();
        return true;
    }
    bool on_array_end(std::size_t, ec_t&) { return true; }
    bool on_object_begin(ec_t&) {
        objects.emplace_back();
        object_keys.push_back(last_key);
        return true;
    }
    bool on_object_end(std::size_t, ec_t&) {
        objects.pop_back();
        object_keys.pop_back();
        return true;
    }
    bool on_string_part(sv_t, std::size_t, ec_t&) { return true; }
    bool on_string(sv_t, std::size_t, ec_t&) { return true; }
    bool on_key_part(sv_t s, std::size_t, ec_t&) {
        key.append(s.data(), s.size());
        return true;
    }
    bool on_key(sv_t s, std::size_t, ec_t&) {
        key.append(s.data(), s.size());
        if (!objects.back().insert(key).second && duplicate.empty()) {
            std::string path;
            for (std::size_t i = 1; i < object_keys.size(); ++i) {
                path += object_keys[i];
                path += '.';
            }
            duplicate = path + json_quoted(key);
        }
        last_key = std::move(key);
        key.clear();
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

std::string kind_name(boost::json::value const& v) {
    switch (v.kind()) {
    case boost::json::kind::null:
        return "null";
    case boost::json::kind::bool_:
        return "a boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
    case boost::json::kind::double_:
        return "a number";
    case boost::json::kind::string:
        return "a string";
    case boost::json::kind::array:
        return "an array";
    case boost::json::kind::object:
        return "an object";
    }
    return "an unknown JSON value";
}

struct file_routes {
    topic_table routes;
    std::optional<std::string> default_topic;
};

file_routes load_routing_file(std::string const& path) {
    auto const fail = [&path](std::string const& what) -> std::invalid_argument {
        return std::invalid_argument("routing file '" + path + "': " + what);
    };
    std::error_code fs_ec;
    if (std::filesystem::is_directory(path, fs_ec)) {
        throw fail("is a directory, not a JSON routing file");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw fail("cannot open it (expected --routing=commcare, prefix:<p> or the path of a JSON routing file)");
    }
    std::ostringstream buf;
    buf << in.rdbuf();
    if (in.bad()) {
        throw fail("cannot read it");
    }
    std::string const text = std::move(buf).str();

    // Pass 1: syntax (with a line and column) and repeated keys.
    boost::json::basic_parser<duplicate_key_finder> checker(boost::json::parse_options{});
    boost::json::error_code ec;
    auto const consumed = checker.write_some(false, text.data(), text.size(), ec);
    if (!ec && consumed != text.size()) {
        ec = boost::json::error::extra_data;
    }
    if (ec) {
        auto const upto = std::string_view(text).substr(0, consumed);
        auto const line = 1 + std::count(upto.begin(), upto.end(), '\n');
        auto const nl = upto.rfind('\n');
        auto const column = 1 + (nl == std::string_view::npos ? upto.size() : upto.size() - nl - 1);
        throw fail("invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(column) + ": " +
                   ec.message());
    }
    if (!checker.handler().duplicate.empty()) {
        throw fail("key " + checker.handler().duplicate + " appears more than once");
    }

    // Pass 2: the structure.
    auto const doc = boost::json::parse(text);
    auto const* root = doc.if_object();
    if (root == nullptr) {
        throw fail("expected a JSON object {\"routes\": {...}, \"default\": \"<topic>\"}, got " + kind_name(doc));
    }
    file_routes result;
    for (auto const& [k, v] : *root) {
        if (k != "routes" && k != "default") {
            throw fail("unknown key " + json_quoted(k) + " (expected \"routes\" and optionally \"default\")");
        }
    }
    auto const* routes = root->if_contains("routes");
    if (routes == nullptr) {
        throw fail("missing \"routes\" (an object of \"<doc_type>\": \"<topic>\")");
    }
    if (!routes->is_object()) {
        throw fail("\"routes\" must be an object of \"<doc_type>\": \"<topic>\", got " + kind_name(*routes));
    }
    for (auto const& [k, v] : routes->get_object()) {
        std::string const entry = "routes." + json_quoted(k);
        if (k.empty()) {
            throw fail(entry + ": the doc_type must not be empty");
        }
        if (!v.is_string()) {
            throw fail(entry + ": the topic must be a string, got " + kind_name(v));
        }
        std::string_view const topic(v.get_string().data(), v.get_string().size());
        if (auto problem = topic_name_problem(topic); !problem.empty()) {
            throw fail(entry + ": invalid topic " + json_quoted(topic) + ": " + problem);
        }
        result.routes.emplace(std::string(k.data(), k.size()), std::string(topic));
    }
    if (auto const* d = root->if_contains("default")) {
        if (!d->is_string()) {
            throw fail("\"default\": the topic must be a string, got " + kind_name(*d));
        }
        std::string_view const topic(d->get_string().data(), d->get_string().size());
        if (auto problem = topic_name_problem(topic); !problem.empty()) {
            throw fail("\"default\": invalid topic " + json_quoted(topic) + ": " + problem);
        }
        result.default_topic = std::string(topic);
    }
    return result;
}

} // namespace

std::string_view to_string(skip_reason r) noexcept {
    switch (r) {
    case skip_reason::none:
        return "none";
    case skip_reason::design_doc:
        return "design_doc";
    case skip_reason::missing_doc_type:
        return "missing_doc_type";
    }
    return "unknown";
}

std::string topic_name_problem(std::string_view topic) {
    if (topic.empty()) {
        return "a topic name must not be empty";
    }
    if (topic.size() > max_topic_length) {
        return "a topic name is at most 249 characters, this one has " + std::to_string(topic.size());
    }
    if (topic == "." || topic == "..") {
        return "'.' and '..' are not allowed as topic names";
    }
    for (char c : topic) {
        if (!is_topic_char(c)) {
            return "a topic name may only contain [a-zA-Z0-9._-]";
        }
    }
    return {};
}

struct router::impl {
    mode how = mode::commcare;
    std::string description;
    routing_options options;
    topic_table table; // commcare and file modes; immutable after construction
    std::string prefix;

    // prefix mode: doc_type -> topic. Node-based, so a topic's address never
    // changes once inserted (decision::topic points into it).
    mutable std::shared_mutex cache_mutex;
    mutable topic_table cache;
    mutable std::atomic<std::uint64_t> sanitized{0};
    mutable std::atomic<std::uint64_t> overflow{0};

    std::string_view prefix_topic(std::string_view doc_type) const {
        {
            std::shared_lock lock(cache_mutex);
            if (auto it = cache.find(doc_type); it != cache.end()) {
                return it->second;
            }
        }
        std::string topic = prefix;
        bool changed = false;
        for (char c : doc_type) {
            if (topic.size() == max_topic_length) {
                changed = true;
                break;
            }
            if (is_topic_char(c)) {
                topic += c;
            } else {
                topic += '_';
                changed = true;
            }
        }
        if (topic == "..") {
            // Only possible as prefix "." + doc_type ".".
            topic = "._";
            changed = true;
        }
        std::unique_lock lock(cache_mutex);
        if (auto it = cache.find(doc_type); it != cache.end()) {
            return it->second; // another thread inserted it meanwhile
        }
        if (cache.size() >= router::prefix_cache_limit) {
            if (overflow.fetch_add(1, std::memory_order_relaxed) == 0) {
                spdlog::warn("routing {}: more than {} distinct doc types; doc_type {} and any further new ones go to "
                             "the default topic '{}'",
                             description, router::prefix_cache_limit, json_quoted(doc_type), options.default_topic);
            }
            return options.default_topic;
        }
        auto [it, inserted] = cache.emplace(std::string(doc_type), std::move(topic));
        if (changed) {
            sanitized.fetch_add(1, std::memory_order_relaxed);
            spdlog::warn("routing {}: doc_type {} has characters Kafka does not allow in a topic name or is too long; "
                         "publishing it to '{}'",
                         description, json_quoted(doc_type), it->second);
        }
        return it->second;
    }
};

router::router(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
router::router(router&&) noexcept = default;
router& router::operator=(router&&) noexcept = default;
router::~router() = default;

router router::from_spec(std::string const& spec, routing_options options) {
    auto p = std::make_unique<impl>();
    if (auto problem = topic_name_problem(options.default_topic); !problem.empty()) {
        throw std::invalid_argument("--default-topic " + json_quoted(options.default_topic) + " is invalid: " + problem);
    }
    constexpr std::string_view prefix_tag = "prefix:";
    if (spec == "commcare") {
        p->how = mode::commcare;
        p->description = "commcare";
        add_commcare_routes(p->table);
    } else if (std::string_view(spec).substr(0, prefix_tag.size()) == prefix_tag) {
        p->how = mode::prefix;
        p->description = spec;
        p->prefix = spec.substr(prefix_tag.size());
        if (p->prefix.empty()) {
            throw std::invalid_argument("--routing=prefix:<p> needs a non-empty prefix");
        }
        if (p->prefix.size() >= max_topic_length) {
            throw std::invalid_argument("--routing=" + json_quoted(spec) +
                                        ": the prefix leaves no room for a doc_type (topic names are at most 249 "
                                        "characters)");
        }
        for (char c : p->prefix) {
            if (!is_topic_char(c)) {
                throw std::invalid_argument("--routing=" + json_quoted(spec) +
                                            ": the prefix may only contain [a-zA-Z0-9._-] (Kafka topic characters)");
            }
        }
    } else if (spec.empty()) {
        throw std::invalid_argument("--routing is empty: expected commcare, prefix:<p> or a JSON file path");
    } else {
        p->how = mode::file;
        p->description = "file:" + spec;
        auto loaded = load_routing_file(spec);
        p->table = std::move(loaded.routes);
        if (loaded.default_topic) {
            options.default_topic = std::move(*loaded.default_topic);
        }
    }
    p->options = std::move(options);
    return router(std::move(p));
}

router::decision router::route(couch::row const& row, change_meta const& meta) const {
    auto const& o = impl_->options;
    bool const design_doc = row.id.starts_with("_design/");
    if (design_doc && !o.route_design_docs) {
        return {{}, skip_reason::design_doc};
    }
    if (!meta.document_type) {
        // Design docs never have a doc_type: --route-design-docs alone must
        // be enough to publish them.
        if (row.deleted || design_doc || o.route_missing_doc_type) {
            return {o.default_topic, skip_reason::none};
        }
        return {{}, skip_reason::missing_doc_type};
    }
    std::string_view const doc_type = *meta.document_type;
    if (impl_->how == mode::prefix) {
        return {impl_->prefix_topic(doc_type), skip_reason::none};
    }
    if (auto it = impl_->table.find(doc_type); it != impl_->table.end()) {
        return {it->second, skip_reason::none};
    }
    return {o.default_topic, skip_reason::none};
}

std::vector<std::string> router::known_topics() const {
    std::set<std::string, std::less<>> topics;
    topics.insert(impl_->options.default_topic);
    for (auto const& [doc_type, topic] : impl_->table) {
        topics.insert(topic);
    }
    if (impl_->how == mode::prefix) {
        std::shared_lock lock(impl_->cache_mutex);
        for (auto const& [doc_type, topic] : impl_->cache) {
            topics.insert(topic);
        }
    }
    return {topics.begin(), topics.end()};
}

std::string_view router::default_topic() const noexcept {
    return impl_->options.default_topic;
}

std::string const& router::description() const noexcept {
    return impl_->description;
}

router::stats_snapshot router::stats() const noexcept {
    return {impl_->sanitized.load(std::memory_order_relaxed), impl_->overflow.load(std::memory_order_relaxed)};
}

} // namespace bridge
