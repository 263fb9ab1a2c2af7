#include "couch/db_updates_parser.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <utility>

namespace couch {
namespace {

// `{"results":[],"last_seq":"..."}` once the rows are cut out.
constexpr std::size_t max_envelope_bytes = std::size_t{64} << 10;

bool is_ws(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_ws(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_ws(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

db_update_type type_of(std::string_view t) noexcept {
    if (t == "created") {
        return db_update_type::created;
    }
    if (t == "updated") {
        return db_update_type::updated;
    }
    if (t == "deleted") {
        return db_update_type::deleted;
    }
    return db_update_type::other;
}

// The seq's raw JSON text, byte-exact from the row.
couch::seq raw_seq(std::string_view text, boost::json::value const& v) {
    auto const raw = find_member_raw(text, "seq");
    if (!raw.empty()) {
        return seq::from_raw_json(std::string(raw));
    }
    return seq::from_json(v); // a duplicate key or odd spacing: the parsed value's text
}

} // namespace

char const* to_string(db_update_type t) noexcept {
    switch (t) {
    case db_update_type::created:
        return "created";
    case db_update_type::updated:
        return "updated";
    case db_update_type::deleted:
        return "deleted";
    case db_update_type::other:
        return "other";
    }
    return "other";
}

db_updates_parser::db_updates_parser(feed_kind kind, std::size_t max_row_bytes)
    : kind_(kind), max_row_bytes_(max_row_bytes) {}

void db_updates_parser::reset(feed_kind kind) { *this = db_updates_parser(kind, max_row_bytes_); }

boost::system::error_code db_updates_parser::fail(boost::system::error_code ec, std::string detail) {
    error_ = ec;
    error_detail_ = std::move(detail);
    return ec;
}

boost::system::error_code db_updates_parser::too_large() {
    return fail(errc::row_too_large, "a _db_updates row is larger than " + std::to_string(max_row_bytes_) + " bytes");
}

boost::system::error_code db_updates_parser::feed(std::string_view bytes, std::vector<db_update>& out) {
    if (error_) {
        return error_;
    }
    return kind_ == feed_kind::continuous ? feed_continuous(bytes, out) : feed_normal(bytes, out);
}

boost::system::error_code db_updates_parser::finish() {
    if (error_) {
        return error_;
    }
    if (kind_ == feed_kind::continuous) {
        if (!trim(pending_).empty()) {
            return fail(errc::truncated_body, "the _db_updates body ended inside a line");
        }
        pending_.clear();
        return {};
    }
    if (nstate_ != nstate::done) {
        return fail(errc::truncated_body, nstate_ == nstate::row ? "the _db_updates body ended inside a row"
                                                                 : "the _db_updates body ended before its envelope closed");
    }
    return {};
}

boost::system::error_code db_updates_parser::feed_continuous(std::string_view bytes, std::vector<db_update>& out) {
    while (!bytes.empty()) {
        auto const nl = bytes.find('\n');
        auto const piece = bytes.substr(0, nl);
        if (pending_.size() + piece.size() > max_row_bytes_) {
            return too_large();
        }
        if (nl == std::string_view::npos) {
            pending_.append(piece);
            return {};
        }
        bytes.remove_prefix(nl + 1);
        boost::system::error_code ec;
        if (pending_.empty()) {
            ec = on_line(piece, out);
        } else {
            pending_.append(piece);
            ec = on_line(pending_, out);
            pending_.clear();
        }
        if (ec) {
            return ec;
        }
    }
    return {};
}

boost::system::error_code db_updates_parser::on_line(std::string_view line, std::vector<db_update>& out) {
    line = trim(line);
    if (line.empty()) {
        ++heartbeats_;
        return {};
    }
    if (ended_) {
        return fail(errc::malformed_body, "data after the _db_updates last_seq line");
    }
    return on_row(line, true, out);
}

boost::system::error_code db_updates_parser::on_row(std::string_view text, bool continuous,
                                                    std::vector<db_update>& out) {
    boost::system::error_code ec;
    auto const v = boost::json::parse(text, ec);
    if (ec) {
        return fail(errc::malformed_row, "a _db_updates row is not valid JSON (" + ec.message() + ")");
    }
    auto const* obj = v.if_object();
    if (obj == nullptr) {
        return fail(errc::malformed_row, "a _db_updates row is not a JSON object");
    }
    if (auto const* err = obj->if_contains("error")) {
        std::string detail = "error " + boost::json::serialize(*err);
        if (auto const* reason = obj->if_contains("reason")) {
            detail += ", reason " + boost::json::serialize(*reason);
        }
        return fail(errc::server_error_row, std::move(detail));
    }
    auto const* name = obj->if_contains("db_name");
    if (name == nullptr && continuous) {
        if (auto const* ls = obj->if_contains("last_seq"); ls != nullptr && (ls->is_string() || ls->is_number())) {
            auto const raw = find_member_raw(text, "last_seq");
            last_seq_ = raw.empty() ? seq::from_json(*ls) : seq::from_raw_json(std::string(raw));
            ended_ = true;
            return {};
        }
    }
    if (name == nullptr || !name->is_string()) {
        return fail(errc::malformed_row, "a _db_updates row without a string db_name");
    }
    db_update u;
    u.db_name.assign(name->get_string().data(), name->get_string().size());
    auto const* type = obj->if_contains("type");
    if (type == nullptr || !type->is_string()) {
        return fail(errc::malformed_row, "database '" + u.db_name + "': a _db_updates row without a string type");
    }
    u.type_name.assign(type->get_string().data(), type->get_string().size());
    u.type = type_of(u.type_name);
    if (auto const* s = obj->if_contains("seq"); s != nullptr && !s->is_null()) {
        if (!s->is_string() && !s->is_number()) {
            return fail(errc::malformed_row, "database '" + u.db_name + "': a _db_updates seq is not a string or number");
        }
        u.seq = raw_seq(text, *s);
    }
    ++events_;
    out.push_back(std::move(u));
    return {};
}

boost::system::error_code db_updates_parser::feed_normal(std::string_view bytes, std::vector<db_update>& out) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        char const c = bytes[i];
        switch (nstate_) {
        case nstate::envelope: {
            if (depth_ == 0 && !in_string_) {
                if (is_ws(c)) {
                    break;
                }
                if (c != '{' || !envelope_.empty()) {
                    return fail(errc::malformed_body, "a _db_updates body must be one JSON object");
                }
            }
            if (envelope_.size() >= max_envelope_bytes) {
                return fail(errc::envelope_too_large,
                            "the _db_updates envelope exceeds " + std::to_string(max_envelope_bytes) + " bytes");
            }
            envelope_.push_back(c);
            if (in_string_) {
                if (escape_) {
                    escape_ = false;
                } else if (c == '\\') {
                    escape_ = true;
                } else if (c == '"') {
                    in_string_ = false;
                    break;
                }
                if (collecting_key_ && key_.size() < 16) {
                    key_.push_back(c);
                }
                break;
            }
            if (c == '"') {
                in_string_ = true;
                collecting_key_ = depth_ == 1;
                if (collecting_key_) {
                    key_.clear();
                }
            } else if (c == '{' || c == '[') {
                ++depth_;
                if (c == '[' && depth_ == 2 && key_ == "results" && !seen_results_) {
                    seen_results_ = true;
                    nstate_ = nstate::results;
                }
            } else if (c == '}' || c == ']') {
                if (--depth_ == 0) {
                    nstate_ = nstate::done;
                    if (auto ec = parse_envelope()) {
                        return ec;
                    }
                    ended_ = true;
                }
            }
            break;
        }
        case nstate::results:
            if (is_ws(c) || c == ',') {
                break;
            }
            if (c == ']') {
                envelope_.push_back(']');
                --depth_;
                nstate_ = nstate::envelope;
                break;
            }
            if (c != '{') {
                return fail(errc::malformed_body, "a _db_updates result is not a JSON object");
            }
            nstate_ = nstate::row;
            pending_.clear();
            row_depth_ = 0;
            in_string_ = false;
            escape_ = false;
            [[fallthrough]];
        case nstate::row: {
            // Copy the row up to its closing brace, tracking strings so
            // braces inside them do not count.
            std::size_t j = i;
            bool complete = false;
            for (; j < bytes.size(); ++j) {
                char const b = bytes[j];
                if (in_string_) {
                    if (escape_) {
                        escape_ = false;
                    } else if (b == '\\') {
                        escape_ = true;
                    } else if (b == '"') {
                        in_string_ = false;
                    }
                } else if (b == '"') {
                    in_string_ = true;
                } else if (b == '{' || b == '[') {
                    ++row_depth_;
                } else if ((b == '}' || b == ']') && --row_depth_ == 0) {
                    complete = true;
                    break;
                }
            }
            std::size_t const n = (complete ? j + 1 : j) - i;
            if (pending_.size() + n > max_row_bytes_) {
                return too_large();
            }
            pending_.append(bytes.data() + i, n);
            i = j; // the loop's ++i moves past the closing brace
            if (complete) {
                in_string_ = false;
                nstate_ = nstate::results;
                auto const ec = on_row(pending_, false, out);
                pending_.clear();
                if (ec) {
                    return ec;
                }
            }
            break;
        }
        case nstate::done:
            if (!is_ws(c)) {
                return fail(errc::malformed_body, "data after the end of the _db_updates body");
            }
            break;
        }
    }
    return {};
}

boost::system::error_code db_updates_parser::parse_envelope() {
    boost::system::error_code ec;
    auto const v = boost::json::parse(envelope_, ec);
    if (ec || !v.is_object()) {
        return fail(errc::malformed_body,
                    "invalid _db_updates envelope" + (ec ? " (" + ec.message() + ")" : std::string()));
    }
    auto const& obj = v.get_object();
    if (auto const* err = obj.if_contains("error")) {
        return fail(errc::server_error_row, "error " + boost::json::serialize(*err));
    }
    if (!seen_results_ || !obj.contains("results")) {
        return fail(errc::malformed_body, "the _db_updates body has no results");
    }
    if (auto const* ls = obj.if_contains("last_seq"); ls != nullptr && (ls->is_string() || ls->is_number())) {
        auto const raw = find_member_raw(envelope_, "last_seq");
        last_seq_ = raw.empty() ? seq::from_json(*ls) : seq::from_raw_json(std::string(raw));
    }
    return {};
}

} // namespace couch
