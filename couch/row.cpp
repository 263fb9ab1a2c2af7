#include "couch/row.hpp"

namespace couch {

std::optional<doc_fields::field> doc_fields::of_key(std::string_view key) noexcept {
    switch (key.size()) {
    case 4:
        if (key == "_rev") {
            return rev;
        }
        if (key == "type") {
            return type;
        }
        if (key == "name") {
            return name;
        }
        return std::nullopt;
    case 5:
        return key == "xmlns" ? std::optional<field>(xmlns) : std::nullopt;
    case 6:
        return key == "domain" ? std::optional<field>(domain) : std::nullopt;
    case 8:
        return key == "doc_type" ? std::optional<field>(doc_type) : std::nullopt;
    default:
        return std::nullopt;
    }
}

doc_fields doc_fields::from_object(boost::json::object const& doc) {
    doc_fields f;
    for (auto const& kv : doc) {
        auto const which = of_key(std::string_view(kv.key().data(), kv.key().size()));
        if (!which) {
            continue;
        }
        if (auto const* s = kv.value().if_string()) {
            f.set(*which, std::string_view(s->data(), s->size()));
        } else {
            f.clear(*which);
        }
    }
    return f;
}

void doc_fields::set(field f, std::string_view value) {
    begin(f);
    append(f, value);
}

void doc_fields::begin(field f) {
    if (text_.capacity() < first_capacity) {
        // One allocation for a row's fields (a rev, a doc_type, a domain, an
        // xmlns...) instead of growing through 30, 60, 120 bytes.
        text_.reserve(first_capacity);
    }
    spans_[f].offset = static_cast<std::uint32_t>(text_.size());
    spans_[f].length = 0;
}

void doc_fields::append(field f, std::string_view piece) {
    // Only the field begun last grows: its bytes are the buffer's tail.
    text_.append(piece);
    spans_[f].length += static_cast<std::uint32_t>(piece.size());
}

void doc_fields::reset() noexcept {
    text_.clear();
    spans_ = {};
}

bool operator==(doc_fields const& a, doc_fields const& b) noexcept {
    for (std::size_t i = 0; i < doc_fields::count; ++i) {
        auto const f = static_cast<doc_fields::field>(i);
        if (a.get(f) != b.get(f)) {
            return false;
        }
    }
    return true;
}

} // namespace couch
