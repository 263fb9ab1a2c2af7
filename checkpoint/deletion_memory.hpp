#pragma once

#include "checkpoint/store.hpp"

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace metrics {
class registry;
}

namespace checkpoint {

// The hard-delete memory (--deletion-memory) with its writes batched per
// checkpoint flush instead of one RocksDB write per published batch.
//
// Pipelines hand over what their documents were (remember) and what their
// published tombstones no longer need (forget); both only buffer. Every
// flusher that a pipeline with a memory uses calls write_pending() before
// it writes positions (flusher::write_first), so the rule of issue 11 holds:
// a durable checkpoint never covers a change whose memory entry is not in
// the store. recall() sees buffered entries first, so a document and its
// hard delete within one flush interval (or one batch) are still matched.
//
// A failed write drops its entries (the memory is a cache: those documents'
// tombstones would go to the default topic), counts them in
// couch_bridge_deletion_memory_errors_total{database} and is returned.
//
// Thread-safe. `s` and `registry` must outlive it; the destructor writes
// what is still buffered.
class deletion_memory {
public:
    // More than `max_pending` buffered entries: remember() writes them at
    // once, so that memory stays bounded however long a flush takes.
    deletion_memory(store& s, metrics::registry& registry, std::size_t max_pending = 200000);
    ~deletion_memory();
    deletion_memory(deletion_memory const&) = delete;
    deletion_memory& operator=(deletion_memory const&) = delete;

    // What `docs` of `k` were (latest wins). Buffers; writes only past
    // max_pending (then returns that write's error).
    boost::system::error_code remember(key const& k, std::vector<std::pair<std::string, store::remembered>>&& docs);
    // What `doc_id` of `k` was: the buffer first, then the store.
    std::optional<store::remembered> recall(key const& k, std::string_view doc_id) const;
    // Forgets `doc_id` of `k` (buffered like remember).
    void forget(key const& k, std::string_view doc_id);

    // Writes everything buffered in one unsynced WriteBatch, keys sorted.
    // Calls are serialized: when it returns, everything remembered before
    // the call is in the store (or counted as failed).
    boost::system::error_code write_pending();

    // Entries buffered and not yet written.
    std::size_t pending() const;

private:
    struct id_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    // Per database: doc id -> what it was, or nullopt for a forget.
    using entries = std::unordered_map<std::string, std::optional<store::remembered>, id_hash, std::equal_to<>>;
    using buffer = std::map<key, entries>;

    static std::optional<std::optional<store::remembered>> find(buffer const& b, key const& k, std::string_view id);
    // Sets `id` of `e` to `what`, counting a new entry. Callers hold mutex_.
    void put(entries& e, std::string&& id, std::optional<store::remembered>&& what);

    // Entries a write has stored, kept (with their strings' room) for
    // later ones, so that a steady flow of documents reuses them instead of
    // allocating one per document. At most max_spare.
    static constexpr std::size_t max_spare = 16384;

    store& store_;
    metrics::registry& registry_;
    std::size_t max_pending_;
    std::mutex write_mutex_;    // held across one whole write_pending()
    mutable std::mutex mutex_;  // guards the members below; never held during a write
    buffer pending_;
    buffer writing_;            // taken by the write under way, still seen by recall()
    std::size_t pending_count_ = 0;
    std::vector<entries::node_type> spare_;
    std::vector<entries::node_type> recycled_; // write_pending()'s, under write_mutex_ only
};

} // namespace checkpoint
