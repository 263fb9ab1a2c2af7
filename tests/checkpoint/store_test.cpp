#include "checkpoint/store.hpp"

#include "tests/support/test_env.hpp"

#include <rocksdb/db.h>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <csignal>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using checkpoint::key;
using checkpoint::position;
using checkpoint::store_errc;
using checkpoint::store_error;

namespace {

// Runs `fn`, expecting a store_error of `kind` whose message contains every
// fragment; reports the message either way so failures are readable.
template <typename Fn>
void expect_store_error(Fn&& fn, store_errc kind, std::vector<std::string> const& fragments) {
    try {
        fn();
        BOOST_ERROR("expected a store_error");
    } catch (store_error const& e) {
        BOOST_TEST_MESSAGE("store_error: " << e.what());
        BOOST_TEST(static_cast<int>(e.kind()) == static_cast<int>(kind), "kind of: " << e.what());
        for (auto const& f : fragments) {
            BOOST_TEST(std::string(e.what()).find(f) != std::string::npos, "'" << f << "' in: " << e.what());
        }
    }
}

void write_file(fs::path const& p, std::string const& content) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << content;
}

} // namespace

BOOST_AUTO_TEST_SUITE(store)

BOOST_AUTO_TEST_CASE(key_encoding_is_unambiguous) {
    key a{"http://h/a", "b/c"};
    key b{"http://h/a/b", "/c"};
    BOOST_TEST(checkpoint::encode_key(a) != checkpoint::encode_key(b));
    for (auto const& k : {a, b, key{"", ""}, key{std::string("s\0x", 3), std::string("d\0", 2)}}) {
        auto back = checkpoint::decode_key(checkpoint::encode_key(k));
        BOOST_REQUIRE(back.has_value());
        BOOST_TEST(back->source == k.source);
        BOOST_TEST(back->database == k.database);
    }
    BOOST_TEST(!checkpoint::decode_key("x").has_value());
    BOOST_TEST(!checkpoint::decode_key(std::string("p\0\0\0\x09" "abc", 8)).has_value());
}

BOOST_AUTO_TEST_CASE(seq_validation) {
    BOOST_TEST(checkpoint::is_valid_seq_json(R"("4-g1AAAA")"));
    BOOST_TEST(checkpoint::is_valid_seq_json("42"));
    BOOST_TEST(!checkpoint::is_valid_seq_json("4-g1AAAA"));
    BOOST_TEST(!checkpoint::is_valid_seq_json(R"("")"));
    BOOST_TEST(!checkpoint::is_valid_seq_json("[1]"));
    BOOST_TEST(!checkpoint::is_valid_seq_json("null"));
    BOOST_TEST(!checkpoint::is_valid_seq_json(R"("a" x)"));
    BOOST_TEST(!checkpoint::is_valid_seq_json(""));
}

BOOST_AUTO_TEST_CASE(round_trip_is_byte_exact_and_survives_reopen) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    // Escapes must come back exactly as written: never re-serialized.
    std::string const string_seq = R"("4-g1AAAA\u00e9\/x\"y")";
    std::string const int_seq = "17";
    key const k1{"http://couch:5984", "cases"};
    key const k2{"http://couch:5984", "forms"};
    key const other{"http://other:5984", "cases"};
    {
        auto s = checkpoint::store::open(dir);
        BOOST_TEST(!s->get(k1).has_value());
        BOOST_TEST(s->list().empty());
        auto ec = s->write({{k1, position{string_seq, 1700000000123, "0.1.0"}},
                            {k2, position{int_seq, 1700000000456, "0.1.0"}},
                            {other, position{"3", 5, "0.0.9"}}});
        BOOST_TEST(!ec, ec.message());
        auto p = s->get(k1);
        BOOST_REQUIRE(p.has_value());
        BOOST_TEST(p->seq_json == string_seq);
        BOOST_TEST(p->written_unix_ms == 1700000000123);
        BOOST_TEST(p->bridge_version == "0.1.0");
    }
    auto s = checkpoint::store::open(dir);
    auto all = s->list();
    BOOST_REQUIRE(all.size() == 3u);
    BOOST_TEST(all[0].first.source == "http://couch:5984");
    BOOST_TEST(all[0].first.database == "cases");
    BOOST_TEST(all[0].second.seq_json == string_seq);
    BOOST_TEST(all[1].first.database == "forms");
    BOOST_TEST(all[1].second.seq_json == int_seq);
    BOOST_TEST(all[1].second.written_unix_ms == 1700000000456);
    BOOST_TEST(all[2].first.source == "http://other:5984");

    // Overwrite (rewind) and erase.
    BOOST_TEST(!s->write({{k1, position{"\"1-abc\"", 1, "0.1.0"}}}));
    BOOST_TEST(s->get(k1)->seq_json == "\"1-abc\"");
    BOOST_TEST(!s->erase(k2));
    BOOST_TEST(!s->get(k2).has_value());
    BOOST_TEST(!s->erase(k2)); // erasing a missing key is fine
    BOOST_TEST(s->list().size() == 2u);
}

// RocksDB's diagnostics go to the process log: no `LOG` file on the
// checkpoint disk, whose failed append on a full disk aborted the process
// (found by the fault lab, tests/faults).
BOOST_AUTO_TEST_CASE(no_rocksdb_info_log_file_in_the_checkpoint_dir) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    {
        auto s = checkpoint::store::open(dir);
        auto ec = s->write({{key{"http://couch:5984", "cases"}, position{"1", 1, "0.1.0"}}});
        BOOST_TEST(!ec, ec.message());
    }
    for (auto const& entry : std::filesystem::directory_iterator(dir)) {
        auto const name = entry.path().filename().string();
        BOOST_TEST((name != "LOG" && name.rfind("LOG.old", 0) != 0), "unexpected RocksDB info log " << name);
    }
}

BOOST_AUTO_TEST_CASE(invalid_seq_fails_the_whole_batch) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    auto s = checkpoint::store::open(dir);
    key const good{"src", "good"};
    key const bad{"src", "bad"};
    auto ec = s->write({{good, position{"1", 1, "v"}}, {bad, position{"not json", 1, "v"}}});
    BOOST_TEST(ec == checkpoint::make_error_code(store_errc::invalid_value));
    BOOST_TEST(s->last_error_detail().find("bad") != std::string::npos, s->last_error_detail());
    BOOST_TEST(!s->get(good).has_value());
}

BOOST_AUTO_TEST_CASE(second_open_in_this_process_is_locked) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    auto first = checkpoint::store::open(dir);
    expect_store_error([&] { checkpoint::store::open(dir); }, store_errc::locked,
                       {dir, "locked by another running couch-kafka-bridge"});
    first.reset();
    BOOST_CHECK_NO_THROW(checkpoint::store::open(dir)); // released on close
}

BOOST_AUTO_TEST_CASE(lock_held_by_another_process_is_locked) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    checkpoint::store::open(dir).reset(); // creates the files, releases the lock
    // Another process takes the same POSIX record lock RocksDB takes on LOCK.
    // The child only uses async-signal-safe calls, so forking here is safe.
    int ready[2];
    int release[2];
    BOOST_REQUIRE(::pipe(ready) == 0);
    BOOST_REQUIRE(::pipe(release) == 0);
    auto lock_path = (fs::path(dir) / "LOCK").string();
    pid_t child = ::fork();
    BOOST_REQUIRE(child >= 0);
    if (child == 0) {
        int fd = ::open(lock_path.c_str(), O_RDWR);
        struct flock fl {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        char ok = (fd >= 0 && ::fcntl(fd, F_SETLK, &fl) == 0) ? '1' : '0';
        (void)!::write(ready[1], &ok, 1);
        char c;
        (void)!::read(release[0], &c, 1);
        ::_exit(0);
    }
    char ok = '0';
    BOOST_REQUIRE(::read(ready[0], &ok, 1) == 1);
    BOOST_REQUIRE(ok == '1');
    expect_store_error([&] { checkpoint::store::open(dir); }, store_errc::locked,
                       {dir, "locked by another running couch-kafka-bridge"});
    char c = 'x';
    BOOST_REQUIRE(::write(release[1], &c, 1) == 1);
    int status = 0;
    ::waitpid(child, &status, 0);
    for (int fd : {ready[0], ready[1], release[0], release[1]}) {
        ::close(fd);
    }
    BOOST_CHECK_NO_THROW(checkpoint::store::open(dir));
}

BOOST_AUTO_TEST_CASE(path_under_a_regular_file_is_unwritable) {
    // Fails for root too (unlike permission bits).
    auto dir = test_support::make_temp_dir("ckpt-store");
    auto file = fs::path(dir) / "a-file";
    write_file(file, "x");
    expect_store_error([&] { checkpoint::store::open((file / "sub").string()); }, store_errc::unwritable,
                       {(file / "sub").string(), "is not writable"});
    expect_store_error([&] { checkpoint::store::open(file.string()); }, store_errc::unwritable,
                       {file.string(), "is not writable", "not a directory"});
}

BOOST_AUTO_TEST_CASE(read_only_dir_is_unwritable) {
    if (::geteuid() == 0) {
        BOOST_TEST_MESSAGE("running as root: permission bits do not apply, covered by the path-under-a-file test");
        return;
    }
    auto dir = test_support::make_temp_dir("ckpt-store");
    auto sub = fs::path(dir) / "ro";
    fs::create_directories(sub);
    fs::permissions(sub, fs::perms::owner_read | fs::perms::owner_exec);
    expect_store_error([&] { checkpoint::store::open(sub.string()); }, store_errc::unwritable, {sub.string(), "is not writable"});
    fs::permissions(sub, fs::perms::owner_all);
}

BOOST_AUTO_TEST_CASE(garbage_current_is_corrupt) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    {
        auto s = checkpoint::store::open(dir);
        BOOST_TEST(!s->write({{key{"s", "d"}, position{"1", 1, "v"}}}));
    }
    write_file(fs::path(dir) / "CURRENT", "garbage\n");
    expect_store_error([&] { checkpoint::store::open(dir); }, store_errc::corrupt, {dir, "is corrupt"});
    write_file(fs::path(dir) / "CURRENT", "no newline at the end");
    expect_store_error([&] { checkpoint::store::open(dir); }, store_errc::corrupt, {dir, "is corrupt"});
}

BOOST_AUTO_TEST_CASE(garbage_manifest_is_corrupt) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    {
        auto s = checkpoint::store::open(dir);
        BOOST_TEST(!s->write({{key{"s", "d"}, position{"1", 1, "v"}}}));
    }
    auto current = test_support::read_file((fs::path(dir) / "CURRENT").string());
    BOOST_REQUIRE(!current.empty());
    current.pop_back(); // the newline
    auto manifest = fs::path(dir) / current;
    BOOST_REQUIRE(fs::exists(manifest));
    write_file(manifest, std::string(4096, '\x5a'));
    expect_store_error([&] { checkpoint::store::open(dir); }, store_errc::corrupt, {dir, "is corrupt"});
}

BOOST_AUTO_TEST_CASE(undecodable_value_is_a_clear_error) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    key const k{"http://couch", "cases"};
    {
        // Write garbage behind the store's back, with RocksDB directly.
        rocksdb::Options options;
        options.create_if_missing = true;
        rocksdb::DB* raw = nullptr;
        BOOST_REQUIRE(rocksdb::DB::Open(options, dir, &raw).ok());
        std::unique_ptr<rocksdb::DB> db(raw);
        BOOST_REQUIRE(db->Put(rocksdb::WriteOptions(), checkpoint::encode_key(k), "{not json").ok());
        BOOST_REQUIRE(db->Close().ok());
    }
    auto s = checkpoint::store::open(dir);
    expect_store_error([&] { s->get(k); }, store_errc::corrupt, {dir, "cases", "not JSON"});
    expect_store_error([&] { s->list(); }, store_errc::corrupt, {"cases"});
}

BOOST_AUTO_TEST_CASE(decode_position_rejects_garbage) {
    auto round = checkpoint::decode_position(checkpoint::encode_position(position{"\"1-a\"", -5, "v"}));
    BOOST_TEST(round.seq_json == "\"1-a\"");
    BOOST_TEST(round.written_unix_ms == -5);
    for (std::string bad : {"", "[]", R"({"seq_json":1,"written_unix_ms":1,"bridge_version":"v"})",
                            R"({"seq_json":"x y","written_unix_ms":1,"bridge_version":"v"})",
                            R"({"seq_json":"1","written_unix_ms":"1","bridge_version":"v"})",
                            R"({"seq_json":"1","written_unix_ms":18446744073709551615,"bridge_version":"v"})",
                            R"({"seq_json":"1","written_unix_ms":1.5,"bridge_version":"v"})",
                            R"({"seq_json":"1","written_unix_ms":1})"}) {
        BOOST_CHECK_THROW(checkpoint::decode_position(bad), std::invalid_argument);
    }
}

namespace {

// Lowers RLIMIT_FSIZE for this process (and ignores SIGXFSZ, so a write past
// the limit fails with EFBIG instead of killing us); restores both on exit.
class file_size_limit {
public:
    explicit file_size_limit(rlim_t bytes) {
        old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
        ::getrlimit(RLIMIT_FSIZE, &old_);
        rlimit lim = old_;
        lim.rlim_cur = bytes;
        ::setrlimit(RLIMIT_FSIZE, &lim);
    }
    ~file_size_limit() { lift(); }
    void lift() {
        if (active_) {
            ::setrlimit(RLIMIT_FSIZE, &old_);
            std::signal(SIGXFSZ, old_handler_);
            active_ = false;
        }
    }
    file_size_limit(file_size_limit const&) = delete;
    file_size_limit& operator=(file_size_limit const&) = delete;

private:
    rlimit old_{};
    void (*old_handler_)(int) = nullptr;
    bool active_ = true;
};

} // namespace

// A real RocksDB write failure at run time (the WAL append fails). A full disk
// would need a small file system (tmpfs or a loop mount), which this
// environment cannot create without root tricks; a file size limit fails the
// same WAL append with EFBIG instead of ENOSPC, and RocksDB then refuses all
// later writes until recovered. The store must report it and heal on retry.
BOOST_AUTO_TEST_CASE(runtime_write_failure_is_reported_and_heals) {
    auto dir = test_support::make_temp_dir("ckpt-store");
    auto s = checkpoint::store::open(dir);
    key const k{"src", "cases"};
    BOOST_REQUIRE(!s->write({{k, position{"1", 1, "v"}}}));
    {
        file_size_limit limit(64 * 1024);
        // One record larger than the limit: the WAL append fails half way.
        auto big = "\"" + std::string(100 * 1024, 'x') + "\"";
        auto ec = s->write({{k, position{big, 2, "v"}}});
        BOOST_TEST(ec == checkpoint::make_error_code(store_errc::io), ec.message());
        BOOST_TEST(s->last_error_detail().find("File too large") != std::string::npos, s->last_error_detail());
        BOOST_TEST(s->last_error_detail().find(dir) != std::string::npos);
        BOOST_TEST(s->get(k)->seq_json == "1"); // not advanced
    }
    // The cause is gone: the next write recovers RocksDB and succeeds.
    auto ec = s->write({{k, position{"3", 3, "v"}}});
    BOOST_TEST(!ec, ec.message() << ": " << s->last_error_detail());
    BOOST_TEST(s->get(k)->seq_json == "3");
    BOOST_TEST(!s->write({{k, position{"4", 4, "v"}}}));
    s.reset();
    BOOST_TEST(checkpoint::store::open(dir)->get(k)->seq_json == "4"); // durable across reopen
}

BOOST_AUTO_TEST_SUITE_END()
