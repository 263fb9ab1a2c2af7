#include "tests/support/test_env.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <atomic>

#include <unistd.h>

namespace test_support {

namespace {

std::string state_dir() {
    if (char const* s = std::getenv("CKB_TEST_STATE_DIR")) {
        return s;
    }
    return CKB_TEST_STATE_DIR;
}

// Reads KEY=VALUE from <state>/<file>.
std::string from_state_file(std::string const& file, std::string const& key) {
    auto path = state_dir() + "/" + file;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(key + "=", 0) == 0) {
            return line.substr(key.size() + 1);
        }
    }
    return {};
}

std::string server(char const* env, char const* file, char const* fixture) {
    if (char const* v = std::getenv(env); v && *v) {
        return v;
    }
    auto v = from_state_file(file, env);
    if (v.empty()) {
        throw std::runtime_error(std::string("no test server: set ") + env + " or run through ctest so that the " +
                                 fixture + " fixture starts one (" + state_dir() + "/" + file + " is missing)");
    }
    return v;
}

} // namespace

std::string couch_url() { return server("CKB_TEST_COUCH_URL", "couch.env", "couch_server"); }
std::string kafka_brokers() { return server("CKB_TEST_KAFKA_BROKERS", "kafka.env", "kafka_broker"); }
std::string data_dir() { return CKB_TEST_DATA_DIR; }
std::string secure_kafka(std::string const& key) {
    return server(key.c_str(), "kafka-secure.env", "kafka_secure_broker");
}

std::string read_file(std::string const& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read test file " + path);
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string make_temp_dir(std::string const& prefix) {
    auto base = std::filesystem::temp_directory_path();
    auto dir = base / unique_name(prefix);
    std::filesystem::create_directories(dir);
    return dir.string();
}

std::string unique_name(std::string const& prefix) {
    static std::atomic<int> counter{0};
    static std::string const salt = [] {
        std::random_device rd;
        std::ostringstream s;
        s << std::hex << (rd() & 0xffffffu);
        return s.str();
    }();
    std::ostringstream s;
    s << prefix << '-' << ::getpid() << '-' << counter++ << '-' << salt;
    return s.str();
}

} // namespace test_support
