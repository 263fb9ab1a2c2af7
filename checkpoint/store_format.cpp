// The checkpoint store's record format: the binary key of a (source,
// database) position and its JSON value, shared by the RocksDB store, the
// Kafka checkpoint topic and the `checkpoints` command.
#include "checkpoint/store.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <stdexcept>

namespace checkpoint {

std::string encode_key(key const& k) {
    std::string out;
    out.reserve(5 + k.source.size() + k.database.size());
    out += position_prefix;
    auto n = static_cast<std::uint32_t>(k.source.size());
    for (int shift = 24; shift >= 0; shift -= 8) {
        out += static_cast<char>((n >> shift) & 0xffu);
    }
    out += k.source;
    out += k.database;
    return out;
}

std::optional<key> decode_key(std::string_view raw) {
    if (raw.size() < 5 || raw[0] != position_prefix) {
        return std::nullopt;
    }
    std::uint32_t n = 0;
    for (std::size_t i = 1; i < 5; ++i) {
        n = (n << 8) | static_cast<unsigned char>(raw[i]);
    }
    if (raw.size() - 5 < n) {
        return std::nullopt;
    }
    return key{std::string(raw.substr(5, n)), std::string(raw.substr(5 + n))};
}

bool is_valid_seq_json(std::string_view seq_json) {
    boost::system::error_code ec;
    auto v = boost::json::parse(seq_json, ec);
    if (ec) {
        return false;
    }
    if (v.is_string()) {
        return !v.get_string().empty();
    }
    return v.is_number();
}

std::string encode_position(position const& p) {
    boost::json::object o;
    o["seq_json"] = p.seq_json;
    o["written_unix_ms"] = p.written_unix_ms;
    o["bridge_version"] = p.bridge_version;
    return boost::json::serialize(o);
}

position decode_position(std::string_view raw) {
    boost::system::error_code ec;
    auto v = boost::json::parse(raw, ec);
    if (ec) {
        throw std::invalid_argument("stored checkpoint value is not JSON (" + ec.message() + ")");
    }
    auto const* o = v.if_object();
    if (o == nullptr) {
        throw std::invalid_argument("stored checkpoint value is not a JSON object");
    }
    position p;
    auto const* seq = o->if_contains("seq_json");
    if (seq == nullptr || !seq->is_string()) {
        throw std::invalid_argument("stored checkpoint value has no string field seq_json");
    }
    p.seq_json = std::string(seq->get_string());
    if (!is_valid_seq_json(p.seq_json)) {
        throw std::invalid_argument("stored checkpoint seq is not a JSON string or number: " + p.seq_json);
    }
    auto const* written = o->if_contains("written_unix_ms");
    if (written == nullptr || !written->is_int64()) {
        // (A uint64 here is beyond any real time: garbage too.)
        throw std::invalid_argument("stored checkpoint value has no integer field written_unix_ms");
    }
    p.written_unix_ms = written->get_int64();
    auto const* version = o->if_contains("bridge_version");
    if (version == nullptr || !version->is_string()) {
        throw std::invalid_argument("stored checkpoint value has no string field bridge_version");
    }
    p.bridge_version = std::string(version->get_string());
    return p;
}

} // namespace checkpoint
