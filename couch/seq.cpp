#include "couch/seq.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <stdexcept>

namespace couch {

seq seq::from_json(boost::json::value const& v) {
    if (!v.is_string() && !v.is_number()) {
        throw std::invalid_argument("a CouchDB seq must be a JSON string or number, got " +
                                    boost::json::serialize(v));
    }
    return seq(boost::json::serialize(v));
}

std::string seq::to_query_param() const {
    if (raw_.size() >= 2 && raw_.front() == '"') {
        // Unescape through the JSON parser rather than by hand: seqs are
        // base64-ish today, but nothing promises they stay free of escapes.
        return std::string(boost::json::parse(raw_).as_string());
    }
    return raw_;
}

std::string since::to_query_param() const {
    switch (where) {
    case kind::beginning:
        return "0";
    case kind::now:
        return "now";
    case kind::at:
        return at_seq.to_query_param();
    }
    return "0";
}

} // namespace couch
