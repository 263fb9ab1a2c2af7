#pragma once

// bench-source's fleet-wide endpoints: `_all_dbs` (paged as CouchDB pages
// it) and `_db_updates` (the events of POST /_bench/write).

#include "bench/source/http.hpp"
#include "bench/source/live.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <optional>
#include <string>
#include <vector>

namespace bench_source {

// The body of `GET /_all_dbs` over `sorted` (the names in byte order):
// `start_key`/`startkey` and `end_key`/`endkey` (JSON strings, inclusive),
// `skip` and `limit`, as CouchDB answers them. nullopt: a malformed
// parameter (`error` says which).
std::optional<std::string> all_dbs_body(std::vector<std::string> const& sorted, query_map const& q,
                                        std::string& error);

// `GET /_db_updates`: feed=normal (the events after `since`) or continuous
// (those, then each new one as it happens, `\n` every `heartbeat` ms; without
// a heartbeat the feed ends `timeout` ms after its last event). since: `0`,
// `now` or a seq this server gave. Seqs look like CouchDB's (`"12-g1AAAA…"`).
// Returns false when the connection must close.
boost::asio::awaitable<bool> serve_db_updates(boost::asio::ip::tcp::socket& sock, request const& req,
                                              query_map const& q, live_state& live,
                                              std::vector<std::string> const& names,
                                              std::atomic<std::uint64_t>& bytes);

} // namespace bench_source
