#pragma once

#include <boost/json/value.hpp>

#include <string>
#include <string_view>

namespace couch {

// An opaque CouchDB update sequence, kept byte-exact as the JSON text the
// server sent: `"4-g1AAAA..."` (CouchDB >= 2, a JSON string) or `42`
// (CouchDB 1.x and PouchDB servers, a JSON number). It is never parsed,
// compared or incremented; the only things one does with a seq are store it
// and send it back as `since=`.
class seq {
public:
    seq() = default;

    // `json_text` must be the raw JSON text of the seq value, e.g. `"1-abc"`
    // with the quotes, or `7`. Not validated here: from_json() validates.
    static seq from_raw_json(std::string json_text) { return seq(std::move(json_text)); }

    // From a parsed JSON value (string or number); any other kind throws
    // std::invalid_argument.
    static seq from_json(boost::json::value const& v);

    // The value to send as the `since` query parameter (not yet URL-encoded):
    // a string seq without its quotes, a number as written.
    std::string to_query_param() const;

    // The exact JSON text as received (for checkpoints and headers).
    std::string const& raw_json() const noexcept { return raw_; }

    bool empty() const noexcept { return raw_.empty(); }

    friend bool operator==(seq const&, seq const&) = default;

private:
    explicit seq(std::string raw) : raw_(std::move(raw)) {}
    std::string raw_;
};

// The `since` to start a feed from: a stored seq, the beginning, or now.
struct since {
    enum class kind { beginning, now, at };
    kind where = kind::beginning;
    seq at_seq;

    static since beginning() { return {}; }
    static since now() { return {kind::now, {}}; }
    static since from(seq s) { return {kind::at, std::move(s)}; }
    std::string to_query_param() const;
};

} // namespace couch
