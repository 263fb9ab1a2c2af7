#include "couch/changes_parser.hpp"

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

bool is_ws(char c) noexcept { return is_json_ws(c); }

// The seq of a row, byte-exact: the seq's own text from the row `text`,
// whose parsed value is `s` (a string or a number). The re-serialized value
// occurs right after `"seq":` (always true for CouchDB and PouchDB);
// otherwise the member is located structurally.
seq exact_seq(std::string_view text, boost::json::value const& s) {
    std::string candidate = boost::json::serialize(s);
    constexpr std::string_view key = "\"seq\":";
    for (auto pos = text.find(key); pos != std::string_view::npos; pos = text.find(key, pos + 1)) {
        if (text.substr(pos + key.size()).starts_with(candidate)) {
            return seq::from_raw_json(std::move(candidate));
        }
    }
    auto const raw = find_member_raw(text, "seq");
    if (!raw.empty()) {
        candidate.assign(raw.data(), raw.size());
    }
    return seq::from_raw_json(std::move(candidate));
}

// A string seq: fast path (CouchDB puts seq first): the first `"seq":"` is
// followed by exactly the decoded string's text, quoted, without escapes —
// no serialization needed.
seq exact_string_seq(std::string_view text, std::string const& decoded) {
    constexpr std::string_view key = "\"seq\":\"";
    auto const pos = text.find(key);
    if (pos != std::string_view::npos) {
        auto const start = pos + key.size() - 1;
        auto const raw = text.substr(start, decoded.size() + 2);
        if (raw.size() == decoded.size() + 2 && raw.back() == '"' && raw.substr(1, decoded.size()) == decoded) {
            return seq::from_raw_json(std::string(raw));
        }
    }
    return exact_seq(text, boost::json::value(boost::json::string_view(decoded)));
}

} // namespace


changes_parser::changes_parser(feed_kind kind, std::size_t max_row_bytes)
    : kind_(kind), max_row_bytes_(max_row_bytes) {}

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
    scan_.start();
    batch_storage_.reset();
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

void changes_parser::start_row() { scan_.start(); }

std::string_view changes_parser::keep_doc(std::string_view doc) {
    if (!batch_storage_) {
        // One block for the docs of this call's rows, usually: they are
        // most of its input. A row continued from an earlier call may need
        // more: the resource then grows geometrically, never fails.
        constexpr std::size_t min_block = 4096;
        constexpr std::size_t max_first_block = std::size_t{4} << 20;
        auto const first_block = std::clamp<std::size_t>(batch_bytes_ + doc.size(), min_block, max_first_block);
        batch_storage_ = std::make_shared<boost::json::monotonic_resource>(first_block);
    }
    auto* const bytes = static_cast<char*>(batch_storage_->allocate(doc.size(), 1));
    std::memcpy(bytes, doc.data(), doc.size());
    return {bytes, doc.size()};
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
    scan_.write_all(text, ec);
    if (ec) {
        return row_parse_failed(text, ec);
    }
    return on_row_done(text, out);
}

boost::system::error_code changes_parser::row_parse_failed(std::string_view partial, boost::system::error_code ec) {
    return fail(errc::malformed_row, describe_id(sniff_doc_id(partial)) + ": invalid JSON (" + ec.message() + ")");
}

boost::system::error_code changes_parser::on_row_done(std::string_view text, std::vector<row>& out) {
    if (!scan_.ordinary()) {
        return on_unusual_row(text, out);
    }
    row r = scan_.take_row();
    switch (scan_.kind_of_seq()) {
    case row_scanner::seq_kind::string:
        r.seq = exact_string_seq(text, scan_.seq_string());
        break;
    case row_scanner::seq_kind::number:
        r.seq = exact_seq(text, scan_.seq_number());
        break;
    default: // null: seq_interval
        break;
    }
    if (r.has_doc && keep_doc_text_) {
        r.doc_text = keep_doc(find_member_raw(text, "doc"));
        r.doc_storage = batch_storage_;
    }
    r.wire_bytes = text.size();
    emit(std::move(r), out);
    return {};
}

// A row the scanner does not cover, read the DOM way (the text is valid JSON:
// the scanner checked it): an error row, the continuous feed's last_seq line,
// or a row without a usable id or seq.
boost::system::error_code changes_parser::on_unusual_row(std::string_view text, std::vector<row>& out) {
    boost::system::error_code ec;
    boost::json::parse_options opt;
    opt.max_depth = 1000;
    auto v = boost::json::parse(text, ec, {}, opt);
    if (ec) {
        return row_parse_failed(text, ec);
    }
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
    std::string const doc_id(id->get_string().data(), id->get_string().size());
    // The scanner only leaves rows here whose seq is missing or of a wrong type.
    return fail(errc::malformed_row, describe_id(doc_id) + ": row without a valid seq");
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
            i += scan_.write_some(p + i, std::min(n - i, room), ec);
            std::string_view fresh = bytes.substr(row_start, i - row_start);
            if (ec) {
                if (pending_bytes_.empty()) {
                    return row_parse_failed(fresh.substr(0, std::min<std::size_t>(fresh.size(), 1u << 16)), ec);
                }
                pending_bytes_.append(fresh.substr(0, std::min<std::size_t>(fresh.size(), 4096)));
                return row_parse_failed(pending_bytes_, ec);
            }
            bool const complete = scan_.done();
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
            auto const row_ec = on_row_done(text, out);
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

} // namespace couch
