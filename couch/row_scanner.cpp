#include "couch/row_scanner.hpp"

#include <boost/json/array.hpp>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/error.hpp>
#include <boost/json/object.hpp>
#include <boost/json/string.hpp>

#include <utility>

namespace couch {

namespace {

// The row member whose value is being read (the row object is depth 1).
enum class member : std::uint8_t { other, id, seq, deleted, changes, doc, error };

member member_of(std::string_view key) noexcept {
    switch (key.size()) {
    case 2:
        return key == "id" ? member::id : member::other;
    case 3:
        return key == "seq" ? member::seq : key == "doc" ? member::doc : member::other;
    case 5:
        return key == "error" ? member::error : member::other;
    case 7:
        return key == "deleted" ? member::deleted : key == "changes" ? member::changes : member::other;
    default:
        return member::other;
    }
}

// Keys longer than this are none of the ones looked for.
constexpr std::size_t max_interesting_key = 16;

boost::json::parse_options row_parse_options() {
    boost::json::parse_options opt;
    // Documents nest deeper than Boost.JSON's default of 32; the parser is
    // iterative, so a generous limit costs nothing.
    opt.max_depth = 1000;
    return opt;
}

} // namespace

struct row_scanner::handler {
    // The same limits as Boost.JSON's DOM parser, so the same rows fail.
    static constexpr std::size_t max_object_size = boost::json::object::max_size();
    static constexpr std::size_t max_array_size = boost::json::array::max_size();
    static constexpr std::size_t max_key_size = boost::json::string::max_size();
    static constexpr std::size_t max_string_size = boost::json::string::max_size();

    using error_code = boost::json::error_code;
    using string_view = boost::json::string_view;

    // What was read.
    row r;
    bool is_object = false;
    bool saw_error = false;
    enum class id_state : std::uint8_t { absent, string, other } id = id_state::absent;
    seq_kind seq = seq_kind::absent;
    std::string seq_text;
    boost::json::value seq_number;

    // Where the parser is. depth: containers open (the row object is 1).
    std::size_t depth = 0;
    member m1 = member::other;              // the row member being read
    std::optional<doc_fields::field> m2;    // the doc member being read (in_doc)
    bool in_doc = false;                    // the row's doc object is open
    bool in_changes = false;                // the row's changes array is open
    bool in_elem = false;                   // an object element of changes is open
    bool elem_key_rev = false;              // its member being read is `rev`
    bool elem_has_rev = false;
    std::string elem_rev;
    std::string key;
    bool key_long = false;
    enum class sink : std::uint8_t { none, id, seq, rev, field } target = sink::none;
    bool string_open = false;

    void start() {
        r = row{};
        is_object = false;
        saw_error = false;
        id = id_state::absent;
        seq = seq_kind::absent;
        seq_text.clear();
        seq_number = nullptr;
        depth = 0;
        m1 = member::other;
        m2.reset();
        in_doc = in_changes = in_elem = elem_key_rev = elem_has_rev = false;
        key.clear();
        key_long = false;
        target = sink::none;
        string_open = false;
    }

    // A value of a kind other than string starts at the current depth.
    // `container`: an object or array begins (`object` tells which).
    void non_string_value(bool container, bool object) {
        if (depth == 1) {
            switch (m1) {
            case member::id:
                id = id_state::other;
                break;
            case member::seq:
                if (container) {
                    seq = seq_kind::invalid;
                }
                break;
            case member::changes:
                in_changes = container && !object;
                break;
            case member::doc:
                in_doc = container && object;
                r.has_doc = in_doc;
                break;
            case member::error:
                saw_error = true;
                break;
            case member::deleted:
            case member::other:
                break;
            }
        } else if (depth == 2 && in_doc) {
            if (m2) {
                r.doc.clear(*m2);
            }
        } else if (depth == 2 && in_changes) {
            if (container && object) {
                in_elem = true;
                elem_key_rev = elem_has_rev = false;
            }
        } else if (depth == 3 && in_elem && elem_key_rev) {
            elem_has_rev = false;
        }
    }

    bool wants_key() const noexcept { return depth == 1 || (depth == 2 && in_doc) || (depth == 3 && in_elem); }

    void on_key_done() {
        std::string_view const k = key_long ? std::string_view() : std::string_view(key);
        if (depth == 1) {
            m1 = key_long ? member::other : member_of(k);
            // A later duplicate replaces the earlier value entirely.
            switch (m1) {
            case member::deleted:
                r.deleted = false;
                break;
            case member::changes:
                r.revs.clear();
                break;
            case member::doc:
                r.has_doc = false;
                r.doc.reset();
                break;
            default:
                break;
            }
        } else if (depth == 2) {
            m2 = key_long ? std::nullopt : doc_fields::of_key(k);
        } else {
            elem_key_rev = k == "rev";
        }
        key.clear();
        key_long = false;
    }

    void begin_string() {
        string_open = true;
        target = sink::none;
        if (depth == 1) {
            switch (m1) {
            case member::id:
                r.id.clear();
                target = sink::id;
                break;
            case member::seq:
                seq_text.clear();
                target = sink::seq;
                break;
            case member::error:
                saw_error = true;
                break;
            default:
                break;
            }
        } else if (depth == 2 && in_doc && m2) {
            r.doc.begin(*m2);
            target = sink::field;
        } else if (depth == 3 && in_elem && elem_key_rev) {
            elem_rev.clear();
            target = sink::rev;
        }
    }

    void append_string(string_view s) {
        switch (target) {
        case sink::none:
            break;
        case sink::id:
            r.id.append(s.data(), s.size());
            break;
        case sink::seq:
            seq_text.append(s.data(), s.size());
            break;
        case sink::rev:
            elem_rev.append(s.data(), s.size());
            break;
        case sink::field:
            r.doc.append(*m2, std::string_view(s.data(), s.size()));
            break;
        }
    }

    void end_string() {
        string_open = false;
        switch (target) {
        case sink::id:
            id = id_state::string;
            break;
        case sink::seq:
            seq = seq_kind::string;
            break;
        case sink::rev:
            elem_has_rev = true;
            break;
        case sink::none:
        case sink::field:
            break;
        }
        target = sink::none;
    }

    void scalar_seq(boost::json::value v) {
        if (depth == 1 && m1 == member::seq) {
            seq_number = std::move(v);
            seq = seq_kind::number;
        }
    }

    bool on_document_begin(error_code&) { return true; }
    bool on_document_end(error_code&) { return true; }

    bool on_object_begin(error_code&) {
        if (depth == 0) {
            is_object = true;
        } else {
            non_string_value(true, true);
        }
        ++depth;
        return true;
    }

    bool on_object_end(std::size_t, error_code&) {
        --depth;
        if (depth == 1) {
            in_doc = false;
        } else if (depth == 2 && in_elem) {
            if (elem_has_rev) {
                r.revs.push_back(std::move(elem_rev));
                elem_rev = std::string();
            }
            in_elem = false;
        }
        return true;
    }

    bool on_array_begin(error_code&) {
        if (depth != 0) {
            non_string_value(true, false);
        }
        ++depth;
        return true;
    }

    bool on_array_end(std::size_t, error_code&) {
        --depth;
        if (depth == 1) {
            in_changes = false;
        }
        return true;
    }

    bool on_key_part(string_view s, std::size_t n, error_code&) {
        if (wants_key() && !key_long) {
            if (n > max_interesting_key) {
                key_long = true;
            } else {
                key.append(s.data(), s.size());
            }
        }
        return true;
    }

    bool on_key(string_view s, std::size_t n, error_code& ec) {
        if (!wants_key()) {
            return true;
        }
        on_key_part(s, n, ec);
        on_key_done();
        return true;
    }

    bool on_string_part(string_view s, std::size_t, error_code&) {
        if (!string_open) {
            begin_string();
        }
        append_string(s);
        return true;
    }

    bool on_string(string_view s, std::size_t, error_code&) {
        if (!string_open) {
            begin_string();
        }
        append_string(s);
        end_string();
        return true;
    }

    bool on_number_part(string_view, error_code&) { return true; }

    bool on_int64(std::int64_t i, string_view, error_code&) {
        non_string_value(false, false);
        scalar_seq(boost::json::value(i));
        return true;
    }

    bool on_uint64(std::uint64_t u, string_view, error_code&) {
        non_string_value(false, false);
        scalar_seq(boost::json::value(u));
        return true;
    }

    bool on_double(double d, string_view, error_code&) {
        non_string_value(false, false);
        scalar_seq(boost::json::value(d));
        return true;
    }

    bool on_bool(bool b, error_code&) {
        non_string_value(false, false);
        if (depth == 1) {
            if (m1 == member::deleted) {
                r.deleted = b;
            } else if (m1 == member::seq) {
                seq = seq_kind::invalid;
            }
        }
        return true;
    }

    bool on_null(error_code&) {
        non_string_value(false, false);
        if (depth == 1 && m1 == member::seq) {
            seq = seq_kind::null;
        }
        return true;
    }

    bool on_comment_part(string_view, error_code&) { return true; }
    bool on_comment(string_view, error_code&) { return true; }
};

struct row_scanner::parser : boost::json::basic_parser<row_scanner::handler> {
    parser() : basic_parser(row_parse_options()) {}
};

row_scanner::row_scanner() : p_(std::make_unique<parser>()) {}

row_scanner::~row_scanner() = default;

void row_scanner::start() {
    p_->reset();
    p_->handler().start();
}

std::size_t row_scanner::write_some(char const* data, std::size_t size, boost::system::error_code& ec) {
    return p_->write_some(true, data, size, ec);
}

void row_scanner::write_all(std::string_view text, boost::system::error_code& ec) {
    auto const n = p_->write_some(true, text.data(), text.size(), ec);
    if (!ec && n < text.size()) {
        ec = boost::json::error::extra_data;
        p_->fail(ec);
    }
    if (!ec) {
        p_->write_some(false, nullptr, 0, ec);
    }
}

bool row_scanner::done() const noexcept { return p_->done(); }

bool row_scanner::ordinary() const noexcept {
    auto const& h = p_->handler();
    return h.is_object && !h.saw_error && h.id == handler::id_state::string &&
           (h.seq == seq_kind::null || h.seq == seq_kind::string || h.seq == seq_kind::number);
}

row row_scanner::take_row() { return std::move(p_->handler().r); }

row_scanner::seq_kind row_scanner::kind_of_seq() const noexcept { return p_->handler().seq; }

std::string const& row_scanner::seq_string() const noexcept { return p_->handler().seq_text; }

boost::json::value const& row_scanner::seq_number() const noexcept { return p_->handler().seq_number; }

} // namespace couch
