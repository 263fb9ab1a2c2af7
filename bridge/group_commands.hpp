#pragma once

#include "bridge/config.hpp"
#include "bridge/fleet.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace metrics {
class registry;
}

namespace bridge {

// A change the admin API asked for, for one database.
struct admin_command {
    enum class op { follow, remove, pause, resume, rewind };
    op what = op::follow;
    std::string database;
    std::string since;   // follow and rewind: "" (none), "0", "now" or a seq's JSON text
    std::string options; // follow: "" or a JSON object of per-database settings
};

struct group_commands_config {
    std::string bootstrap_servers;
    std::vector<std::pair<std::string, std::string>> properties;
    std::string topic;    // compacted, one partition
    std::string instance; // who writes (logged, in the records)
    // How long the admin API waits for a command's outcome.
    std::chrono::milliseconds answer_timeout{5000};
};

// Group mode: the admin API of any instance answers for the whole group.
// Every change (PUT, DELETE, pause, resume, rewind) is written as a command
// record to a compacted topic that every instance follows from its
// beginning:
//   - the desired state (followed with options, removed, paused, resumed)
//     is applied by every instance to its own fleet, so a database that
//     moves to another instance keeps it; only the owner runs a database;
//   - a start position (PUT with since, rewind) is applied once, by the
//     owner, which then writes an acknowledgement with the outcome; an
//     instance that becomes the owner of a database applies a start
//     position not acknowledged yet (so one sent while no instance owned
//     it, or whose owner died before applying it, still takes effect).
// Keys: "cmd/<db>" (the latest command) and "ack/<db>" (the latest start
// position applied): compaction keeps the latest of each, so the topic stays
// as small as the set of databases.
//
// A start position applied by an owner that dies before its
// acknowledgement is applied again by the next owner (at-least-once).
//
// Thread safety: every member may be called from any thread.
class group_commands {
public:
    // `owns(db)`: whether this instance owns `db` now.
    group_commands(group_commands_config cfg, fleet& databases, std::function<bool(std::string const&)> owns,
                   metrics::registry& registry);
    ~group_commands();
    group_commands(group_commands const&) = delete;
    group_commands& operator=(group_commands const&) = delete;

    // Reads the topic to its end (applying the desired states), then follows
    // it on a thread of its own. Throws std::runtime_error when the topic
    // cannot be read.
    void start();

    // Writes `c` and waits (up to the answer timeout) for its outcome: the
    // local fleet's for a desired state, the owner's acknowledgement for a
    // start position. 202 when the owner has not answered in time (it
    // applies the command when it reads it), 503 when the command could not
    // be written. Blocks the calling thread.
    fleet::outcome submit(admin_command const& c);

    // The ownership changed: applies the start positions pending for the
    // databases this instance owns now.
    void reassess();

private:
    struct record;
    struct impl;
    void apply(record const& r, bool replaying);
    void apply_start_locked(record const& r);

    group_commands_config cfg_;
    fleet& fleet_;
    std::function<bool(std::string const&)> owns_;
    std::unique_ptr<impl> impl_;
};

// The command topic of a configuration: --command-topic, else
// "couch-bridge-commands.<group>".
std::string command_topic(config const& cfg);

} // namespace bridge
