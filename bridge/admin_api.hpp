#pragma once

#include <string>

namespace metrics {
class http_server;
}

namespace bridge {

class fleet;

// The runtime admin API on the operations server:
//   GET    /databases                       every database: state, seq, checkpoint, owner
//   PUT    /databases/{db}?since=0|now|SEQ  follow it now (since: optional; an optional JSON body
//                                           of per-database options, see fleet::follow)
//   DELETE /databases/{db}                  stop following, keep the checkpoint
//   POST   /databases/{db}/pause|resume
//   POST   /databases/{db}/rewind?since=0|now|SEQ
// {db} is percent-encoded (a/b -> a%2Fb); SEQ is the seq's JSON text,
// percent-encoded. Answers are JSON; bad input is a 4xx that changes nothing.
//
// Without `token` it answers only clients on loopback (403 otherwise); with
// one, every call needs `Authorization: Bearer <token>` (401 otherwise),
// compared in constant time. Register before the server starts; `f` must
// outlive the server.
void register_admin_api(metrics::http_server& server, fleet& f, std::string token);

// Constant-time comparison of two secrets (the time depends only on the
// length of `presented`).
bool secrets_equal(std::string const& expected, std::string const& presented);

} // namespace bridge
