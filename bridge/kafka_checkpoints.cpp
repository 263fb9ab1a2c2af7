#include "bridge/kafka_checkpoints.hpp"

#include "bridge/app.hpp"

#include "checkpoint/command.hpp"
#include "checkpoint/kafka_store.hpp"
#include "checkpoint/store.hpp"
#include "couch/seq.hpp"
#include "couch/shard_seq.hpp"
#include "kafka/embedded_cluster.hpp"
#include "kafka/presence.hpp"
#include "kafka/producer.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/system_executor.hpp>

#include <spdlog/spdlog.h>

#include <iostream>
#include <thread>

namespace bridge {

namespace {

using namespace std::chrono_literals;

std::vector<std::string> shard_uuids(std::string_view seq_json) {
    std::vector<std::string> out;
    try {
        auto d = couch::decode_shard_seq(couch::seq::from_raw_json(std::string(seq_json)));
        for (auto const& s : d.shards) {
            if (s.has_uuid()) {
                out.push_back(s.range.to_string() + ":" + s.uuid_prefix);
            }
        }
    } catch (std::exception const&) {
        // Not a seq the decoder knows: no uuids (they are informative only).
    }
    return out;
}

checkpoint::kafka_store_options store_options(config const& cfg) {
    checkpoint::kafka_store_options o;
    o.topic = cfg.checkpoint_topic;
    o.shard_uuids = &shard_uuids;
    return o;
}

void migrate(checkpoint::store& local, checkpoint::kafka_store& remote, kafka::producer& producer) {
    std::vector<std::pair<checkpoint::key, checkpoint::position>> todo;
    std::size_t kept = 0;
    for (auto const& [k, p] : local.list()) {
        if (remote.get(k)) {
            ++kept;
        } else {
            todo.emplace_back(k, p);
        }
    }
    if (!todo.empty()) {
        if (producer.transactional()) {
            // The transaction begun at startup is still empty: it carries them.
            for (auto const& [k, p] : todo) {
                if (auto ec = producer.try_produce(remote.make_record(k, p), boost::asio::system_executor(),
                                                   [](kafka::delivery_report const&) {})) {
                    throw std::runtime_error("--checkpoint-migrate: cannot produce the position of " + k.database +
                                             ": " + ec.message());
                }
            }
            if (auto st = producer.commit_transaction(60s); !st.ok()) {
                throw std::runtime_error("--checkpoint-migrate: the transaction did not commit: " + st.message);
            }
            remote.committed(todo);
            if (auto st = producer.begin_transaction(); !st.ok()) {
                throw std::runtime_error("cannot begin a Kafka transaction: " + st.message);
            }
        } else if (auto ec = remote.write(todo)) {
            throw std::runtime_error("--checkpoint-migrate: cannot write to " + remote.topic() + ": " + ec.message() +
                                     ": " + remote.last_error_detail());
        }
    }
    spdlog::info("--checkpoint-migrate: copied {} position(s) from {} into {}; {} the topic already had were kept",
                 todo.size(), local.where(), remote.where(), kept);
}

} // namespace

std::string transactional_id(config const& cfg, std::string const& source) {
    if (!cfg.transactional_id.empty()) {
        return cfg.transactional_id;
    }
    return "couch-kafka-bridge-" + source;
}

std::unique_ptr<checkpoint::kafka_store> open_kafka_checkpoints(config const& cfg, kafka::producer& producer,
                                                                kafka::embedded_cluster* embedded,
                                                                std::string const& bootstrap_servers,
                                                                checkpoint::store& local, bool& transactions_begun) {
    if (embedded != nullptr) {
        embedded->create_topic(cfg.checkpoint_topic, 1); // the mock has neither CreateTopics nor compaction
    } else {
        checkpoint::ensure_checkpoint_topic(producer, cfg.checkpoint_topic, cfg.topic_replication);
    }
    if (producer.transactional() && !transactions_begun) {
        for (int attempt = 1;; ++attempt) {
            auto st = producer.init_transactions(60s);
            if (st.ok()) {
                break;
            }
            if (st.what != kafka::txn_status::kind::retriable || attempt >= 10) {
                throw std::runtime_error("cannot start Kafka transactions (--delivery exactly-once needs brokers "
                                         "with transactions): " +
                                         st.message);
            }
            spdlog::warn("Kafka transactions: init_transactions failed ({}); retrying", st.message);
            std::this_thread::sleep_for(1s);
        }
        if (auto st = producer.begin_transaction(); !st.ok()) {
            throw std::runtime_error("cannot begin a Kafka transaction: " + st.message);
        }
        transactions_begun = true;
        spdlog::info("exactly-once: transactional id ready; an earlier bridge with the same id is fenced");
    }
    auto remote = checkpoint::kafka_store::open(producer, bootstrap_servers, kafka_client_properties(cfg),
                                                store_options(cfg));
    if (cfg.checkpoint_migrate) {
        migrate(local, *remote, producer);
    }
    return remote;
}

std::string checkpoint_owner_group(config const& cfg) {
    return "couch-kafka-bridge-running." + cfg.checkpoint_topic;
}

int run_kafka_checkpoints_command(config const& cfg, std::vector<std::string> const& args) {
    if (cfg.kafka_brokers == "embedded") {
        std::cerr << "checkpoints: --checkpoint-store kafka needs --kafka-brokers (the embedded cluster keeps "
                     "nothing between runs)\n";
        return 1;
    }
    bool const writes = !args.empty() && (args[0] == "set" || args[0] == "delete");
    if (writes) {
        auto const group = checkpoint_owner_group(cfg);
        try {
            if (kafka::group_has_members(cfg.kafka_brokers, kafka_client_properties(cfg), group, 30s)) {
                std::cerr << "checkpoints: refusing to change the checkpoint topic " << cfg.checkpoint_topic
                          << " while a bridge that uses it is running (consumer group " << group
                          << " has members; a bridge killed with -9 stays a member for up to 10 s)\n";
                return 1;
            }
        } catch (std::exception const& e) {
            std::cerr << "checkpoints: cannot tell whether a bridge is running: " << e.what() << '\n';
            return 1;
        }
    }
    boost::asio::io_context ioc;
    auto work = boost::asio::make_work_guard(ioc);
    std::thread loop([&ioc] { ioc.run(); });
    metrics::registry registry;
    int code = 1;
    {
        kafka::producer producer(ioc.get_executor(), {cfg.kafka_brokers, kafka_client_properties(cfg), {}}, registry);
        code = checkpoint::run_checkpoints_command(
            [&]() -> std::unique_ptr<checkpoint::positions> {
                return checkpoint::kafka_store::open(producer, cfg.kafka_brokers, kafka_client_properties(cfg),
                                                     store_options(cfg));
            },
            args, std::cout, std::cerr, {});
        producer.flush(10s);
    }
    work.reset();
    ioc.stop();
    loop.join();
    return code;
}

} // namespace bridge
