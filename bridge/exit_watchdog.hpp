#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace bridge {

// The last resort of a stop: once armed, ends the process (_exit) at the
// deadline with the exit code set last, unless disarmed first. Every wait of
// a stop is bounded on its own; this bounds what is not ours to bound
// (a librdkafka handle that keeps waiting for unreachable brokers as it is
// destroyed). Safe for the checkpoints: they only ever cover acknowledged
// records. Thread-safe; the destructor disarms.
class exit_watchdog {
public:
    exit_watchdog() = default;
    ~exit_watchdog();
    exit_watchdog(exit_watchdog const&) = delete;
    exit_watchdog& operator=(exit_watchdog const&) = delete;

    // Starts the countdown (once; later calls are ignored).
    void arm(std::chrono::steady_clock::time_point deadline);
    // The exit code used if it fires (1 until set).
    void set_code(int code);
    // Stops the countdown and waits for its thread.
    void disarm();

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    bool disarmed_ = false;
    int code_ = 1;
    std::thread countdown_;
};

} // namespace bridge
