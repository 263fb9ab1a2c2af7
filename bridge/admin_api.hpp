#pragma once

#include <functional>
#include <string>

#include <string>

namespace metrics {
class http_server;
}

namespace bridge {

class fleet;
class group_commands;

// Group mode: how the admin API answers for the whole group.
struct admin_group {
    // Every change goes through the command topic (see group_commands).
    group_commands* commands = nullptr;
    // GET /databases: the owner of a database this instance does not own
    // ("" when unknown). Called once per listed database, after
    // `refresh_owners` (which may block up to a few seconds).
    std::function<void()> refresh_owners;
    std::function<std::string(std::string const&)> owner_of;
};

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
// compared in constant time. Register before the server starts; `f` (and
// what `group` refers to) must outlive the server.
//
// Group mode (`group` given): GET /databases shows every database's owner,
// and every change is written to the group's command topic; the answer is
// the outcome on this instance for a desired state (follow, remove, pause,
// resume), the owner's for a start position (since, rewind), or 202 when
// the owner did not answer within the timeout (it applies it when it reads
// it).
void register_admin_api(metrics::http_server& server, fleet& f, std::string token, admin_group group = {});

// Constant-time comparison of two secrets (the time depends only on the
// length of `presented`).
bool secrets_equal(std::string const& expected, std::string const& presented);

} // namespace bridge
