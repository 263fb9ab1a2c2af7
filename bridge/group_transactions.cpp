#include "bridge/group_transactions.hpp"

#include "bridge/exactly_once.hpp"
#include "bridge/group.hpp"
#include "checkpoint/flusher.hpp"
#include "kafka/producer.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include <spdlog/spdlog.h>

#include <atomic>
#include <future>
#include <thread>

namespace asio = boost::asio;

namespace bridge {

using namespace std::chrono_literals;

// The thread that serves the producers' delivery reports (they must keep
// being served while the main event loop shuts down, when the last commits
// happen).
struct group_transactions::executors {
    asio::io_context reports;
    asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(reports);
    std::thread reporter{[this] { reports.run(); }};

    ~executors() {
        work.reset();
        reports.stop();
        reporter.join();
    }
};

// One partition's transaction. Declaration order is destruction order in
// reverse: the flusher goes before its writer, the writer before the producer.
// Its flusher has a thread of its own: a commit blocks (it waits for the
// partition's records in flight, up to the commit timeout), and one
// partition held up must not hold up the others' commits or their release.
struct group_transactions::unit {
    asio::thread_pool committer{1};
    std::int32_t partition = -1;
    std::unique_ptr<kafka::producer> producer;
    std::unique_ptr<transaction_writer> writer;
    std::unique_ptr<checkpoint::flusher> flusher;
    std::promise<void> ran;
    std::future<void> run_ended = ran.get_future();
    std::atomic<bool> fenced{false};
};

group_transactions::group_transactions(group_transactions_config cfg, checkpoint::kafka_store& store,
                                       metrics::registry& registry,
                                       std::function<void(std::int32_t, std::string const&)> on_fenced)
    : cfg_(std::move(cfg)),
      store_(store),
      registry_(registry),
      on_fenced_(std::move(on_fenced)),
      exec_(std::make_unique<executors>()) {}

group_transactions::~group_transactions() {
    std::map<std::int32_t, std::unique_ptr<unit>> left;
    {
        std::lock_guard lock(mutex_);
        left.swap(units_);
    }
    for (auto& [p, u] : left) {
        retire(std::move(u), false);
    }
    for (auto& u : kept_) {
        end(std::move(u));
    }
    kept_.clear();
    exec_.reset();
}

void group_transactions::attach(fleet& databases) { fleet_ = &databases; }

std::string group_transactions::transactional_id(std::int32_t p) const {
    return cfg_.id_prefix + "-" + std::to_string(p);
}

std::unique_ptr<group_transactions::unit> group_transactions::make_unit(std::int32_t p) {
    auto u = std::make_unique<unit>();
    u->partition = p;
    kafka::producer_config pc;
    pc.bootstrap_servers = cfg_.bootstrap_servers;
    pc.properties = cfg_.properties;
    pc.transactional_id = transactional_id(p);
    u->producer = std::make_unique<kafka::producer>(exec_->reports.get_executor(), pc, registry_);
    // Fences the partition's last owner and aborts what it left open, so
    // that the checkpoints read next are final.
    for (int attempt = 1;; ++attempt) {
        auto st = u->producer->init_transactions(60s);
        if (st.ok()) {
            break;
        }
        if (st.what != kafka::txn_status::kind::retriable || attempt >= 10) {
            throw std::runtime_error("init_transactions of " + pc.transactional_id + ": " + st.message);
        }
        spdlog::warn("group: init_transactions of {} failed ({}); retrying", pc.transactional_id, st.message);
        std::this_thread::sleep_for(1s);
    }
    if (auto st = u->producer->begin_transaction(); !st.ok()) {
        throw std::runtime_error("begin_transaction of " + pc.transactional_id + ": " + st.message);
    }
    auto const mine = [source = cfg_.source, parts = cfg_.partitions, p](std::string const& db) {
        return database_partition(source, db, parts) == p;
    };
    transaction_writer::hooks h;
    h.in_flight = [this, mine] { return fleet_ != nullptr ? fleet_->in_flight(mine) : 0; };
    h.rewind_all = [this, mine](std::function<void()> done) {
        if (fleet_ != nullptr) {
            fleet_->rewind_all_to_durable(std::move(done), mine);
        } else {
            done();
        }
    };
    auto* raw = u.get();
    h.discard_dirty = [raw] { raw->flusher->discard_dirty(); };
    h.on_fatal = [this, raw](std::string const& why) {
        if (raw->fenced.exchange(true)) {
            return;
        }
        bool current = false;
        {
            std::lock_guard lock(mutex_);
            auto it = units_.find(raw->partition);
            current = it != units_.end() && it->second.get() == raw;
        }
        if (!current) {
            // A closed unit still in use (a lost partition's databases were
            // stopping), fenced by this instance's own new unit of the
            // partition: the ownership is the new unit's, not to be dropped.
            spdlog::info("group: a released transactional producer of partition {} failed ({}); its databases "
                         "were already released",
                         raw->partition, why);
            raw->flusher->stop();
            return;
        }
        spdlog::error("group: the transactional producer {} failed for good ({}). Another member has most likely "
                      "taken partition {} over and fenced this one: its databases stop here, and what this "
                      "instance did not commit for them is invisible to read_committed consumers",
                      transactional_id(raw->partition), why, raw->partition);
        raw->flusher->stop();
        if (on_fenced_) {
            on_fenced_(raw->partition, why);
        }
    };
    u->writer = std::make_unique<transaction_writer>(*u->producer, store_, std::move(h), registry_, cfg_.commit_timeout);
    u->flusher = std::make_unique<checkpoint::flusher>(u->committer.get_executor(), *u->writer,
                                                       cfg_.commit_interval, registry_, cfg_.bridge_version);
    asio::co_spawn(u->committer, u->flusher->run(), [raw](std::exception_ptr ex) {
        if (ex) {
            try {
                std::rethrow_exception(ex);
            } catch (std::exception const& e) {
                spdlog::critical("group: the flusher of partition {} ended by an error: {}", raw->partition, e.what());
            }
        }
        raw->ran.set_value();
    });
    return u;
}

void group_transactions::open(std::vector<std::int32_t> const& parts) {
    std::vector<std::int32_t> todo;
    std::vector<std::unique_ptr<unit>> stale;
    {
        std::lock_guard lock(mutex_);
        for (auto p : parts) {
            auto it = units_.find(p);
            if (it == units_.end()) {
                todo.push_back(p);
            } else if (it->second->fenced) {
                stale.push_back(std::move(it->second));
                units_.erase(it);
                todo.push_back(p);
            }
        }
    }
    for (auto& u : stale) {
        retire(std::move(u), false);
    }
    // In parallel: a first member opens every partition at once.
    std::vector<std::pair<std::int32_t, std::future<std::unique_ptr<unit>>>> opening;
    for (auto p : todo) {
        opening.emplace_back(p, std::async(std::launch::async, [this, p] { return make_unit(p); }));
    }
    std::string failed;
    for (auto& [p, f] : opening) {
        try {
            auto u = f.get();
            std::lock_guard lock(mutex_);
            units_[p] = std::move(u);
        } catch (std::exception const& e) {
            spdlog::error("group: cannot open the transactions of partition {}: {}", p, e.what());
            failed += (failed.empty() ? "" : ", ") + std::to_string(p);
        }
    }
    if (!todo.empty()) {
        spdlog::info("group: {} transactional producer(s) ready ({}-<partition>); earlier owners are fenced",
                     todo.size(), cfg_.id_prefix);
    }
    if (!failed.empty()) {
        throw std::runtime_error("the transactions of partition(s) " + failed + " did not open");
    }
}

void group_transactions::close(std::vector<std::int32_t> const& parts, bool lost, bool in_use) {
    for (auto p : parts) {
        std::unique_ptr<unit> u;
        {
            std::lock_guard lock(mutex_);
            auto it = units_.find(p);
            if (it == units_.end()) {
                continue;
            }
            u = std::move(it->second);
            units_.erase(it);
        }
        retire(std::move(u), !lost && !in_use, in_use);
    }
}

void group_transactions::retire(std::unique_ptr<unit> u, bool commit, bool keep) {
    if (!u->fenced) {
        if (commit) {
            if (auto ec = u->flusher->flush_now()) {
                spdlog::warn("group: the last transaction of partition {} did not commit ({}); its next owner "
                             "starts from the last committed checkpoints",
                             u->partition, ec.message());
            }
        } else if (auto st = u->producer->abort_transaction(5s); !st.ok()) {
            spdlog::debug("group: abort of partition {}'s transaction: {}", u->partition, st.message);
        }
    }
    u->flusher->stop();
    if (keep) {
        // Its loop ends on its own (a commit under way may wait for the
        // brokers up to the commit timeout): the destructor waits for it.
        std::lock_guard lock(mutex_);
        kept_.push_back(std::move(u));
        return;
    }
    end(std::move(u));
}

void group_transactions::end(std::unique_ptr<unit> u) {
    if (u->run_ended.wait_for(30s) != std::future_status::ready) {
        // Destroying the flusher under its own loop would be worse than
        // keeping one unit alive until the process ends.
        spdlog::error("group: the flusher of partition {} did not stop; leaving it to process exit", u->partition);
        (void)u.release();
    }
}

boost::system::error_code group_transactions::flush_all() {
    std::vector<unit*> open;
    {
        std::lock_guard lock(mutex_);
        for (auto& [p, u] : units_) {
            if (!u->fenced) {
                open.push_back(u.get());
            }
        }
    }
    boost::system::error_code first;
    for (auto* u : open) {
        if (auto ec = u->flusher->flush_now(); ec && !first) {
            first = ec;
        }
    }
    return first;
}

fleet::transaction_unit group_transactions::unit_of(std::string const& db) const {
    auto const p = database_partition(cfg_.source, db, cfg_.partitions);
    std::lock_guard lock(mutex_);
    auto it = units_.find(p);
    if (it == units_.end() || it->second->fenced) {
        return {};
    }
    return {it->second->producer.get(), it->second->flusher.get()};
}

std::vector<std::int32_t> group_transactions::open_partitions() const {
    std::lock_guard lock(mutex_);
    std::vector<std::int32_t> out;
    for (auto const& [p, u] : units_) {
        if (!u->fenced) {
            out.push_back(p);
        }
    }
    return out;
}

} // namespace bridge
