#pragma once

#include "couch/shard_seq.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

// The bytes under a clustered seq: base64url, Erlang's external term format
// and zlib. Only couch/shard_seq.cpp uses this; it is split out so that each
// file has one concern (the wire format here, the meaning there).
namespace couch::detail {

// Base64url as CouchDB writes it (no padding; '=' padding tolerated).
// nullopt on any other character or an impossible length.
std::optional<std::string> base64url_decode(std::string_view s);

// Reads `bytes` (131, then either 80 + a 4-byte size + a zlib stream, or the
// term itself) as the shard list subset described in couch/shard_seq.hpp,
// within `limits`. Returns nullptr and fills `shards` and `compressed` on
// success, else a short static reason. Never throws on bad input.
char const* read_shard_term(std::string_view bytes, shard_seq_limits const& limits, std::vector<shard_position>& shards,
                            bool& compressed);

} // namespace couch::detail
