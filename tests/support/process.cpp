#include "tests/support/process.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace test_support {

child_process::child_process(std::string const& binary, std::vector<std::string> const& args,
                             std::string const& log_path,
                             std::vector<std::pair<std::string, std::string>> const& extra_env) {
    std::vector<std::string> argv_store;
    argv_store.push_back(binary);
    argv_store.insert(argv_store.end(), args.begin(), args.end());
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) {
        throw std::runtime_error("cannot open " + log_path + ": " + std::strerror(errno));
    }
    pid_ = ::fork();
    if (pid_ < 0) {
        ::close(fd);
        throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
    }
    if (pid_ == 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            ::dup2(devnull, 0);
        }
        for (auto const& [k, v] : extra_env) {
            ::setenv(k.c_str(), v.c_str(), 1);
        }
        std::vector<char*> argv;
        for (auto& a : argv_store) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        ::execv(binary.c_str(), argv.data());
        ::_exit(127);
    }
    ::close(fd);
}

child_process::~child_process() {
    if (running()) {
        ::kill(pid_, SIGKILL);
        wait_for_exit(std::chrono::seconds(10));
    }
}

void child_process::signal(int sig) {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, sig);
    }
}

std::optional<int> child_process::wait_for_exit(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
        int st = 0;
        pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return std::nullopt;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return status_;
}

bool child_process::running() {
    if (pid_ <= 0 || status_) {
        return false;
    }
    return !wait_for_exit(std::chrono::milliseconds(0)).has_value();
}

long child_process::peak_rss_kib() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmHWM:", 0) == 0) {
            return std::stol(line.substr(6));
        }
    }
    return 0;
}

unsigned short free_port() {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(s);
    return ntohs(addr.sin_port);
}

} // namespace test_support
