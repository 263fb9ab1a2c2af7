#pragma once

#include "metrics/registry.hpp"

namespace metrics {

// Registers the standard process metrics of the Prometheus client libraries,
// refreshed from /proc/self at every expose():
//   process_cpu_seconds_total, process_resident_memory_bytes,
//   process_virtual_memory_bytes, process_open_fds, process_max_fds,
//   process_start_time_seconds (Unix time).
// Call once per registry (a second call throws std::logic_error, as a second
// collector would double-count CPU time). Thread-safe like the registry.
// Errors: a /proc file that cannot be read (not Linux, a hardened /proc)
// leaves that metric at its last value and bumps
// couch_bridge_process_metrics_errors_total; it never throws from expose().
void register_process_metrics(registry& reg);

// Registers couch_bridge_build_info{<info>} = 1, the conventional way to put
// versions on a dashboard (join on it). `info` are label pairs such as
// {{"version", "0.1.0"}, {"librdkafka", "2.0.2"}, {"rocksdb", "7.8.3"}}.
// Throws std::logic_error for invalid label names, like the registry.
void register_build_info(registry& reg, labels const& info);

namespace detail {

// One snapshot of /proc/self, exposed for tests. Fields the reader could not
// get are left negative.
struct process_snapshot {
    double cpu_seconds = -1;
    double resident_bytes = -1;
    double virtual_bytes = -1;
    double open_fds = -1;
    double max_fds = -1;
    double start_time_seconds = -1;
};

// Reads /proc/self/stat, /proc/stat (boot time), /proc/self/fd and the
// RLIMIT_NOFILE soft limit. Never throws.
process_snapshot read_process_snapshot() noexcept;

} // namespace detail

} // namespace metrics
