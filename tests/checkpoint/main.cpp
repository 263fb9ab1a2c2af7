#define BOOST_TEST_MODULE checkpoint
#include <boost/test/unit_test.hpp>

#include "tests/support/test_env.hpp"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace {

// Every test makes its stores under test_support::make_temp_dir(), which
// honours TMPDIR: point TMPDIR at one scratch dir per run and remove it at
// the end, so that runs leave no RocksDB directories behind.
struct scratch_tmpdir {
    scratch_tmpdir() {
        dir_ = test_support::make_temp_dir("ckpt-tests");
        if (char const* old = std::getenv("TMPDIR")) {
            old_ = old;
            had_old_ = true;
        }
        ::setenv("TMPDIR", dir_.c_str(), 1);
    }
    ~scratch_tmpdir() {
        if (had_old_) {
            ::setenv("TMPDIR", old_.c_str(), 1);
        } else {
            ::unsetenv("TMPDIR");
        }
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec); // best effort: a leftover temp dir is harmless
    }
    std::string dir_;
    std::string old_;
    bool had_old_ = false;
};

} // namespace

BOOST_TEST_GLOBAL_FIXTURE(scratch_tmpdir);
