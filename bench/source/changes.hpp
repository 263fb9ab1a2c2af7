#pragma once

// `GET /{db}/_changes` of bench-source: feed=normal|longpoll|continuous with
// since, limit, include_docs, heartbeat, timeout and seq_interval, framed as
// bench-source frames it (large chunks) or as CouchDB 3.4.3 does
// (--couchdb-like; see main.cpp's header comment), paced by --row-rate.

#include "bench/source/http.hpp"
#include "bench/source/server_state.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <string_view>

namespace bench_source {

// Serves one _changes request of database `db`. Returns false when the
// connection must close.
boost::asio::awaitable<bool> serve_changes(boost::asio::ip::tcp::socket& sock, server_state& st, request const& req,
                                           std::size_t db, std::string_view query);

} // namespace bench_source
