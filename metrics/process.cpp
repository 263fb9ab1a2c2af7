#include "metrics/process.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <limits>
#include <memory>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace metrics {

namespace detail {

namespace {

// Boot time in Unix seconds, from the `btime` line of /proc/stat.
double boot_time_seconds() {
    std::ifstream in("/proc/stat");
    std::string key;
    while (in >> key) {
        if (key == "btime") {
            double v = -1;
            in >> v;
            return in ? v : -1;
        }
        in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    }
    return -1;
}

} // namespace

process_snapshot read_process_snapshot() noexcept {
    process_snapshot s;
    try {
        std::ifstream in("/proc/self/stat");
        std::string line;
        if (std::getline(in, line)) {
            // Field 2 (comm) is in parentheses and may contain spaces or ')':
            // parse from the last ')'.
            auto close = line.rfind(')');
            if (close != std::string::npos) {
                std::istringstream fields(line.substr(close + 1));
                // Fields from 3 (state) on; we want 14 utime, 15 stime,
                // 22 starttime, 23 vsize, 24 rss.
                std::string f;
                std::vector<std::string> v;
                while (fields >> f) {
                    v.push_back(f);
                }
                auto field = [&](int n) { return std::stod(v.at(static_cast<std::size_t>(n - 3))); };
                if (v.size() >= 22) {
                    double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
                    double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
                    if (ticks > 0) {
                        s.cpu_seconds = (field(14) + field(15)) / ticks;
                        double boot = boot_time_seconds();
                        if (boot >= 0) {
                            s.start_time_seconds = boot + field(22) / ticks;
                        }
                    }
                    s.virtual_bytes = field(23);
                    if (page > 0) {
                        s.resident_bytes = field(24) * page;
                    }
                }
            }
        }
    } catch (std::exception const&) {
        // Malformed /proc content: leave the fields unset (negative).
    }
    std::error_code ec;
    std::filesystem::directory_iterator it("/proc/self/fd", ec);
    if (!ec) {
        double n = 0;
        for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
            if (ec) {
                break;
            }
            ++n;
        }
        if (!ec) {
            // The iterator's own descriptor is counted too, like the Go and
            // Python clients do; it is one fd and keeps the code simple.
            s.open_fds = n;
        }
    }
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
        s.max_fds = lim.rlim_cur == RLIM_INFINITY ? -1 : static_cast<double>(lim.rlim_cur);
    }
    return s;
}

} // namespace detail

void register_process_metrics(registry& reg) {
    struct state {
        std::mutex mutex;
        double cpu_reported = 0;
    };
    auto& cpu = reg.add_counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.");
    auto& rss = reg.add_gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
    auto& vsz = reg.add_gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.");
    auto& fds = reg.add_gauge("process_open_fds", "Number of open file descriptors.");
    auto& max_fds = reg.add_gauge("process_max_fds", "Maximum number of open file descriptors.");
    auto& start = reg.add_gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.");
    auto& errors = reg.add_counter("couch_bridge_process_metrics_errors_total",
                                   "Collections of process metrics where some /proc value could not be read.");
    if (cpu.value() != 0 || start.value() != 0) {
        throw std::logic_error("register_process_metrics called twice on one registry");
    }
    auto st = std::make_shared<state>();
    auto collect = [st, &cpu, &rss, &vsz, &fds, &max_fds, &start, &errors] {
        auto s = detail::read_process_snapshot();
        bool failed = false;
        auto put = [&failed](gauge& g, double v) {
            if (v >= 0) {
                g.set(v);
            } else {
                failed = true;
            }
        };
        {
            // The counter only has inc(): add what CPU time grew by since the
            // last collection. The mutex keeps two concurrent scrapes from
            // adding the same delta twice.
            std::lock_guard lock(st->mutex);
            if (s.cpu_seconds >= 0) {
                if (s.cpu_seconds > st->cpu_reported) {
                    cpu.inc(s.cpu_seconds - st->cpu_reported);
                    st->cpu_reported = s.cpu_seconds;
                }
            } else {
                failed = true;
            }
        }
        put(rss, s.resident_bytes);
        put(vsz, s.virtual_bytes);
        put(fds, s.open_fds);
        put(start, s.start_time_seconds);
        if (s.max_fds >= 0) {
            max_fds.set(s.max_fds);
        } // unlimited: leave at 0 rather than count an error
        if (failed) {
            errors.inc();
        }
    };
    collect(); // sets the start time now, so a second registration is detected
    reg.on_collect(std::move(collect));
}

void register_build_info(registry& reg, labels const& info) {
    reg.add_gauge("couch_bridge_build_info", "Build information of the running bridge (value is always 1).", info)
        .set(1);
}

} // namespace metrics
