#pragma once

#include <boost/system/error_code.hpp>

#include <compare>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace rocksdb {
class DB;
}

namespace checkpoint {

// Identifies one followed database of one CouchDB source. `source` is the
// CouchDB URL without credentials (or --source-name); two bridges following
// different servers may therefore share a store without clashing.
struct key {
    std::string source;
    std::string database;

    friend auto operator<=>(key const&, key const&) = default;
    friend bool operator==(key const&, key const&) = default;
};

// A durable position of one database.
struct position {
    // The seq exactly as CouchDB sent it, as JSON text: `"4-g1AAAA..."` with
    // the quotes, or `42`. Kept byte-exact (escapes included), never parsed.
    std::string seq_json;
    // When the bridge wrote it (Unix epoch, milliseconds).
    std::int64_t written_unix_ms = 0;
    // The couch-kafka-bridge version that wrote it.
    std::string bridge_version;

    friend bool operator==(position const&, position const&) = default;
};

// Encoding of keys and values in RocksDB. Exposed for tests and tools; the
// store is the only writer.
//
// Key: "p" + 4-byte big-endian length of source + source + database. The
// length prefix keeps ("a/b","c") and ("a","b/c") apart whatever bytes the
// names hold; the leading "p" leaves room for other kinds of small state.
inline constexpr char position_prefix = 'p';
std::string encode_key(key const& k);
// nullopt for a RocksDB key that is not a position key (other state, or a
// malformed one).
std::optional<key> decode_key(std::string_view raw);
// Value: a small JSON object {"seq_json": "<the seq JSON text as a string>",
// "written_unix_ms": N, "bridge_version": "..."}. Holding the seq as a string
// of its JSON text is what keeps it byte-exact.
std::string encode_position(position const& p);
// Throws std::invalid_argument with a message saying what is wrong.
position decode_position(std::string_view raw);

// True if `seq_json` is the JSON text of a CouchDB seq: one JSON string or
// number, nothing else (no surrounding garbage).
bool is_valid_seq_json(std::string_view seq_json);

// Why a store operation failed, for callers that branch (the `checkpoints`
// command refuses on `locked`; startup exits on all of them).
enum class store_errc {
    locked = 1,    // another running bridge holds the store
    corrupt,       // RocksDB files or a stored value cannot be read back
    unwritable,    // the directory cannot be created or written
    no_space,      // the file system is full
    io,            // any other I/O failure
    invalid_value, // a value that would not round-trip (e.g. a seq that is not JSON)
};
boost::system::error_category const& store_category() noexcept;
boost::system::error_code make_error_code(store_errc e) noexcept;

// Thrown by store::open (startup) and by reads. what() is meant for an
// operator: it names the directory and says what to do about it.
class store_error : public std::runtime_error {
public:
    store_error(store_errc kind, std::string const& message) : std::runtime_error(message), kind_(kind) {}
    store_errc kind() const noexcept { return kind_; }

private:
    store_errc kind_;
};

// The write side of a store, the seam the flusher uses so that tests can make
// writes fail. Implementations must be thread-safe.
class position_writer {
public:
    virtual ~position_writer() = default;
    // Writes all entries atomically and durably, or none. Returns an error
    // (never throws) so that callers can keep retrying.
    virtual boost::system::error_code write(std::vector<std::pair<key, position>> const& entries) = 0;
    // Operator-readable detail of the most recent failed write (for example
    // RocksDB's status text), empty when there is none.
    virtual std::string last_error_detail() const { return {}; }

    // Hooks for a writer that commits more than positions (exactly-once:
    // records and positions in one Kafka transaction). The flusher calls
    // them under its flush lock, around each flush; the defaults suit a
    // plain store.
    // Before the dirty positions are taken. `thorough`: the periodic flush,
    // which may wait (on the flusher's own thread) for records in flight;
    // false for flush_now(), which may run on any thread and must not wait
    // for the event loop.
    virtual void prepare(bool /*thorough*/) {}
    // After the write, whatever its outcome.
    virtual void finish() {}
    // False: a failed write drops its positions instead of retrying them
    // (they belonged to records that were aborted with them).
    virtual bool keep_dirty_on_failure() const { return true; }
    // True: write() is called at every flush, even with no position dirty.
    virtual bool write_when_clean() const { return false; }
};

// Where positions live: the RocksDB store (default) or the Kafka topic
// store (--checkpoint-store kafka). What startup, the fleet and the
// `checkpoints` command use. Implementations are thread-safe.
class positions : public position_writer {
public:
    // The stored position of `k`, nullopt if none. Throws store_error on a
    // read failure or a value that does not decode.
    virtual std::optional<position> get(key const& k) const = 0;
    // Every stored position, ordered by (source, database). Throws like get().
    virtual std::vector<std::pair<key, position>> list() const = 0;
    // Removes the position of `k` durably; removing a missing key succeeds.
    virtual boost::system::error_code erase(key const& k) = 0;
    // Names the store for messages: "checkpoint dir X", "checkpoint topic T".
    virtual std::string where() const = 0;
};

// The RocksDB store of per-database positions. A tiny store: a few hundred
// bytes per followed database, written once per flush interval.
//
// Thread safety: all member functions are thread-safe (RocksDB is).
class store final : public positions {
public:
    // Opens (creating if missing) the store at `dir`. Throws store_error with
    // an operator-friendly message:
    //   locked     "checkpoint dir X is locked by another running couch-kafka-bridge ..."
    //   unwritable "checkpoint dir X is not writable: <reason>"
    //   corrupt    "checkpoint dir X is corrupt: <reason> ..."
    //   no_space   "checkpoint dir X: no space left on device ..."
    //   io         "checkpoint dir X cannot be opened: <reason>"
    // The lock is held until the store is destroyed.
    static std::unique_ptr<store> open(std::string const& dir);

    ~store() override;
    store(store const&) = delete;
    store& operator=(store const&) = delete;

    std::string const& dir() const noexcept { return dir_; }

    // The stored position of `k`, nullopt if none. Throws store_error on a
    // read failure (io) or a value that does not decode (corrupt, naming the
    // source and database).
    std::optional<position> get(key const& k) const override;

    // Every stored position, ordered by (source, database). Throws like get().
    std::vector<std::pair<key, position>> list() const override;

    // Writes all entries in ONE WriteBatch with WriteOptions.sync = true:
    // atomic and durable when it returns success. An entry whose seq_json is
    // not a valid seq fails the whole batch with invalid_value (nothing is
    // written). After a failed write, the next write (or erase) first
    // recovers RocksDB from its background error (Resume(), else close and
    // reopen), so that a retry succeeds once the cause (full disk, ...) is
    // gone. Never throws.
    boost::system::error_code write(std::vector<std::pair<key, position>> const& entries) override;

    // Removes the position of `k` (durably); removing a missing key succeeds.
    boost::system::error_code erase(key const& k) override;

    std::string where() const override { return "checkpoint dir " + dir_; }

    // Small named facts about the whole store, beside the positions (key
    // "m" + name), e.g. "kafka_cluster_id": the Kafka cluster that
    // acknowledged what the positions cover. get_meta: nullopt when unset;
    // throws store_error on a read failure. put_meta: one synced write.
    std::optional<std::string> get_meta(std::string_view name) const;
    boost::system::error_code put_meta(std::string_view name, std::string_view value);

    // Hard-delete memory: what each published document was, so that its
    // tombstone (which carries no doc_type) can be routed like it. Kept in the
    // default column family under "d" + encode_key(k) + doc id (one key
    // range per database, so no column family per database: thousands of
    // databases would mean thousands of memtables), written through the same
    // WAL as the positions without a sync of their own: the synced
    // checkpoint batch that covers a change makes its memory durable too.
    struct remembered {
        std::string doc_type;
        std::string domain; // empty when the document had none
    };
    // One change of the memory: `what` null forgets `doc_id` of `*k` (its
    // tombstone was published).
    struct memory_change {
        key const* k = nullptr;
        std::string_view doc_id;
        remembered const* what = nullptr;
    };
    // All `changes` in ONE WriteBatch, in the given order (latest wins), not
    // synced. Callers batch them (checkpoint::deletion_memory): a write per
    // change cost a WAL append and a RocksDB write each. Keys sorted in
    // ascending order insert faster (the memtable keeps an insert hint).
    boost::system::error_code write_memory(std::vector<memory_change> const& changes);
    // What `doc_id` of `k` was, as written by write_memory(); nullopt when
    // unknown. Never throws (a read error is nullopt).
    std::optional<remembered> recall(key const& k, std::string_view doc_id) const;

    std::string last_error_detail() const override;

private:
    store(std::string dir, std::unique_ptr<rocksdb::DB> db);
    // An error that leaves RocksDB healthy (bad input).
    boost::system::error_code record_error(std::string detail, store_errc kind);
    // A failed RocksDB write: the next write recovers first.
    boost::system::error_code record_failure(std::string detail, store_errc kind);
    boost::system::error_code recover_if_needed();

    std::string dir_;
    std::unique_ptr<rocksdb::DB> db_; // null only after a failed reopen
    struct state;
    std::unique_ptr<state> state_;
};

} // namespace checkpoint

template <>
struct boost::system::is_error_code_enum<checkpoint::store_errc> : std::true_type {};
