#include "checkpoint/store.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/status.h>
#include <rocksdb/write_batch.h>

#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <shared_mutex>

namespace checkpoint {

namespace {

// boost::system::error_category has a protected non-virtual destructor by
// design (categories are never deleted through a base pointer).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class store_category_impl final : public boost::system::error_category {
public:
    char const* name() const noexcept override { return "checkpoint.store"; }
    std::string message(int ev) const override {
        switch (static_cast<store_errc>(ev)) {
        case store_errc::locked:
            return "checkpoint store is locked by another running bridge";
        case store_errc::corrupt:
            return "checkpoint store is corrupt";
        case store_errc::unwritable:
            return "checkpoint store is not writable";
        case store_errc::no_space:
            return "no space left on device for the checkpoint store";
        case store_errc::io:
            return "checkpoint store I/O error";
        case store_errc::invalid_value:
            return "invalid checkpoint value";
        }
        return "unknown checkpoint store error";
    }
};
#pragma GCC diagnostic pop

bool contains(std::string const& s, std::string_view what) { return s.find(what) != std::string::npos; }

// Maps a RocksDB status to our kinds. RocksDB reports most environment
// failures as IOError with the errno text in the message, so the message is
// what tells a full disk from a permission problem from a held lock.
store_errc classify(rocksdb::Status const& s) {
    auto msg = s.ToString();
    if (s.IsNoSpace() || contains(msg, "No space left")) {
        return store_errc::no_space;
    }
    if (contains(msg, "Permission denied") || contains(msg, "Read-only file system") ||
        contains(msg, "Not a directory") || contains(msg, "Operation not permitted")) {
        return store_errc::unwritable;
    }
    // Another process: "While lock file: <dir>/LOCK: Resource temporarily
    // unavailable"; this process: "lock hold by current process".
    if (contains(msg, "lock hold by current process") || contains(msg, "While lock file") ||
        contains(msg, "Resource temporarily unavailable")) {
        return store_errc::locked;
    }
    if (s.IsCorruption()) {
        return store_errc::corrupt;
    }
    return store_errc::io;
}

std::string message_for(std::string const& dir, store_errc kind, std::string const& reason) {
    switch (kind) {
    case store_errc::locked:
        return "checkpoint dir " + dir +
               " is locked by another running couch-kafka-bridge (stop it first, or use another --checkpoint-dir): " +
               reason;
    case store_errc::unwritable:
        return "checkpoint dir " + dir + " is not writable: " + reason;
    case store_errc::corrupt:
        return "checkpoint dir " + dir + " is corrupt: " + reason +
               " (restore it from a backup, or move it away and set positions with `checkpoints set`)";
    case store_errc::no_space:
        return "checkpoint dir " + dir + ": no space left on device: " + reason;
    case store_errc::io:
    case store_errc::invalid_value:
        break;
    }
    return "checkpoint dir " + dir + " cannot be opened: " + reason;
}

[[noreturn]] void throw_open_error(std::string const& dir, store_errc kind, std::string const& reason) {
    throw store_error(kind, message_for(dir, kind, reason));
}

// RocksDB's own diagnostics go to the process log, not to a `LOG` file in
// the checkpoint directory. Found by the fault lab (issue 14): with that file
// on the checkpoint disk, a full disk makes one append to it fail, and
// RocksDB 7.8.3 as Debian builds it (assertions on) aborts the process on the
// next line it logs there (WritableFileWriter::Append after a previous error)
// -- which is the line reporting the failed checkpoint write. Only warnings
// and worse are forwarded; RocksDB's info chatter is dropped.
class spdlog_logger final : public rocksdb::Logger {
public:
    spdlog_logger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
    using rocksdb::Logger::Logv;
    void Logv(char const* format, va_list ap) override { Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap); }
    void Logv(rocksdb::InfoLogLevel const level, char const* format, va_list ap) override {
        if (level < GetInfoLogLevel()) {
            return;
        }
        char line[1024];
        std::vsnprintf(line, sizeof line, format, ap);
        auto const to = level >= rocksdb::InfoLogLevel::ERROR_LEVEL ? spdlog::level::err : spdlog::level::warn;
        spdlog::log(to, "checkpoint store (rocksdb): {}", line);
    }
};

rocksdb::Options make_options() {
    rocksdb::Options options;
    options.info_log = std::make_shared<spdlog_logger>();
    options.create_if_missing = true;
    options.paranoid_checks = true;
    // Positions are tiny (a few hundred bytes per database, rewritten every
    // interval), but the hard-delete memory adds ~100 bytes per published
    // document: millions of random keys while catching up. With 256 KiB
    // memtables they were flushed several times a second and every L0->L1
    // compaction rewrote the whole (random-keyed) L1, so compaction work grew
    // with the memory: 20-50 % of the bridge's CPU per change. 8 MiB
    // memtables flush ~30x less often (docs/BENCHMARKS.md, "Lever 4").
    // Memory: at most two memtables, allocated as they fill.
    options.write_buffer_size = 8 * 1024 * 1024;
    options.max_write_buffer_number = 2;
    options.compression = rocksdb::kNoCompression;
    options.max_open_files = 16;
    options.keep_log_file_num = 2;
    options.max_log_file_size = 1024 * 1024;
    options.max_manifest_file_size = 4 * 1024 * 1024;
    options.max_total_wal_size = 32 * 1024 * 1024;
    options.max_background_jobs = 1;
    options.recycle_log_file_num = 0;
    // A torn record at the end of the WAL (a write that failed half way) must
    // not make the store unopenable: recover up to the last whole record.
    options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    // The deletion memory writes its keys ("d" + database + doc id) in sorted
    // batches: an insert hint per first byte lets each insert start from the
    // previous one's place in the memtable instead of searching it from the
    // top (a hint is only a hint: any order stays correct).
    options.memtable_insert_with_hint_prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(1));
    return options;
}

std::string describe(key const& k) { return "database " + k.database + " (source " + k.source + ")"; }

} // namespace

boost::system::error_category const& store_category() noexcept {
    static store_category_impl const cat;
    return cat;
}

boost::system::error_code make_error_code(store_errc e) noexcept {
    return {static_cast<int>(e), store_category()};
}

struct store::state {
    // Shared for every use of db_, exclusive to replace it (reopen()).
    mutable std::shared_mutex db_mutex;
    std::mutex error_mutex;
    std::string last_detail;
    bool needs_recovery = false;
};

std::unique_ptr<store> store::open(std::string const& dir) {
    namespace fs = std::filesystem;
    std::error_code fs_ec;
    fs::path path(dir);
    // Checked here rather than left to RocksDB so that the message says what
    // is wrong with the path in the operator's words.
    if (fs::exists(path, fs_ec) && !fs::is_directory(path, fs_ec)) {
        throw_open_error(dir, store_errc::unwritable, "it exists and is not a directory");
    }
    fs::create_directories(path, fs_ec);
    if (fs_ec) {
        auto kind = fs_ec == std::errc::no_space_on_device ? store_errc::no_space : store_errc::unwritable;
        throw_open_error(dir, kind, "cannot create it: " + fs_ec.message());
    }

    rocksdb::DB* raw = nullptr;
    auto status = rocksdb::DB::Open(make_options(), dir, &raw);
    if (!status.ok()) {
        auto kind = classify(status);
        // A damaged CURRENT that names a missing MANIFEST comes back as a
        // plain "No such file" I/O error: with a CURRENT file present that is
        // a corrupt store, not a transient I/O problem.
        if (kind == store_errc::io && fs::exists(path / "CURRENT", fs_ec) &&
            (status.IsPathNotFound() || contains(status.ToString(), "No such file"))) {
            kind = store_errc::corrupt;
        }
        throw_open_error(dir, kind, status.ToString());
    }
    return std::unique_ptr<store>(new store(dir, std::unique_ptr<rocksdb::DB>(raw)));
}

store::store(std::string dir, std::unique_ptr<rocksdb::DB> db)
    : dir_(std::move(dir)), db_(std::move(db)), state_(std::make_unique<state>()) {}

store::~store() {
    if (db_) {
        // Close() reports errors that the destructor would swallow; there is
        // nothing to recover here (every write was already synced), so the
        // status is deliberately ignored.
        db_->Close().PermitUncheckedError();
    }
}

std::optional<position> store::get(key const& k) const {
    std::shared_lock db_lock(state_->db_mutex);
    if (!db_) {
        throw store_error(store_errc::io, "checkpoint dir " + dir_ + ": store is closed after a failed recovery: " +
                                              last_error_detail());
    }
    std::string value;
    auto status = db_->Get(rocksdb::ReadOptions(), encode_key(k), &value);
    if (status.IsNotFound()) {
        return std::nullopt;
    }
    if (!status.ok()) {
        throw store_error(classify(status),
                          "checkpoint dir " + dir_ + ": cannot read " + describe(k) + ": " + status.ToString());
    }
    try {
        return decode_position(value);
    } catch (std::invalid_argument const& e) {
        throw store_error(store_errc::corrupt, "checkpoint dir " + dir_ + ": " + describe(k) + ": " + e.what());
    }
}

std::vector<std::pair<key, position>> store::list() const {
    std::shared_lock db_lock(state_->db_mutex);
    if (!db_) {
        throw store_error(store_errc::io, "checkpoint dir " + dir_ + ": store is closed after a failed recovery: " +
                                              last_error_detail());
    }
    std::vector<std::pair<key, position>> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    std::string const prefix(1, position_prefix);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        auto k = decode_key(it->key().ToStringView());
        if (!k) {
            throw store_error(store_errc::corrupt,
                              "checkpoint dir " + dir_ + ": malformed key of " + std::to_string(it->key().size()) +
                                  " bytes");
        }
        try {
            out.emplace_back(*k, decode_position(it->value().ToStringView()));
        } catch (std::invalid_argument const& e) {
            throw store_error(store_errc::corrupt, "checkpoint dir " + dir_ + ": " + describe(*k) + ": " + e.what());
        }
    }
    if (!it->status().ok()) {
        throw store_error(classify(it->status()),
                          "checkpoint dir " + dir_ + ": cannot list checkpoints: " + it->status().ToString());
    }
    return out;
}

boost::system::error_code store::write(std::vector<std::pair<key, position>> const& entries) {
    rocksdb::WriteBatch batch;
    for (auto const& [k, p] : entries) {
        if (!is_valid_seq_json(p.seq_json)) {
            return record_error(describe(k) + ": seq is not a JSON string or number: " + p.seq_json,
                                store_errc::invalid_value);
        }
        auto status = batch.Put(encode_key(k), encode_position(p));
        if (!status.ok()) {
            return record_error(describe(k) + ": " + status.ToString(), store_errc::io);
        }
    }
    if (auto ec = recover_if_needed()) {
        return ec;
    }
    std::shared_lock db_lock(state_->db_mutex);
    rocksdb::WriteOptions options;
    options.sync = true;
    auto status = db_->Write(options, &batch);
    if (!status.ok()) {
        return record_failure("checkpoint dir " + dir_ + ": write of " + std::to_string(entries.size()) +
                                  " checkpoint(s) failed: " + status.ToString(),
                              classify(status));
    }
    return {};
}

boost::system::error_code store::erase(key const& k) {
    if (auto ec = recover_if_needed()) {
        return ec;
    }
    std::shared_lock db_lock(state_->db_mutex);
    rocksdb::WriteOptions options;
    options.sync = true;
    auto status = db_->Delete(options, encode_key(k));
    if (!status.ok()) {
        return record_failure("checkpoint dir " + dir_ + ": delete of " + describe(k) + " failed: " +
                                  status.ToString(),
                              classify(status));
    }
    return {};
}

std::optional<std::string> store::get_meta(std::string_view name) const {
    std::shared_lock db_lock(state_->db_mutex);
    if (!db_) {
        throw store_error(store_errc::io, "checkpoint dir " + dir_ + ": store is closed after a failed recovery: " +
                                              last_error_detail());
    }
    std::string value;
    auto const status = db_->Get(rocksdb::ReadOptions(), "m" + std::string(name), &value);
    if (status.IsNotFound()) {
        return std::nullopt;
    }
    if (!status.ok()) {
        throw store_error(classify(status), "checkpoint dir " + dir_ + ": cannot read " + std::string(name) + ": " +
                                                status.ToString());
    }
    return value;
}

boost::system::error_code store::put_meta(std::string_view name, std::string_view value) {
    if (auto ec = recover_if_needed()) {
        return ec;
    }
    std::shared_lock db_lock(state_->db_mutex);
    rocksdb::WriteOptions options;
    options.sync = true;
    auto const status = db_->Put(options, "m" + std::string(name), rocksdb::Slice(value.data(), value.size()));
    if (!status.ok()) {
        return record_failure("checkpoint dir " + dir_ + ": write of " + std::string(name) + " failed: " +
                                  status.ToString(),
                              classify(status));
    }
    return {};
}

namespace {
// "d" + encode_key(k)'s body: the prefix of `k`'s memory keys.
std::string memory_prefix(key const& k) {
    auto pk = encode_key(k); // "p" + ..., reused with its own prefix
    pk[0] = 'd';
    return pk;
}

std::string memory_key(key const& k, std::string_view doc_id) {
    auto mk = memory_prefix(k);
    mk.append(doc_id);
    return mk;
}
} // namespace

boost::system::error_code store::write_memory(std::vector<memory_change> const& changes) {
    if (changes.empty()) {
        return {};
    }
    if (auto ec = recover_if_needed()) {
        return ec;
    }
    std::shared_lock db_lock(state_->db_mutex);
    if (!db_) {
        return make_error_code(store_errc::io);
    }
    rocksdb::WriteBatch batch;
    std::string value;
    // One key buffer for the whole write (the changes come grouped by
    // database): its prefix is encoded once per database, not per document.
    std::string mk;
    key const* prefix_of = nullptr;
    std::size_t prefix_size = 0;
    for (auto const& c : changes) {
        if (c.k != prefix_of && (prefix_of == nullptr || *c.k != *prefix_of)) {
            mk = memory_prefix(*c.k);
            prefix_of = c.k;
            prefix_size = mk.size();
        }
        mk.resize(prefix_size);
        mk.append(c.doc_id);
        if (c.what != nullptr) {
            value.assign(c.what->doc_type);
            value.push_back('\0');
            value.append(c.what->domain);
            batch.Put(mk, value).PermitUncheckedError();
        } else {
            batch.Delete(mk).PermitUncheckedError();
        }
    }
    auto const status = db_->Write(rocksdb::WriteOptions(), &batch);
    if (!status.ok()) {
        return record_failure("checkpoint dir " + dir_ + ": deletion memory write failed: " + status.ToString(),
                              classify(status));
    }
    return {};
}

std::optional<store::remembered> store::recall(key const& k, std::string_view doc_id) const {
    std::shared_lock db_lock(state_->db_mutex);
    if (!db_) {
        return std::nullopt;
    }
    std::string value;
    if (!db_->Get(rocksdb::ReadOptions(), memory_key(k, doc_id), &value).ok()) {
        return std::nullopt;
    }
    auto const zero = value.find('\0');
    if (zero == std::string::npos) {
        return std::nullopt;
    }
    return remembered{value.substr(0, zero), value.substr(zero + 1)};
}

std::string store::last_error_detail() const {
    std::lock_guard lock(state_->error_mutex);
    return state_->last_detail;
}

boost::system::error_code store::record_error(std::string detail, store_errc kind) {
    std::lock_guard lock(state_->error_mutex);
    state_->last_detail = std::move(detail);
    return make_error_code(kind);
}

boost::system::error_code store::record_failure(std::string detail, store_errc kind) {
    std::lock_guard lock(state_->error_mutex);
    state_->last_detail = std::move(detail);
    state_->needs_recovery = true;
    return make_error_code(kind);
}

// After a failed write RocksDB refuses every later write with the same error
// (measured with 7.8.3: a WAL append that hit a file size limit is a "fatal"
// background error that Resume() does not clear, even once the limit is
// lifted). Without this, a runtime write failure would never heal without a
// restart. So: try Resume(); if that fails, close and reopen the DB, which
// recovers the WAL up to its last whole record and starts a fresh one.
boost::system::error_code store::recover_if_needed() {
    {
        std::lock_guard lock(state_->error_mutex);
        if (!state_->needs_recovery) {
            return {};
        }
    }
    std::unique_lock db_lock(state_->db_mutex);
    std::string resume_error = "store is closed";
    if (db_) {
        auto resumed = db_->Resume();
        if (resumed.ok()) {
            std::lock_guard lock(state_->error_mutex);
            state_->needs_recovery = false;
            return {};
        }
        resume_error = resumed.ToString();
        // The close status repeats the background error; reopening is the
        // remedy, so it is deliberately not checked.
        db_->Close().PermitUncheckedError();
        db_.reset();
    }
    rocksdb::DB* raw = nullptr;
    auto status = rocksdb::DB::Open(make_options(), dir_, &raw);
    if (!status.ok()) {
        std::lock_guard lock(state_->error_mutex);
        state_->last_detail = "checkpoint dir " + dir_ + ": cannot recover from the previous write failure (" +
                              resume_error + "); reopen failed: " + status.ToString();
        return make_error_code(classify(status));
    }
    db_.reset(raw);
    std::lock_guard lock(state_->error_mutex);
    state_->needs_recovery = false;
    return {};
}

} // namespace checkpoint
