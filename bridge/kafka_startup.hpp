#pragma once

// The Kafka side of a bridge start (bridge/app_kafka.cpp): topics created,
// and with --checkpoint-store kafka the checkpoint topic read. With the
// Kafka store the start waits for the brokers as long as it takes, and
// serves /healthz, /readyz, /status and /metrics meanwhile (a supervisor
// must see a live process during a Kafka outage, not a start that fails
// every 30 s).

#include "bridge/config.hpp"

#include <functional>
#include <memory>
#include <string>

namespace checkpoint {
class kafka_store;
class store;
} // namespace checkpoint
namespace kafka {
class embedded_cluster;
class presence;
class producer;
} // namespace kafka
namespace metrics {
class registry;
}

namespace bridge {

class router;

struct kafka_start {
    std::unique_ptr<checkpoint::kafka_store> positions; // --checkpoint-store kafka
    std::unique_ptr<kafka::presence> running_mark;      // ... and the group that says it is in use
};

// One attempt: the routed topics (--create-topics), then with the Kafka store
// the checkpoint topic (open_kafka_checkpoints), the group's topics and the
// running mark. Throws with an operator message. `transactions_begun`: see
// open_kafka_checkpoints (false before the first attempt).
kafka_start prepare_kafka(config const& cfg, router const& routes, kafka::producer& producer,
                          kafka::embedded_cluster* embedded, std::string const& bootstrap_servers,
                          checkpoint::store& local, bool& transactions_begun);

// Runs `attempt` until it succeeds. While it runs, a temporary HTTP server on
// --http-listen answers /healthz 200, /readyz 503 and /status with what the
// start waits for, and /metrics with couch_bridge_startup_waiting 1. A failed
// attempt is retried (after a log line) while `reachable` says the brokers
// cannot be reached; any other failure is rethrown (exit 2: a configuration
// or broker error that waiting does not cure). SIGINT/SIGTERM end the wait:
// returns false then, and the attempt still running is abandoned (the
// process exits; nothing was written). Returns the port the server had, so
// the bridge's own server binds the same one.
struct startup_wait_result {
    bool go_on = false;
    std::string listen; // --http-listen with the port actually bound
    kafka_start started;
};
startup_wait_result wait_for_kafka_start(config const& cfg, metrics::registry& registry,
                                         std::function<kafka_start()> const& attempt,
                                         std::function<bool()> const& reachable);

} // namespace bridge
