#pragma once

#include "bridge/config.hpp"

namespace couch {
struct client_config;
}

namespace bridge {

// Runs the bridge described by `cfg` until SIGINT/SIGTERM: one pipeline per
// database, one producer, one checkpoint flusher, the HTTP server.
// Startup problems (an unusable checkpoint dir, a bad routing file, a broker
// property librdkafka rejects, a port in use) are reported on the log and
// give exit code 2. A clean shutdown (every in-flight record acknowledged
// and checkpoints flushed) gives 0; a shutdown whose final checkpoint flush
// failed or that timed out waiting for acknowledgements gives 1 (still safe:
// at-least-once).
int run_bridge(config const& cfg);

// The checkpoint key's source for this configuration: --source-name, else
// the CouchDB URL without credentials and without a trailing slash.
std::string checkpoint_source(config const& cfg);

// The CouchDB client of this configuration: URL, credentials, auth mode, TLS.
couch::client_config couch_client_config(config const& cfg);

} // namespace bridge
