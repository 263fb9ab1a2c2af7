#pragma once

#include "checkpoint/flusher.hpp"

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace checkpoint {

// The `checkpoints` admin subcommand, run against a STOPPED bridge's store
// at `dir`. `args` are the words after `checkpoints`:
//   list   [--source S]                       database, seq, age, written time, source
//   set    --db NAME --seq JSON [--source S]  rewind or move one database
//   delete --db NAME [--source S]             forget one database (it starts per --initial-since)
//   help
// --source may be left out when the store holds exactly one source. `--seq`
// takes the JSON text of the seq: `'"4-g1AAAA..."'` (with the quotes) or `42`.
//
// Refuses (exit 1, clear message on `err`) when a running bridge holds the
// store. Exit codes: 0 done, 1 failure (locked, not found, store error),
// 2 usage error. Output goes to `out`, diagnostics to `err`. Never throws for
// user or store errors. `now` is the wall clock (ages, written time).
int run_checkpoints_command(std::string const& dir, std::vector<std::string> const& args, std::ostream& out,
                            std::ostream& err, clock_fn now);

// The same commands on any store (the Kafka topic store): `open` opens it
// and may throw (the message is printed, exit 1).
int run_checkpoints_command(std::function<std::unique_ptr<positions>()> const& open,
                            std::vector<std::string> const& args, std::ostream& out, std::ostream& err, clock_fn now);

// Same, with the system clock.
int run_checkpoints_command(std::string const& dir, std::vector<std::string> const& args, std::ostream& out,
                            std::ostream& err);

// "45s", "3m04s", "2h05m", "3d04h": an age for people. Negative ages (clock
// skew) print as "0s".
std::string format_age(std::chrono::milliseconds age);

} // namespace checkpoint
