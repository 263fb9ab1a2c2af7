#include "bridge/exit_watchdog.hpp"

#include <spdlog/spdlog.h>

#include <unistd.h>

namespace bridge {

exit_watchdog::~exit_watchdog() { disarm(); }

void exit_watchdog::arm(std::chrono::steady_clock::time_point deadline) {
    std::lock_guard lock(mutex_);
    if (countdown_.joinable() || disarmed_) {
        return;
    }
    countdown_ = std::thread([this, deadline] {
        std::unique_lock waiting(mutex_);
        if (changed_.wait_until(waiting, deadline, [this] { return disarmed_; })) {
            return;
        }
        spdlog::error("the stop did not end in time (still waiting for Kafka as a client closes?): exiting now "
                      "(exit {})",
                      code_);
        spdlog::default_logger()->flush();
        ::_exit(code_);
    });
}

void exit_watchdog::set_code(int code) {
    std::lock_guard lock(mutex_);
    code_ = code;
}

void exit_watchdog::disarm() {
    {
        std::lock_guard lock(mutex_);
        disarmed_ = true;
    }
    changed_.notify_all();
    if (countdown_.joinable()) {
        countdown_.join();
    }
}

} // namespace bridge
