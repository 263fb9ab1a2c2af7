#pragma once

// The bridge's read-only HTTP endpoints: /healthz, /readyz and /status.

#include "bridge/config.hpp"

#include <atomic>
#include <functional>
#include <string>

namespace checkpoint {
class flusher;
}
namespace couch {
class source;
}
namespace kafka {
class producer;
}
namespace metrics {
class http_server;
}

namespace bridge {

class discovery;
class fleet;
class group_ownership;
class group_transactions;

// What the endpoints read. Null pointers are parts that do not exist in this
// configuration. `starting`: a reason the bridge is not following yet
// (e.g. waiting for the Kafka cluster id), "" once it is; /readyz answers
// 503 with it and /status shows it. Everything must outlive the server.
struct status_sources {
    config const& cfg;
    fleet const& databases;
    checkpoint::flusher const& flusher;
    couch::source const& source;
    kafka::producer const& producer;
    group_ownership const* group = nullptr;
    group_transactions const* transactions = nullptr;
    discovery const* finder = nullptr;
    std::function<std::string()> starting = {};
};

// Registers /healthz (always 200 while the process serves HTTP), /readyz
// (200 once Kafka is reachable, every database is ready and checkpoints are
// written; 503 with the reasons otherwise) and /status (JSON). Call before
// the server starts.
void register_status_endpoints(metrics::http_server& http, status_sources const& s);

} // namespace bridge
