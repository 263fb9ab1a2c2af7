// Where the bridge's checkpoints go, and the flusher that writes them.

#include "bridge/app.hpp"
#include "bridge/app_parts.hpp"
#include "bridge/exactly_once.hpp"
#include "bridge/kafka_checkpoints.hpp"
#include "checkpoint/kafka_store.hpp"
#include "checkpoint/store.hpp"
#include "common/version.hpp"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include <pthread.h>
#include <unistd.h>

namespace asio = boost::asio;

namespace bridge {

namespace {

// --delivery exactly-once without --group: the flusher's writer commits
// the records and their checkpoints in one transaction of the producer
// (null otherwise; in group mode bridge/group_transactions.hpp does it).
// `running_fleet` and `flusher` are read when the hooks run.
std::unique_ptr<transaction_writer> open_transaction_writer(config const& cfg, metrics::registry& registry,
                                                            kafka_side& kafka, fleet* const& running_fleet,
                                                            checkpoint::flusher* const& flusher) {
    if (!exactly_once(cfg) || !cfg.group.empty()) {
        return nullptr;
    }
    transaction_writer::hooks hooks;
    hooks.in_flight = [&running_fleet] { return running_fleet != nullptr ? running_fleet->in_flight() : 0; };
    hooks.rewind_all = [&running_fleet](std::function<void()> done) {
        if (running_fleet != nullptr) {
            running_fleet->rewind_all_to_durable(std::move(done));
        } else {
            done();
        }
    };
    hooks.discard_dirty = [&flusher] {
        if (flusher != nullptr) {
            flusher->discard_dirty();
        }
    };
    hooks.on_fatal = [tid = transactional_id(cfg, checkpoint_source(cfg))](std::string const& why) {
        spdlog::critical("exactly-once: the Kafka producer failed for good ({}). If another bridge with "
                         "transactional id '{}' started, it has taken over and this one was fenced. Exiting "
                         "without writing anything else; records not committed are invisible to read_committed "
                         "consumers and will be published by the bridge that resumes from the checkpoints",
                         why, tid);
        spdlog::default_logger()->flush();
        ::_exit(3);
    };
    return std::make_unique<transaction_writer>(*kafka.producer, *kafka.started.positions, std::move(hooks), registry,
                                                std::chrono::seconds(60));
}

checkpoint::position_writer& writer_of(kafka_side& kafka, checkpoint_side& c) {
    if (c.txn_writer) {
        return *c.txn_writer;
    }
    if (kafka.started.positions) {
        return *kafka.started.positions;
    }
    return c.rocksdb_writer;
}

checkpoint::positions& positions_of(kafka_side& kafka) {
    if (kafka.started.positions) {
        return *kafka.started.positions;
    }
    return *kafka.store;
}

} // namespace

checkpoint_side::checkpoint_side(config const& cfg, metrics::registry& registry, kafka_side& kafka)
    : rocksdb_writer(*kafka.store, kafka.cluster_of, kafka.cluster),
      memory(*kafka.store, registry),
      txn_writer(open_transaction_writer(cfg, registry, kafka, running_fleet, flusher_ptr)),
      positions(positions_of(kafka)),
      committer(std::make_unique<asio::thread_pool>(1)),
      flusher(flusher_executor(), writer_of(kafka, *this),
              exactly_once(cfg) ? cfg.commit_interval : cfg.checkpoint_interval, registry, common::version) {
    flusher_ptr = &flusher;
    asio::post(*committer, [] { pthread_setname_np(pthread_self(), "ckb-checkpoint"); });
}

checkpoint_side::~checkpoint_side() = default;

asio::any_io_executor checkpoint_side::flusher_executor() { return committer->get_executor(); }

} // namespace bridge
