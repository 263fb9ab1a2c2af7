#pragma once

#include "couch/seq.hpp"

#include <boost/json/object.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace couch {

// The members of a row's document that a change record needs (bridge's
// make_change_meta and the routing profiles), read from the document's top
// level only, without building the document. A member counts only when its
// value is a JSON string (decoded: escapes resolved); any other value, or a
// missing member, reads as nullopt. Duplicate keys: the last one wins, as in
// Boost.JSON's DOM.
class doc_fields {
public:
    enum field : std::uint8_t { rev, doc_type, type, xmlns, domain, name };
    static constexpr std::size_t count = 6;

    // Which field a top-level key is (`_rev`, `doc_type`, `type`, `xmlns`,
    // `domain`, `name`), or nullopt.
    static std::optional<field> of_key(std::string_view key) noexcept;

    // The DOM way, for rows built by hand and as the reference of the tests.
    static doc_fields from_object(boost::json::object const& doc);

    std::optional<std::string_view> get(field f) const noexcept {
        auto const& s = spans_[f];
        if (s.length == absent) {
            return std::nullopt;
        }
        return std::string_view(text_).substr(s.offset, s.length);
    }

    void clear(field f) noexcept { spans_[f].length = absent; }
    // Sets `f` to the string `value` (appended to the one buffer of all fields).
    void set(field f, std::string_view value);
    // Appends to `f`, which starts empty at the first call: for strings that
    // arrive in pieces. Call begin(f) first.
    void begin(field f);
    void append(field f, std::string_view piece);
    void reset() noexcept;

    friend bool operator==(doc_fields const& a, doc_fields const& b) noexcept;

private:
    static constexpr std::uint32_t absent = 0xFFFFFFFFu;
    static constexpr std::size_t first_capacity = 128;
    struct span {
        std::uint32_t offset = 0;
        std::uint32_t length = absent;
    };
    std::string text_;
    std::array<span, count> spans_{};
};

// One row of a _changes feed, parsed once by the feed; downstream reads the
// fields without parsing anything again.
struct row {
    std::string id;
    couch::seq seq;
    bool deleted = false;
    // changes[].rev in the order the server sent them (the winning rev first
    // for style=main_only, which is what the bridge asks for).
    std::vector<std::string> revs;
    // The server sent a document (include_docs=true) and it is a JSON object;
    // false when it sent none or `null` (CouchDB sends the tombstone
    // `{_id,_rev,_deleted}` for deletions).
    bool has_doc = false;
    // The document's members a change record needs (empty without a doc).
    doc_fields doc;
    // Owns the bytes doc_text points into (an arena shared by the rows of one
    // parser batch, see couch::changes_parser), or null. Declared before
    // doc_text so it outlives it.
    std::shared_ptr<void> doc_storage;
    // The `doc` member's bytes exactly as the server sent them, when the
    // feed was asked to keep them (feed_options::keep_doc_text); else empty.
    // Valid as long as this row (or a copy of doc_storage) lives. Rows built
    // by hand point it at storage of their own.
    std::string_view doc_text;
    // Bytes of this row on the wire (its JSON text), for metrics and the
    // in-flight byte window.
    std::size_t wire_bytes = 0;
    // No change, only a position: the feed's last_seq after a filtered batch
    // (id empty). Handled like a skipped row.
    bool position_only = false;
};

} // namespace couch
