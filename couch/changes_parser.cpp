#include "couch/changes_parser.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cstring>
#include <utility>

namespace couch {
namespace {

// The envelope of a normal feed is `{"results":[],"last_seq":...,"pending":N}`
// once the rows are cut out: tiny. Anything bigger is not CouchDB.
constexpr std::size_t max_envelope_bytes = 1u << 20;
constexpr std::size_t max_chunk_extension_bytes = 4096;

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool is_ws(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::size_t skip_ws(std::string_view s, std::size_t i) noexcept {
    while (i < s.size() && is_ws(s[i])) {
        ++i;
    }
    return i;
}

// Index just past the JSON string starting at s[i] == '"', or npos.
std::size_t skip_string(std::string_view s, std::size_t i) noexcept {
    for (++i; i < s.size(); ++i) {
        if (s[i] == '\\') {
            ++i;
        } else if (s[i] == '"') {
            return i + 1;
        }
    }
    return std::string_view::npos;
}

// Index just past the JSON value starting at s[i], or npos. Structural only.
std::size_t skip_value(std::string_view s, std::size_t i) noexcept {
    if (i >= s.size()) {
        return std::string_view::npos;
    }
    if (s[i] == '"') {
        return skip_string(s, i);
    }
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < s.size()) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, i);
                if (i == std::string_view::npos) {
                    return i;
                }
                continue;
            }
            if (c == '{' || c == '[') {
                ++depth;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) {
                    return i + 1;
                }
            }
            ++i;
        }
        return std::string_view::npos;
    }
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_ws(s[i])) {
        ++i;
    }
    return i;
}

std::string describe_id(std::string_view id) {
    if (id.empty()) {
        return "doc id unknown";
    }
    return "doc id '" + std::string(id) + "'";
}

} // namespace

// ---------------------------------------------------------------------------
// chunked_decoder

boost::system::error_code chunked_decoder::next(std::string_view& in, std::string_view& piece) {
    piece = {};
    if (error_) {
        return error_;
    }
    while (!in.empty() && state_ != state::done) {
        char const c = in.front();
        switch (state_) {
        case state::size: {
            int const d = hex_value(c);
            if (d >= 0) {
                // 15 hex digits is already 2^60 bytes: more is garbage, not a size.
                if (size_digits_ >= 15) {
                    return error_ = errc::bad_chunk_framing;
                }
                remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(d);
                ++size_digits_;
            } else if (size_digits_ == 0) {
                return error_ = errc::chunk_size_not_hex;
            } else if (c == ';' || c == ' ' || c == '\t') {
                state_ = state::extension;
                remaining_extension_ = max_chunk_extension_bytes;
            } else if (c == '\r') {
                state_ = state::size_lf;
            } else {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            break;
        }
        case state::extension:
            if (c == '\r') {
                state_ = state::size_lf;
            } else if (--remaining_extension_ == 0) {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            break;
        case state::size_lf:
            if (c != '\n') {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            size_digits_ = 0;
            state_ = remaining_ == 0 ? state::trailer_start : state::data;
            break;
        case state::data: {
            auto const n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size()));
            piece = in.substr(0, n);
            in.remove_prefix(n);
            remaining_ -= n;
            if (remaining_ == 0) {
                state_ = state::data_cr;
            }
            return {};
        }
        case state::data_cr:
            if (c != '\r') {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            state_ = state::data_lf;
            break;
        case state::data_lf:
            if (c != '\n') {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            state_ = state::size;
            break;
        case state::trailer_start:
            state_ = c == '\r' ? state::final_lf : state::trailer;
            in.remove_prefix(1);
            break;
        case state::trailer:
            if (c == '\n') {
                state_ = state::trailer_start;
            }
            in.remove_prefix(1);
            break;
        case state::final_lf:
            if (c != '\n') {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            state_ = state::done;
            break;
        case state::done:
            break;
        }
    }
    return {};
}

// ---------------------------------------------------------------------------
// changes_parser

namespace {
boost::json::parse_options row_parse_options() {
    boost::json::parse_options opt;
    // Documents nest deeper than Boost.JSON's default of 32; the parser is
    // iterative, so a generous limit costs nothing.
    opt.max_depth = 1000;
    return opt;
}
} // namespace

changes_parser::changes_parser(feed_kind kind, std::size_t max_row_bytes)
    : kind_(kind), max_row_bytes_(max_row_bytes), json_({}, row_parse_options()) {}

void changes_parser::reset(feed_kind kind) {
    kind_ = kind;
    pending_bytes_.clear();
    held_.clear();
    held_bytes_ = 0;
    last_seq_ = {};
    pending_.reset();
    ended_ = false;
    error_ = {};
    error_detail_.clear();
    rows_parsed_ = 0;
    nstate_ = nstate::before_results;
    envelope_.clear();
    depth_ = 0;
    json_.reset(); // first: it may hold values in the resources below
    batch_storage_.reset();
    row_storage_.reset();
    in_string_ = false;
    escape_ = false;
    last_key_.clear();
    collecting_key_ = false;
}

boost::system::error_code changes_parser::fail(boost::system::error_code ec, std::string detail) {
    error_ = ec;
    error_detail_ = std::move(detail);
    return ec;
}

boost::system::error_code changes_parser::too_large(std::string_view partial) {
    return fail(errc::row_too_large, describe_id(sniff_doc_id(partial)) + ": row larger than " +
                                         std::to_string(max_row_bytes_) + " bytes");
}

boost::system::error_code changes_parser::feed(std::string_view bytes, std::vector<row>& out) {
    if (error_) {
        return error_;
    }
    // A new batch: rows of earlier calls keep their resource alive, this
    // call's rows get a fresh one (created on the first row, so heartbeats
    // and envelope bytes allocate nothing).
    batch_storage_.reset();
    batch_bytes_ = bytes.size();
    auto const ec = kind_ == feed_kind::continuous ? feed_continuous(bytes, out) : feed_normal(bytes, out);
    // Do not pin this batch's memory in the parser: a row of the next call
    // gets a new resource anyway.
    batch_storage_.reset();
    return ec;
}

void changes_parser::start_row() {
    // Drop whatever the parser holds before the resource it lives in may go.
    json_.reset();
    if (!batch_storage_) {
        // A document's DOM takes about twice its text (values are 16 bytes,
        // object entries 32, long strings copied), so twice the input of this
        // call is usually one block. A row continued from an earlier call may
        // need more: the resource then grows geometrically, never fails.
        constexpr std::size_t min_block = 4096;
        constexpr std::size_t max_first_block = std::size_t{4} << 20;
        auto const first_block = std::clamp<std::size_t>(2 * batch_bytes_, min_block, max_first_block);
        batch_storage_ = std::make_shared<boost::json::monotonic_resource>(first_block);
    }
    row_storage_ = batch_storage_;
    // Not counted: the row holds row_storage_ instead, which lets Boost.JSON
    // skip the destructor walk of a monotonic (trivially deallocating) DOM.
    json_.reset(boost::json::storage_ptr(row_storage_.get()));
}

boost::system::error_code changes_parser::finish(std::vector<row>& out) {
    if (error_) {
        return error_;
    }
    if (kind_ == feed_kind::continuous) {
        // A continuous body may simply stop (closed socket); only a partial
        // line is an error. Held rows without a last_seq to cover them are
        // dropped: the feed re-reads them from the last seq it handed out.
        if (!pending_bytes_.empty()) {
            std::string_view rest = pending_bytes_;
            while (!rest.empty() && is_ws(rest.back())) {
                rest.remove_suffix(1);
            }
            if (!rest.empty()) {
                auto const ec = fail(errc::truncated_body, describe_id(sniff_doc_id(rest)) + ": body ended inside a row");
                pending_bytes_.clear();
                return ec;
            }
            pending_bytes_.clear();
        }
        if (ended_) {
            release_held(out);
        }
        held_.clear();
        held_bytes_ = 0;
        return {};
    }
    if (nstate_ != nstate::done) {
        return fail(errc::truncated_body, nstate_ == nstate::in_row
                                              ? describe_id(sniff_doc_id(pending_bytes_)) + ": body ended inside a row"
                                              : std::string("body ended before the results envelope closed"));
    }
    return {};
}

void changes_parser::emit(row r, std::vector<row>& out) {
    ++rows_parsed_;
    if (r.seq.empty()) {
        held_bytes_ += r.wire_bytes;
        held_.push_back(std::move(r));
        if (held_bytes_ >= max_held_bytes) {
            // Large documents: holding up to seq_interval of them (and their
            // DOMs) would make memory grow with the document size. Hand
            // them out without a seq; the consumer checkpoints only at rows
            // that have one (see the class comment).
            for (auto& h : held_) {
                out.push_back(std::move(h));
            }
            held_.clear();
            held_bytes_ = 0;
        }
        return;
    }
    for (auto& h : held_) {
        out.push_back(std::move(h));
    }
    held_.clear();
    held_bytes_ = 0;
    out.push_back(std::move(r));
}

void changes_parser::release_held(std::vector<row>& out) {
    if (held_.empty()) {
        return;
    }
    if (!last_seq_.empty()) {
        // last_seq is the position just after the last row of the response,
        // so a checkpoint there covers every held row.
        held_.back().seq = last_seq_;
    }
    for (auto& h : held_) {
        out.push_back(std::move(h));
    }
    held_.clear();
    held_bytes_ = 0;
}

boost::system::error_code changes_parser::feed_continuous(std::string_view bytes, std::vector<row>& out) {
    while (!bytes.empty()) {
        auto const nl = bytes.find('\n');
        if (nl == std::string_view::npos) {
            if (pending_bytes_.size() + bytes.size() > max_row_bytes_) {
                pending_bytes_.append(bytes.substr(0, std::min<std::size_t>(bytes.size(), 4096)));
                return too_large(pending_bytes_);
            }
            pending_bytes_.append(bytes);
            return {};
        }
        std::string_view line;
        if (pending_bytes_.empty()) {
            line = bytes.substr(0, nl);
        } else {
            if (pending_bytes_.size() + nl > max_row_bytes_) {
                return too_large(pending_bytes_);
            }
            pending_bytes_.append(bytes.data(), nl);
            line = pending_bytes_;
        }
        bytes.remove_prefix(nl + 1);
        auto const ec = on_line(line, out);
        pending_bytes_.clear();
        if (ec) {
            return ec;
        }
    }
    return {};
}

boost::system::error_code changes_parser::on_line(std::string_view line, std::vector<row>& out) {
    while (!line.empty() && is_ws(line.back())) {
        line.remove_suffix(1);
    }
    while (!line.empty() && is_ws(line.front())) {
        line.remove_prefix(1);
    }
    if (line.empty()) {
        return {}; // heartbeat
    }
    if (ended_) {
        return fail(errc::malformed_body, "data after the last_seq line");
    }
    return on_row_text(line, out);
}

boost::system::error_code changes_parser::on_row_text(std::string_view text, std::vector<row>& out) {
    if (text.size() > max_row_bytes_) {
        return too_large(text);
    }
    start_row();
    boost::system::error_code ec;
    json_.write(text.data(), text.size(), ec);
    if (!ec) {
        json_.finish(ec);
    }
    if (ec) {
        return row_parse_failed(text, ec);
    }
    return on_row_value(text, json_.release(), out);
}

boost::system::error_code changes_parser::row_parse_failed(std::string_view partial, boost::system::error_code ec) {
    return fail(errc::malformed_row, describe_id(sniff_doc_id(partial)) + ": invalid JSON (" + ec.message() + ")");
}

boost::system::error_code changes_parser::on_row_value(std::string_view text, boost::json::value v,
                                                       std::vector<row>& out) {
    auto* obj = v.if_object();
    if (obj == nullptr) {
        return fail(errc::malformed_row, "a change row is not a JSON object");
    }
    if (auto const* err = obj->if_contains("error")) {
        std::string detail = "error " + boost::json::serialize(*err);
        if (auto const* reason = obj->if_contains("reason")) {
            detail += ", reason " + boost::json::serialize(*reason);
        }
        return fail(errc::server_error_row, std::move(detail));
    }
    auto const* id = obj->if_contains("id");
    if (id == nullptr) {
        auto const* ls = obj->if_contains("last_seq");
        if (kind_ == feed_kind::continuous && ls != nullptr && (ls->is_string() || ls->is_number())) {
            last_seq_ = seq::from_raw_json(std::string(find_member_raw(text, "last_seq")));
            if (last_seq_.empty()) {
                last_seq_ = seq::from_json(*ls);
            }
            if (auto const* p = obj->if_contains("pending"); p != nullptr && p->is_number()) {
                boost::system::error_code pec;
                auto const n = p->to_number<std::uint64_t>(pec);
                if (!pec) {
                    pending_ = n;
                }
            }
            ended_ = true;
            release_held(out);
            return {};
        }
        return fail(errc::malformed_row, "a change row has no id");
    }
    if (!id->is_string()) {
        return fail(errc::malformed_row, "a change row's id is not a string");
    }
    row r;
    r.id.assign(id->get_string().data(), id->get_string().size());
    auto const* s = obj->if_contains("seq");
    if (s == nullptr || !(s->is_null() || s->is_string() || s->is_number())) {
        return fail(errc::malformed_row, describe_id(r.id) + ": row without a valid seq");
    }
    if (s->is_string()) {
        // Byte-exact: the seq's own text from the row. Fast path (CouchDB
        // puts seq first): the first `"seq":` is followed by exactly the
        // string's text, quoted, without escapes — no serialization needed.
        constexpr std::string_view key = "\"seq\":\"";
        auto const& str = s->get_string();
        auto const pos = text.find(key);
        if (pos != std::string_view::npos) {
            auto const start = pos + key.size() - 1;
            auto const raw = text.substr(start, str.size() + 2);
            if (raw.size() == str.size() + 2 && raw.back() == '"' &&
                raw.substr(1, str.size()) == std::string_view(str.data(), str.size())) {
                r.seq = seq::from_raw_json(std::string(raw));
            }
        }
    }
    if (!s->is_null() && r.seq.empty()) {
        // Byte-exact: the seq's own text from the row. The re-serialized
        // value occurs right after `"seq":` (always true for CouchDB and
        // PouchDB); otherwise locate the member structurally.
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
            auto const raw = find_member_raw(text, "seq");
            if (!raw.empty()) {
                candidate.assign(raw.data(), raw.size());
            }
        }
        r.seq = seq::from_raw_json(std::move(candidate));
    }
    if (auto const* d = obj->if_contains("deleted"); d != nullptr && d->is_bool()) {
        r.deleted = d->get_bool();
    }
    if (auto const* ch = obj->if_contains("changes"); ch != nullptr && ch->is_array()) {
        r.revs.reserve(ch->get_array().size());
        for (auto const& c : ch->get_array()) {
            if (auto const* co = c.if_object()) {
                if (auto const* rev = co->if_contains("rev"); rev != nullptr && rev->is_string()) {
                    r.revs.emplace_back(rev->get_string().data(), rev->get_string().size());
                }
            }
        }
    }
    if (auto* doc = obj->if_contains("doc"); doc != nullptr && doc->is_object()) {
        r.doc_storage = row_storage_;
        r.doc.emplace(std::move(doc->get_object()));
        if (keep_doc_text_) {
            r.doc_text = std::string(find_member_raw(text, "doc"));
        }
    }
    r.wire_bytes = text.size();
    emit(std::move(r), out);
    return {};
}

boost::system::error_code changes_parser::feed_normal(std::string_view bytes, std::vector<row>& out) {
    char const* const p = bytes.data();
    std::size_t const n = bytes.size();
    std::size_t i = 0;
    // Where the current row starts in `bytes`; a row continued from an
    // earlier call is in pending_bytes_ and starts at 0 here.
    std::size_t row_start = 0;
    while (i < n) {
        switch (nstate_) {
        case nstate::before_results:
        case nstate::after_results: {
            char const c = p[i];
            if (depth_ == 0 && !in_string_) {
                if (is_ws(c)) {
                    ++i;
                    break;
                }
                if (c != '{' || nstate_ != nstate::before_results || !envelope_.empty()) {
                    return fail(errc::malformed_body, "a _changes body must be one JSON object");
                }
            }
            envelope_.push_back(c);
            if (envelope_.size() > max_envelope_bytes) {
                return fail(errc::envelope_too_large, "the _changes envelope exceeds " +
                                                          std::to_string(max_envelope_bytes) + " bytes");
            }
            ++i;
            if (in_string_) {
                if (escape_) {
                    escape_ = false;
                } else if (c == '\\') {
                    escape_ = true;
                } else if (c == '"') {
                    in_string_ = false;
                    break;
                }
                if (collecting_key_ && last_key_.size() < 16) {
                    last_key_.push_back(c);
                }
                break;
            }
            if (c == '"') {
                in_string_ = true;
                collecting_key_ = depth_ == 1;
                if (collecting_key_) {
                    last_key_.clear();
                }
            } else if (c == '{' || c == '[') {
                ++depth_;
                if (c == '[' && depth_ == 2 && nstate_ == nstate::before_results && last_key_ == "results") {
                    nstate_ = nstate::in_results;
                }
            } else if (c == '}' || c == ']') {
                if (--depth_ == 0) {
                    nstate_ = nstate::done;
                    if (auto ec = parse_envelope()) {
                        return ec;
                    }
                    release_held(out);
                    ended_ = true;
                }
            }
            break;
        }
        case nstate::in_results: {
            char const c = p[i];
            if (is_ws(c) || c == ',') {
                ++i;
            } else if (c == '{') {
                nstate_ = nstate::in_row;
                row_start = i;
                start_row();
            } else if (c == ']') {
                envelope_.push_back(']');
                --depth_;
                nstate_ = nstate::after_results;
                ++i;
            } else {
                return fail(errc::malformed_body, "unexpected byte between rows of results");
            }
            break;
        }
        case nstate::in_row: {
            // The JSON parser finds the end of the row itself (it stops after
            // the closing brace and the whitespace after it), so the row's
            // bytes are scanned once. Never hand it more than the row limit
            // allows: a huge row fails before its DOM is built.
            std::size_t const room = max_row_bytes_ + 1 - std::min(max_row_bytes_, pending_bytes_.size() + (i - row_start));
            boost::system::error_code ec;
            i += json_.write_some(p + i, std::min(n - i, room), ec);
            std::string_view fresh = bytes.substr(row_start, i - row_start);
            if (ec) {
                if (pending_bytes_.empty()) {
                    return row_parse_failed(fresh.substr(0, std::min<std::size_t>(fresh.size(), 1u << 16)), ec);
                }
                pending_bytes_.append(fresh.substr(0, std::min<std::size_t>(fresh.size(), 4096)));
                return row_parse_failed(pending_bytes_, ec);
            }
            bool const complete = json_.done();
            // Trailing whitespace the parser consumed is not part of the row.
            while (complete && !fresh.empty() && is_ws(fresh.back())) {
                fresh.remove_suffix(1);
            }
            if (pending_bytes_.size() + fresh.size() > max_row_bytes_) {
                if (pending_bytes_.empty()) {
                    return too_large(fresh.substr(0, std::min<std::size_t>(fresh.size(), 4096)));
                }
                return too_large(pending_bytes_);
            }
            if (!complete) {
                pending_bytes_.append(fresh);
                break;
            }
            std::string_view text;
            if (pending_bytes_.empty()) {
                text = fresh;
            } else {
                pending_bytes_.append(fresh);
                text = pending_bytes_;
            }
            auto const row_ec = on_row_value(text, json_.release(), out);
            pending_bytes_.clear();
            if (row_ec) {
                return row_ec;
            }
            nstate_ = nstate::in_results;
            break;
        }
        case nstate::done:
            if (!is_ws(p[i])) {
                return fail(errc::malformed_body, "data after the end of the _changes body");
            }
            ++i;
            break;
        }
    }
    return {};
}

boost::system::error_code changes_parser::parse_envelope() {
    boost::system::error_code ec;
    auto v = boost::json::parse(envelope_, ec);
    if (ec || !v.is_object()) {
        return fail(errc::malformed_body, "invalid _changes envelope" + (ec ? " (" + ec.message() + ")" : std::string()));
    }
    auto const& obj = v.get_object();
    if (auto const* ls = obj.if_contains("last_seq"); ls != nullptr && (ls->is_string() || ls->is_number())) {
        last_seq_ = seq::from_raw_json(std::string(find_member_raw(envelope_, "last_seq")));
        if (last_seq_.empty()) {
            last_seq_ = seq::from_json(*ls);
        }
    }
    if (auto const* p = obj.if_contains("pending"); p != nullptr && p->is_number()) {
        boost::system::error_code pec;
        auto const n = p->to_number<std::uint64_t>(pec);
        if (!pec) {
            pending_ = n;
        }
    }
    if (!obj.contains("results")) {
        return fail(errc::malformed_body, "the _changes body has no results");
    }
    return {};
}

std::string_view find_member_raw(std::string_view s, std::string_view key) {
    std::size_t i = skip_ws(s, 0);
    if (i >= s.size() || s[i] != '{') {
        return {};
    }
    ++i;
    while (true) {
        i = skip_ws(s, i);
        if (i >= s.size() || s[i] != '"') {
            return {};
        }
        std::size_t const key_end = skip_string(s, i);
        if (key_end == std::string_view::npos) {
            return {};
        }
        std::string_view const k = s.substr(i + 1, key_end - i - 2);
        i = skip_ws(s, key_end);
        if (i >= s.size() || s[i] != ':') {
            return {};
        }
        i = skip_ws(s, i + 1);
        std::size_t const value_end = skip_value(s, i);
        if (value_end == std::string_view::npos || value_end == i) {
            return {};
        }
        if (k == key) {
            return s.substr(i, value_end - i);
        }
        i = skip_ws(s, value_end);
        if (i >= s.size() || s[i] != ',') {
            return {};
        }
        ++i;
    }
}

std::string sniff_doc_id(std::string_view partial) {
    constexpr std::string_view key = "\"id\":\"";
    partial = partial.substr(0, std::min<std::size_t>(partial.size(), 1u << 16));
    auto const pos = partial.find(key);
    if (pos == std::string_view::npos) {
        return {};
    }
    std::string id;
    for (std::size_t i = pos + key.size(); i < partial.size() && id.size() < 512; ++i) {
        char const c = partial[i];
        if (c == '\\' && i + 1 < partial.size()) {
            id.push_back(partial[++i]);
        } else if (c == '"') {
            return id;
        } else {
            id.push_back(c);
        }
    }
    return id;
}

} // namespace couch
