// The stop of the bridge: SIGINT/SIGTERM stop reading, wait (bounded) for
// acknowledgements and flush the checkpoints; once the event loop has
// returned, the parts are taken down in the order they depend on each other.

#include "bridge/app_parts.hpp"
#include "bridge/discovery.hpp"
#include "bridge/exit_watchdog.hpp"
#include "bridge/group.hpp"
#include "bridge/group_commands.hpp"
#include "checkpoint/kafka_store.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/producer.hpp"
#include "metrics/http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <unistd.h>

namespace asio = boost::asio;

namespace bridge {

void stop_sequence::wait_for_signal() {
    p_.signals.async_wait([this](boost::system::error_code ec, int sig) {
        if (ec) {
            return;
        }
        first_signal_at_ = std::chrono::steady_clock::now();
        p_.signals.async_wait([this](boost::system::error_code ec2, int sig2) { on_second_signal(ec2, sig2); });
        stopping_ = true;
        // --shutdown-timeout bounds the wait for acknowledgements; the last
        // checkpoint write and leaving the group may take stop_grace more,
        // and whatever is left after that is cut short by the watchdog.
        constexpr auto stop_grace = std::chrono::seconds(3);
        auto const deadline = first_signal_at_ + p_.cfg.shutdown_timeout;
        if (p_.kafka.started.positions) {
            p_.kafka.started.positions->stop_by(deadline + stop_grace);
        }
        if (p_.fleet.group) {
            p_.fleet.group->stop_by(deadline + stop_grace);
        }
        p_.watchdog.arm(deadline + 2 * stop_grace);
        asio::co_spawn(p_.ioc, stop(sig, deadline), asio::detached);
    });
}

// A second signal exits at once. One that arrives within 500 ms of the
// first is taken as the same request delivered twice (`timeout`, a shell
// or a supervisor signalling the whole process group as well as the
// process), not as an operator insisting.
void stop_sequence::on_second_signal(boost::system::error_code ec, int sig) {
    if (ec) {
        return;
    }
    if (std::chrono::steady_clock::now() - first_signal_at_ < std::chrono::milliseconds(500)) {
        p_.signals.async_wait([this](boost::system::error_code ec2, int sig2) { on_second_signal(ec2, sig2); });
        return;
    }
    // Still safe: checkpoints only ever cover acknowledged records.
    spdlog::warn("signal {} again: exiting at once", sig);
    spdlog::default_logger()->flush();
    ::_exit(130);
}

asio::awaitable<void> stop_sequence::stop(int sig, std::chrono::steady_clock::time_point deadline) {
    auto& databases = *p_.fleet.databases;
    auto& flusher = p_.checkpoints.flusher;
    asio::steady_timer t(p_.ioc);
    if (auto* finder = p_.fleet.finder.get()) {
        finder->stop(); // first: it must not start pipelines any more
        for (int i = 0; i < 250 && !finder->stopped() && std::chrono::steady_clock::now() < deadline; ++i) {
            t.expires_after(std::chrono::milliseconds(20));
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
    databases.stop_all();
    std::size_t in_flight = databases.in_flight();
    spdlog::info("signal {}: stopping; waiting up to {} ms for {} in-flight record(s)", sig,
                 p_.cfg.shutdown_timeout.count(), in_flight);
    for (;;) {
        in_flight = databases.in_flight();
        if (in_flight == 0 || std::chrono::steady_clock::now() >= deadline) {
            break;
        }
        t.expires_after(std::chrono::milliseconds(20));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (in_flight > 0) {
        spdlog::warn("shutdown timeout: {} record(s) still unacknowledged; they will be sent again at the "
                     "next start",
                     in_flight);
        exit_code_ = 1;
    }
    // Let the pipelines' last delivery reports reach the flusher.
    t.expires_after(std::chrono::milliseconds(10));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    flusher.stop();
    if (auto fec = flusher.flush_now()) {
        spdlog::error("final checkpoint flush failed: {}", fec.message());
        exit_code_ = 1;
    } else {
        spdlog::info("checkpoints flushed");
    }
    p_.watchdog.set_code(exit_code_);
    p_.kafka.http->stop();
    p_.signals.cancel();
    p_.work.reset();
    p_.ioc.stop();
}

int stop_sequence::finish() {
    // Nothing runs the event loop any more, but coroutines may still wait in
    // it: a pipeline stopped in the middle of a batch (holding its records
    // because the group lease is not valid, or waiting for queue space)
    // holds the producer's batch gate, released by the destructors of its
    // frame. Left to ~io_context, those ran after the producer and the fleet
    // were gone (an abort or a segfault after "stopped (exit 0)"); destroyed
    // here, everything they refer to still exists.
    p_.ioc.shutdown();
    // Leaving the group revokes this member's partitions through the fleet:
    // before the fleet goes.
    auto& f = p_.fleet;
    if (f.group) {
        f.group->drop_assigned_hook(); // an assignment during the stop must not reach `commands`
    }
    f.commands.reset(); // it acts on the fleet for the group
    f.group.reset();
    p_.checkpoints.committer->join(); // the flusher's loop ended with flusher.stop()
    p_.checkpoints.running_fleet = nullptr;
    // The producer goes first: anything it still holds completes into the
    // stopped io_context and is discarded there (never reported as delivered).
    p_.kafka.catch_up_producer.reset();
    p_.kafka.producer.reset();
    p_.kafka.embedded.reset();
    spdlog::info("stopped (exit {})", exit_code_);
    return exit_code_;
}

} // namespace bridge
