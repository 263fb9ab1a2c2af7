#include "checkpoint/flusher.hpp"

#include "checkpoint/store.hpp"
#include "metrics/registry.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace ck = checkpoint;
using namespace std::chrono_literals;

namespace {

// The test seam: records every batch and fails on demand, then forwards to a
// real store so that durability is checked end to end.
class recording_writer final : public ck::position_writer {
public:
    explicit recording_writer(ck::store& s) : store_(s) {}

    boost::system::error_code write(std::vector<std::pair<ck::key, ck::position>> const& entries) override {
        std::lock_guard lock(mutex_);
        batches_.push_back(entries);
        if (failures_left_ > 0) {
            --failures_left_;
            return ck::make_error_code(ck::store_errc::no_space);
        }
        return store_.write(entries);
    }
    std::string last_error_detail() const override { return "injected failure"; }

    void fail_next(int n) {
        std::lock_guard lock(mutex_);
        failures_left_ = n;
    }
    std::vector<std::vector<std::pair<ck::key, ck::position>>> batches() const {
        std::lock_guard lock(mutex_);
        return batches_;
    }

private:
    ck::store& store_;
    mutable std::mutex mutex_;
    int failures_left_ = 0;
    std::vector<std::vector<std::pair<ck::key, ck::position>>> batches_;
};

// A settable wall clock.
struct fake_clock {
    std::shared_ptr<std::atomic<std::int64_t>> ms = std::make_shared<std::atomic<std::int64_t>>(1'700'000'000'000);
    ck::clock_fn fn() const {
        return [m = ms] { return std::chrono::system_clock::time_point(std::chrono::milliseconds(m->load())); };
    }
};

struct fixture {
    std::string dir = test_support::make_temp_dir("ckpt-flusher");
    std::unique_ptr<ck::store> store = ck::store::open(dir);
    recording_writer writer{*store};
    metrics::registry registry;
    fake_clock clock;
    asio::io_context ioc;
};

// Spawns f.run() and a watcher that stops the flusher once `done()` holds
// (or after a generous safety timeout), then runs the io_context.
template <typename Pred>
bool run_until(asio::io_context& ioc, ck::flusher& f, Pred done) {
    bool finished = false;
    std::exception_ptr failure;
    asio::co_spawn(ioc, f.run(), [&](std::exception_ptr e) {
        finished = true;
        failure = e;
    });
    bool reached = false;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            asio::steady_timer t(co_await asio::this_coro::executor);
            auto const deadline = std::chrono::steady_clock::now() + 60s; // safety net only
            while (!(reached = done()) && std::chrono::steady_clock::now() < deadline) {
                t.expires_after(5ms);
                co_await t.async_wait(asio::use_awaitable);
            }
            f.stop();
        },
        asio::detached);
    ioc.run();
    if (failure) {
        std::rethrow_exception(failure);
    }
    return reached && finished;
}

} // namespace

namespace {
bool exposition_has(metrics::registry& r, std::string const& line) {
    return r.expose().find(line) != std::string::npos;
}
} // namespace

BOOST_AUTO_TEST_SUITE(flusher)

BOOST_AUTO_TEST_CASE(updates_from_many_threads_go_out_in_one_batch) {
    fixture fx;
    ck::flusher f(fx.ioc.get_executor(), fx.writer, 50ms, fx.registry, "0.1.0", fx.clock.fn());
    constexpr int threads = 4;
    constexpr int keys_per_thread = 5;
    constexpr int updates = 200;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&f, t] {
            for (int i = 1; i <= updates; ++i) {
                for (int k = 0; k < keys_per_thread; ++k) {
                    f.update(ck::key{"src", "db-" + std::to_string(t) + "-" + std::to_string(k)}, std::to_string(i));
                }
            }
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    BOOST_TEST(f.dirty_count() == static_cast<std::size_t>(threads * keys_per_thread));
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_dirty_entries 20\n"));

    auto ec = f.flush_now();
    BOOST_TEST(!ec, ec.message());
    auto batches = fx.writer.batches();
    BOOST_REQUIRE(batches.size() == 1u);
    BOOST_TEST(batches[0].size() == static_cast<std::size_t>(threads * keys_per_thread));
    for (auto const& [k, p] : batches[0]) {
        BOOST_TEST(p.seq_json == std::to_string(updates)); // latest wins
        BOOST_TEST(p.written_unix_ms == 1'700'000'000'000);
        BOOST_TEST(p.bridge_version == "0.1.0");
        BOOST_TEST(f.durable_seq(k).value_or("") == std::to_string(updates));
    }
    BOOST_TEST(fx.store->list().size() == static_cast<std::size_t>(threads * keys_per_thread));
    BOOST_TEST(f.dirty_count() == 0u);
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_writes_total 1\n"));
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_dirty_entries 0\n"));
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_write_duration_seconds_count 1\n"));

    // Nothing dirty: no write at all.
    BOOST_TEST(!f.flush_now());
    BOOST_TEST(fx.writer.batches().size() == 1u);
}

BOOST_AUTO_TEST_CASE(run_writes_dirty_entries_once_per_tick) {
    fixture fx;
    ck::flusher f(fx.ioc.get_executor(), fx.writer, 20ms, fx.registry, "0.1.0", fx.clock.fn());
    ck::key const a{"src", "a"};
    ck::key const b{"src", "b"};
    f.update(a, "\"5-x\"");
    f.update(b, "7");
    f.update(a, "\"6-x\"");
    bool ok = run_until(fx.ioc, f, [&] { return f.durable_seq(a).has_value() && f.durable_seq(b).has_value(); });
    BOOST_TEST(ok);
    auto batches = fx.writer.batches();
    // The first tick wrote both in one batch; later ticks had nothing dirty.
    BOOST_REQUIRE(batches.size() == 1u);
    BOOST_TEST(batches[0].size() == 2u);
    BOOST_TEST(fx.store->get(a)->seq_json == "\"6-x\"");
    BOOST_TEST(fx.store->get(b)->seq_json == "7");
}

BOOST_AUTO_TEST_CASE(a_failed_write_keeps_the_checkpoint_and_is_retried) {
    fixture fx;
    ck::flusher f(fx.ioc.get_executor(), fx.writer, 50ms, fx.registry, "0.1.0", fx.clock.fn());
    ck::key const k{"src", "cases"};
    f.update(k, "1");
    BOOST_TEST(!f.flush_now());
    BOOST_TEST(f.durable_seq(k).value_or("") == "1");

    fx.writer.fail_next(1);
    f.update(k, "2");
    *fx.clock.ms += 1000;
    auto ec = f.flush_now();
    BOOST_TEST(ec == ck::make_error_code(ck::store_errc::no_space));
    // Not advanced, in memory or on disk; still dirty; reported.
    BOOST_TEST(f.durable_seq(k).value_or("") == "1");
    BOOST_TEST(fx.store->get(k)->seq_json == "1");
    BOOST_TEST(f.dirty_count() == 1u);
    auto h = f.status();
    BOOST_TEST(h.consecutive_failures == 1u);
    BOOST_TEST(h.last_error.find("injected failure") != std::string::npos, h.last_error);
    BOOST_TEST(h.last_error.find("no space") != std::string::npos, h.last_error);
    BOOST_TEST((h.last_error_time == fx.clock.fn()()));
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_write_errors_total 1\n"));
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_dirty_entries 1\n"));

    // A newer update while failing: the retry writes the latest, not the failed one.
    f.update(k, "3");
    BOOST_TEST(!f.flush_now());
    BOOST_TEST(f.durable_seq(k).value_or("") == "3");
    BOOST_TEST(fx.store->get(k)->seq_json == "3");
    h = f.status();
    BOOST_TEST(h.consecutive_failures == 0u);
    BOOST_TEST((h.last_success_time == fx.clock.fn()()));
    BOOST_TEST(!h.last_error.empty()); // the last error stays visible for /status
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_writes_total 2\n"));
}

BOOST_AUTO_TEST_CASE(run_retries_failed_writes_on_later_ticks) {
    fixture fx;
    ck::flusher f(fx.ioc.get_executor(), fx.writer, 10ms, fx.registry, "0.1.0", fx.clock.fn());
    ck::key const k{"src", "forms"};
    fx.writer.fail_next(3);
    f.update(k, "\"9-abc\"");
    bool ok = run_until(fx.ioc, f, [&] { return f.durable_seq(k).has_value(); });
    BOOST_TEST(ok);
    auto batches = fx.writer.batches();
    BOOST_TEST(batches.size() == 4u); // three failures, then the success
    for (auto const& b : batches) {
        BOOST_REQUIRE(b.size() == 1u);
        BOOST_TEST(b[0].second.seq_json == "\"9-abc\"");
    }
    BOOST_TEST(fx.store->get(k)->seq_json == "\"9-abc\"");
    BOOST_TEST(f.status().consecutive_failures == 0u);
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_write_errors_total 3\n"));
}

BOOST_AUTO_TEST_CASE(age_gauge_follows_the_injected_clock) {
    fixture fx;
    ck::flusher f(fx.ioc.get_executor(), fx.writer, 50ms, fx.registry, "0.1.0", fx.clock.fn());
    f.update(ck::key{"src", "cases"}, "1");
    BOOST_TEST(!f.flush_now());
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_age_seconds{database=\"cases\"} 0\n"));
    *fx.clock.ms += 5000;
    BOOST_TEST(!f.flush_now()); // nothing dirty, refreshes ages
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_age_seconds{database=\"cases\"} 5\n"));
    BOOST_TEST(fx.store->get(ck::key{"src", "cases"})->written_unix_ms == 1'700'000'000'000);
}

BOOST_AUTO_TEST_CASE(restore_seeds_durable_seq_and_age_without_writing) {
    fixture fx;
    ck::flusher f(fx.ioc.get_executor(), fx.writer, 50ms, fx.registry, "0.1.0", fx.clock.fn());
    ck::key const k{"src", "forms"};
    f.restore(k, ck::position{"\"8-q\"", fx.clock.ms->load() - 42'000, "0.0.9"});
    BOOST_TEST(f.durable_seq(k).value_or("") == "\"8-q\"");
    BOOST_TEST(f.dirty_count() == 0u);
    BOOST_TEST(exposition_has(fx.registry, "couch_bridge_checkpoint_age_seconds{database=\"forms\"} 42\n"));
    BOOST_TEST(!f.flush_now());
    BOOST_TEST(fx.writer.batches().empty());
}

BOOST_AUTO_TEST_CASE(stop_before_the_first_tick_ends_run_promptly) {
    fixture fx;
    // An hour-long interval: only stop() can end run().
    ck::flusher f(fx.ioc.get_executor(), fx.writer, std::chrono::milliseconds(3'600'000), fx.registry, "0.1.0",
                  fx.clock.fn());
    bool ok = run_until(fx.ioc, f, [] { return true; });
    BOOST_TEST(ok);
    BOOST_TEST(fx.writer.batches().empty());
}

BOOST_AUTO_TEST_CASE(run_on_a_thread_pool) {
    fixture fx;
    ck::flusher f(fx.ioc.get_executor(), fx.writer, 5ms, fx.registry, "0.1.0", fx.clock.fn());
    std::atomic<bool> finished{false};
    asio::co_spawn(fx.ioc, f.run(), [&](std::exception_ptr) { finished = true; });
    std::vector<std::thread> io_threads;
    for (int i = 0; i < 2; ++i) {
        io_threads.emplace_back([&] { fx.ioc.run(); });
    }
    ck::key const k{"src", "db"};
    for (int i = 1; i <= 2000; ++i) {
        f.update(k, std::to_string(i));
    }
    auto const deadline = std::chrono::steady_clock::now() + 60s; // safety net only
    while (f.durable_seq(k).value_or("") != "2000" && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(2ms);
    }
    f.stop();
    for (auto& t : io_threads) {
        t.join();
    }
    BOOST_TEST(finished.load());
    BOOST_TEST(f.durable_seq(k).value_or("") == "2000");
    BOOST_TEST(fx.store->get(k)->seq_json == "2000");
    // Durable positions only ever move forward, one key per batch.
    int last = 0;
    for (auto const& b : fx.writer.batches()) {
        BOOST_REQUIRE(b.size() == 1u);
        int seq = std::stoi(b[0].second.seq_json);
        BOOST_TEST(seq > last);
        last = seq;
    }
}

BOOST_AUTO_TEST_SUITE_END()
