#include "checkpoint/deletion_memory.hpp"

#include "metrics/registry.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace checkpoint {

deletion_memory::deletion_memory(store& s, metrics::registry& registry, std::size_t max_pending)
    : store_(s), registry_(registry), max_pending_(max_pending) {}

deletion_memory::~deletion_memory() { (void)write_pending(); } // failures are counted and logged inside

boost::system::error_code deletion_memory::remember(key const& k,
                                                    std::vector<std::pair<std::string, store::remembered>>&& docs) {
    if (docs.empty()) {
        return {};
    }
    bool full = false;
    {
        std::lock_guard lock(mutex_);
        auto& e = pending_[k];
        for (auto& [id, what] : docs) {
            put(e, std::move(id), std::move(what));
        }
        full = pending_count_ > max_pending_;
    }
    return full ? write_pending() : boost::system::error_code{};
}

void deletion_memory::forget(key const& k, std::string_view doc_id) {
    std::lock_guard lock(mutex_);
    auto& e = pending_[k];
    auto it = e.find(doc_id);
    if (it == e.end()) {
        put(e, std::string(doc_id), std::nullopt);
    } else {
        it->second.reset();
    }
}

void deletion_memory::put(entries& e, std::string&& id, std::optional<store::remembered>&& what) {
    if (auto it = e.find(id); it != e.end()) {
        it->second = std::move(what);
        return;
    }
    ++pending_count_;
    if (spare_.empty()) {
        e.emplace(std::move(id), std::move(what));
        return;
    }
    auto node = std::move(spare_.back());
    spare_.pop_back();
    node.key() = std::move(id);
    node.mapped() = std::move(what);
    e.insert(std::move(node));
}

std::optional<std::optional<store::remembered>> deletion_memory::find(buffer const& b, key const& k,
                                                                      std::string_view id) {
    auto db = b.find(k);
    if (db == b.end()) {
        return std::nullopt;
    }
    auto it = db->second.find(id);
    if (it == db->second.end()) {
        return std::nullopt;
    }
    return it->second;
}

std::optional<store::remembered> deletion_memory::recall(key const& k, std::string_view doc_id) const {
    {
        std::lock_guard lock(mutex_);
        // Newest first: the buffer, then what a write has taken but not
        // yet stored; a buffered forget answers "unknown" without the store.
        if (auto hit = find(pending_, k, doc_id)) {
            return *hit;
        }
        if (auto hit = find(writing_, k, doc_id)) {
            return *hit;
        }
    }
    return store_.recall(k, doc_id);
}

boost::system::error_code deletion_memory::write_pending() {
    std::lock_guard write_lock(write_mutex_);
    {
        std::lock_guard lock(mutex_);
        if (pending_count_ == 0) {
            return {};
        }
        writing_.swap(pending_);
        pending_.clear();
        pending_count_ = 0;
    }
    std::vector<store::memory_change> changes;
    for (auto const& [k, e] : writing_) { // databases in key order
        auto const first = changes.size();
        for (auto const& [id, what] : e) {
            changes.push_back({&k, id, what ? &*what : nullptr});
        }
        std::sort(changes.begin() + static_cast<std::ptrdiff_t>(first), changes.end(),
                  [](auto const& a, auto const& b) { return a.doc_id < b.doc_id; });
    }
    auto ec = store_.write_memory(changes);
    if (ec) {
        spdlog::warn("cannot write the hard-delete memory of {} document(s) in {} database(s): {} ({})",
                     changes.size(), writing_.size(), ec.message(), store_.last_error_detail());
        for (auto const& [k, e] : writing_) {
            registry_
                .add_counter("couch_bridge_deletion_memory_errors_total", "Failed writes of the hard-delete memory",
                             {{"database", k.database}})
                .inc();
        }
    }
    // Out of recall()'s sight at once (the store answers now). Unlinking
    // and freeing a flush's entries (a second's worth at full speed) happen
    // outside the lock: a pipeline takes it for every batch, and the
    // flusher runs on a thread of its own, so a pipeline waited here.
    buffer done;
    std::size_t room = 0;
    {
        std::lock_guard lock(mutex_);
        done.swap(writing_);
        room = max_spare - std::min(max_spare, spare_.size());
    }
    recycled_.clear();
    for (auto& [k, e] : done) {
        while (!e.empty() && recycled_.size() < room) {
            recycled_.push_back(e.extract(e.begin()));
        }
    }
    done.clear();
    std::lock_guard lock(mutex_);
    for (auto& node : recycled_) {
        if (spare_.size() >= max_spare) {
            break;
        }
        spare_.push_back(std::move(node));
    }
    recycled_.clear();
    return ec;
}

std::size_t deletion_memory::pending() const {
    std::lock_guard lock(mutex_);
    return pending_count_;
}

} // namespace checkpoint
