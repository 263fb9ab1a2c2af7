#pragma once

#include "bridge/change_meta.hpp"
#include "couch/row.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bridge {

// Why a row is not published. Skipped rows are still checkpointed past (a
// deliberate rule, DESIGN §3) and must be counted by the caller per reason.
enum class skip_reason { none, design_doc, missing_doc_type };

// "none", "design_doc", "missing_doc_type" (stable: used as a metric label).
std::string_view to_string(skip_reason r) noexcept;

struct routing_options {
    // Replaces the "anything else" fallback (`meta` in the commcare profile).
    std::string default_topic = "meta";
    // Publish design documents (to the topic their doc_type routes to, i.e.
    // normally the default topic) instead of skipping them.
    bool route_design_docs = false;
    // Publish documents without a doc_type to the default topic instead of
    // skipping them.
    bool route_missing_doc_type = false;
};

// Kafka's rule for topic names: 1..249 characters of [a-zA-Z0-9._-], and
// neither "." nor "..". Returns an empty string when `topic` is legal, else
// the reason (for error messages).
std::string topic_name_problem(std::string_view topic);

// Maps a change to the Kafka topic it is published to.
//
// Decision order for route():
//  1. A design document (id starting with "_design/") is skipped
//     (design_doc) unless route_design_docs; when routed, it goes where its
//     doc_type (normally none: the default topic) sends it.
//  2. A row without a document_type: a deletion (CouchDB tombstone,
//     `{_id,_rev,_deleted:true}`) goes to the default topic — subscribers
//     must learn about deletions, and HQ routes a doc_type of None there
//     too; anything else is skipped (missing_doc_type) unless
//     route_missing_doc_type, which sends it to the default topic.
//  3. Otherwise the mode's table:
//     - commcare: CommCare HQ's get_topic_for_doc_type() for couch sources:
//       case / form / domain / commcare-user / web-user / group /
//       synclog-sql / app / location doc types (see routing.cpp for the
//       exact lists), a doc_type that is itself one of HQ's topic names
//       goes to that topic, anything else to the default topic.
//     - prefix:<p>: topic = p + doc_type, with every byte outside
//       [a-zA-Z0-9._-] replaced by '_' and the result cut to 249 bytes
//       (Kafka's limits; a sanitized doc_type is logged once and counted in
//       stats()). Topics are built once per distinct doc_type and cached
//       under a reader/writer lock (shared lock on the hot path, no
//       allocation once cached). The cache holds at most
//       prefix_cache_limit doc types; beyond that (a database producing
//       unbounded doc types would also create unbounded Kafka topics) new
//       doc types go to the default topic, logged and counted.
//     - file: the file's routes; unknown doc types to the default topic.
//
// Thread safety: a router is immutable after from_spec() except for the
// prefix cache, which is internally synchronized; route() may be called
// concurrently from any number of threads. Lifetime: decision::topic points
// into the router and is valid until the router is destroyed (moving the
// router keeps it valid: the state lives behind a stable pointer).
class router {
public:
    static constexpr std::size_t prefix_cache_limit = 10000;

    // spec is one of:
    //   "commcare"     the built-in CommCare HQ profile
    //   "prefix:<p>"   topic = p + doc_type (p itself must be legal in a topic name)
    //   anything else  the path of a JSON routing file:
    //     {
    //       "routes": { "<doc_type>": "<topic>", ... },   // required, may be empty
    //       "default": "<topic>"                          // optional
    //     }
    //   Keys are exact, case-sensitive doc_type values. "default" replaces
    //   options.default_topic when present (the file is the more specific
    //   configuration). No other top-level keys are accepted (a typo must
    //   not silently route everything to the default topic), every topic
    //   must be a legal Kafka topic name, every value a string, doc_types
    //   non-empty and not repeated.
    // Throws std::invalid_argument with a message naming the spec, the file
    // and the entry at fault (e.g. `routes."CommCareCase"`); never logs
    // credentials (specs hold none).
    static router from_spec(std::string const& spec, routing_options options);

    router(router&&) noexcept;
    router& operator=(router&&) noexcept;
    ~router();

    struct decision {
        std::string_view topic;                     // empty when skipped
        skip_reason skipped = skip_reason::none;
    };

    // Hot path: no allocation (except the first time a doc_type is seen in
    // prefix mode), never throws except std::bad_alloc in that case.
    decision route(couch::row const& row, change_meta const& meta) const;

    // Every topic route() can return as of now, sorted and unique (for
    // --create-topics). In prefix mode only the default topic and the
    // doc types seen so far are known: the others need the broker's
    // auto-creation or an operator.
    std::vector<std::string> known_topics() const;

    std::string_view default_topic() const noexcept;

    // "commcare", "prefix:<p>" or "file:<path>", for logs and /status.
    std::string const& description() const noexcept;

    struct stats_snapshot {
        std::uint64_t sanitized_doc_types = 0; // distinct doc types whose prefix topic needed sanitizing
        std::uint64_t prefix_overflow_routes = 0; // rows sent to the default topic because the cache is full
    };
    stats_snapshot stats() const noexcept;

private:
    struct impl;
    explicit router(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

} // namespace bridge
