#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace test_support {

// A child process (fork + execv) whose stdout and stderr go to a log file.
// The destructor SIGKILLs it if still running, so a failing test leaves no
// process behind.
class child_process {
public:
    child_process(std::string const& binary, std::vector<std::string> const& args, std::string const& log_path,
                  std::vector<std::pair<std::string, std::string>> const& extra_env = {});
    ~child_process();
    child_process(child_process const&) = delete;
    child_process& operator=(child_process const&) = delete;

    pid_t pid() const noexcept { return pid_; }
    void signal(int sig);
    // Waits for exit up to `timeout`; returns the exit status as shell-style
    // code (128+signal for a signal), or nullopt on timeout.
    std::optional<int> wait_for_exit(std::chrono::milliseconds timeout);
    bool running();
    // Peak resident memory (VmHWM) in KiB, 0 if unknown.
    long peak_rss_kib() const;

private:
    pid_t pid_ = -1;
    std::optional<int> status_;
};

// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
unsigned short free_port();

} // namespace test_support
