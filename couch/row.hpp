#pragma once

#include "couch/seq.hpp"

#include <boost/json/object.hpp>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace couch {

// One row of a _changes feed, parsed once by the feed; downstream reads the
// fields and the document without parsing anything again.
struct row {
    std::string id;
    couch::seq seq;
    bool deleted = false;
    // changes[].rev in the order the server sent them (the winning rev first
    // for style=main_only, which is what the bridge asks for).
    std::vector<std::string> revs;
    // Owns the memory `doc` lives in (a monotonic arena shared by the rows of
    // one parser batch, see couch::changes_parser). Declared before `doc` so it
    // outlives it. `doc` does not count references to the arena itself (that
    // lets its destructor skip walking the DOM, ~18 % of parsing), so a doc
    // or a value inside it must not outlive its row: to keep one longer, copy
    // it into another storage, e.g. boost::json::object(*row.doc, {}). Rows
    // built by hand (tests) leave this empty and use any storage they like.
    std::shared_ptr<void> doc_storage;
    // The document (include_docs=true); nullopt when the server sent none or
    // `null` (CouchDB sends the tombstone `{_id,_rev,_deleted}` for deletions).
    std::optional<boost::json::object> doc;
    // Bytes of this row on the wire (its JSON text), for metrics and the
    // in-flight byte window.
    std::size_t wire_bytes = 0;
    // The `doc` member's bytes exactly as the server sent them, when the
    // feed was asked to keep them (feed_options::keep_doc_text); else empty.
    std::string doc_text;
    // No change, only a position: the feed's last_seq after a filtered batch
    // (id empty). Handled like a skipped row.
    bool position_only = false;
};

} // namespace couch
