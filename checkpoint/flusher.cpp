#include "checkpoint/flusher.hpp"

#include "checkpoint/deletion_memory.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace checkpoint {

namespace asio = boost::asio;

namespace {

std::int64_t to_unix_ms(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

} // namespace

flusher::flusher(asio::any_io_executor ex, position_writer& writer, std::chrono::milliseconds interval,
                 metrics::registry& registry, std::string bridge_version, clock_fn now)
    : strand_(asio::make_strand(std::move(ex))), timer_(std::make_shared<asio::steady_timer>(strand_)), writer_(writer), interval_(interval),
      registry_(registry), bridge_version_(std::move(bridge_version)),
      now_(now ? std::move(now) : clock_fn([] { return std::chrono::system_clock::now(); })),
      writes_total_(registry.add_counter("couch_bridge_checkpoint_writes_total",
                                         "Durable checkpoint batches written (one WriteBatch with sync each)")),
      write_errors_total_(registry.add_counter("couch_bridge_checkpoint_write_errors_total",
                                               "Checkpoint batch writes that failed (retried next interval)")),
      write_duration_(registry.add_histogram("couch_bridge_checkpoint_write_duration_seconds",
                                             "Duration of one durable checkpoint batch write",
                                             metrics::exponential_buckets(0.0005, 2.0, 14))),
      dirty_entries_(registry.add_gauge("couch_bridge_checkpoint_dirty_entries",
                                        "Checkpoints changed in memory and not yet durably written")) {}

flusher::~flusher() = default;

void flusher::update(key const& k, std::string seq_json) {
    std::lock_guard lock(mutex_);
    dirty_.insert_or_assign(k, std::move(seq_json));
    dirty_entries_.set(static_cast<double>(dirty_.size()));
}

asio::awaitable<void> flusher::run() {
    // Runs the loop on our own strand so that stop() can cancel the timer
    // from any thread without racing the coroutine.
    return asio::co_spawn(strand_, loop(), asio::use_awaitable);
}

asio::awaitable<void> flusher::loop() {
    while (!stopped_.load()) {
        timer_->expires_after(interval_);
        auto [ec] = co_await timer_->async_wait(asio::as_tuple(asio::use_awaitable));
        if (stopped_.load()) {
            break;
        }
        (void)ec; // operation_aborted only comes from stop(), handled above
        // Errors are recorded, logged and counted inside; the loop just tries
        // again next interval.
        (void)flush_once(true);
    }
}

void flusher::stop() {
    stopped_.store(true);
    asio::post(strand_, [timer = timer_] { timer->cancel(); });
}

boost::system::error_code flusher::flush_now() { return flush_once(false); }

boost::system::error_code flusher::flush_once(bool thorough) {
    std::lock_guard flush_lock(flush_mutex_);
    writer_.prepare(thorough);
    struct finish_guard {
        position_writer& w;
        ~finish_guard() { w.finish(); }
    } finish{writer_};
    std::map<key, std::string> batch;
    std::vector<deletion_memory*> memories;
    {
        std::lock_guard lock(mutex_);
        batch.swap(dirty_);
        dirty_entries_.set(0);
        memories = memories_;
    }
    // After taking the positions: every document they cover was remembered
    // before its position reached update(). Failures are counted and logged
    // by the memory; the positions still go (the memory is a cache).
    for (auto* m : memories) {
        (void)m->write_pending();
    }
    auto const written = now_();
    if (batch.empty() && !writer_.write_when_clean()) {
        std::lock_guard lock(mutex_);
        refresh_ages_locked(written);
        return {};
    }

    std::vector<std::pair<key, position>> entries;
    entries.reserve(batch.size());
    for (auto const& [k, seq] : batch) {
        entries.emplace_back(k, position{seq, to_unix_ms(written), bridge_version_});
    }
    auto const started = std::chrono::steady_clock::now();
    auto ec = writer_.write(entries);
    write_duration_.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());

    std::lock_guard lock(mutex_);
    if (ec) {
        // Keep the positions dirty unless a newer update arrived meanwhile
        // (try_emplace keeps the newer one): the durable checkpoint stays
        // where it was, and the next tick retries with the latest seq.
        if (writer_.keep_dirty_on_failure()) {
            for (auto& [k, seq] : batch) {
                dirty_.try_emplace(k, std::move(seq));
            }
        }
        dirty_entries_.set(static_cast<double>(dirty_.size()));
        write_errors_total_.inc();
        auto detail = writer_.last_error_detail();
        auto text = ec.message() + (detail.empty() ? std::string{} : ": " + detail);
        ++health_.consecutive_failures;
        // One line per failure would be one per interval while a disk is
        // full; log the first, every change of reason and then every 60th.
        if (health_.consecutive_failures == 1 || text != health_.last_error ||
            health_.consecutive_failures % 60 == 0) {
            spdlog::error("checkpoint write of {} database(s) failed ({} consecutive failure(s)); checkpoints are "
                          "not advancing, retrying every {} ms: {}",
                          entries.size(), health_.consecutive_failures, interval_.count(), text);
        }
        health_.last_error = std::move(text);
        health_.last_error_time = written;
        refresh_ages_locked(written);
        return ec;
    }
    writes_total_.inc();
    if (health_.consecutive_failures > 0) {
        spdlog::info("checkpoint writes recovered after {} failure(s)", health_.consecutive_failures);
    }
    health_.consecutive_failures = 0;
    health_.last_success_time = written;
    for (auto& [k, p] : entries) {
        auto& d = durable_entry_locked(k);
        d.seq_json = std::move(p.seq_json);
        d.written = written;
    }
    refresh_ages_locked(written);
    return {};
}

flusher::durable_entry& flusher::durable_entry_locked(key const& k) {
    auto [it, inserted] = durable_.try_emplace(k);
    if (inserted) {
        it->second.age = &registry_.add_gauge("couch_bridge_checkpoint_age_seconds",
                                              "Seconds since the database's checkpoint was last durably written",
                                              {{"database", k.database}});
    }
    return it->second;
}

void flusher::restore(key const& k, position const& p) {
    std::lock_guard lock(mutex_);
    auto& d = durable_entry_locked(k);
    d.seq_json = p.seq_json;
    d.written = std::chrono::system_clock::time_point(std::chrono::milliseconds(p.written_unix_ms));
    refresh_ages_locked(now_());
}

void flusher::refresh_ages_locked(std::chrono::system_clock::time_point now) {
    for (auto const& [k, d] : durable_) {
        d.age->set(std::chrono::duration<double>(now - d.written).count());
    }
}

std::optional<std::string> flusher::durable_seq(key const& k) const {
    std::lock_guard lock(mutex_);
    auto it = durable_.find(k);
    if (it == durable_.end()) {
        return std::nullopt;
    }
    return it->second.seq_json;
}

std::size_t flusher::dirty_count() const {
    std::lock_guard lock(mutex_);
    return dirty_.size();
}

void flusher::write_first(deletion_memory& m) {
    std::lock_guard lock(mutex_);
    if (std::find(memories_.begin(), memories_.end(), &m) == memories_.end()) {
        memories_.push_back(&m);
    }
}

void flusher::discard_dirty() {
    std::lock_guard lock(mutex_);
    dirty_.clear();
    dirty_entries_.set(0);
}

flusher::health flusher::status() const {
    std::lock_guard lock(mutex_);
    return health_;
}

} // namespace checkpoint
