#include "checkpoint/kafka_store.hpp"

#include "kafka/error.hpp"
#include "kafka/producer.hpp"
#include "kafka/topic_reader.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <thread>

namespace checkpoint {

std::string encode_record_key(key const& k) {
    boost::json::array a;
    a.emplace_back(k.source);
    a.emplace_back(k.database);
    return boost::json::serialize(a);
}

std::optional<key> decode_record_key(std::string_view raw) {
    boost::system::error_code ec;
    auto v = boost::json::parse(raw, ec);
    if (ec || !v.is_array()) {
        return std::nullopt;
    }
    auto const& a = v.get_array();
    if (a.size() != 2 || !a[0].is_string() || !a[1].is_string() || a[1].get_string().empty()) {
        return std::nullopt;
    }
    return key{std::string(a[0].get_string()), std::string(a[1].get_string())};
}

std::string encode_record_value(position const& p, std::vector<std::string> const& shard_uuids) {
    boost::json::object o;
    o["seq_json"] = p.seq_json;
    o["written_unix_ms"] = p.written_unix_ms;
    o["bridge_version"] = p.bridge_version;
    if (!shard_uuids.empty()) {
        boost::json::array u;
        for (auto const& s : shard_uuids) {
            u.emplace_back(s);
        }
        o["shard_uuids"] = std::move(u);
    }
    return boost::json::serialize(o);
}

position decode_record_value(std::string_view raw) { return decode_position(raw); }

void ensure_checkpoint_topic(kafka::producer& producer, std::string const& topic, int replication) {
    if (producer.missing_topics({topic}, std::chrono::seconds(30)).empty()) {
        return;
    }
    if (auto ec = producer.create_topics({topic}, 1, replication, std::chrono::seconds(30),
                                         {{"cleanup.policy", "compact"}})) {
        throw std::runtime_error("cannot create the checkpoint topic " + topic + ": " + ec.message());
    }
    spdlog::info("created the checkpoint topic {} (1 partition, compacted, replication {})", topic, replication);
}

kafka_store::kafka_store(kafka::producer& producer, kafka_store_options options)
    : producer_(producer), options_(std::move(options)) {}

std::unique_ptr<kafka_store> kafka_store::open(kafka::producer& producer, std::string const& bootstrap_servers,
                                               std::vector<std::pair<std::string, std::string>> const& properties,
                                               kafka_store_options options) {
    std::unique_ptr<kafka_store> s(new kafka_store(producer, std::move(options)));
    s->bootstrap_servers_ = bootstrap_servers;
    s->properties_ = properties;
    s->reload();
    return s;
}

void kafka_store::reload() {
    std::map<key, position> fresh;
    auto report = read_all(fresh);
    spdlog::info("checkpoint topic {}: {} position(s) from {} record(s) ({} tombstone(s), {} skipped)",
                 options_.topic, fresh.size(), report.records, report.tombstones, report.skipped);
    std::lock_guard lock(mutex_);
    positions_ = std::move(fresh);
    report_ = report;
}

load_report kafka_store::loaded() const {
    std::lock_guard lock(mutex_);
    return report_;
}

load_report kafka_store::read_all(std::map<key, position>& out) const {
    load_report report;
    auto const& topic = options_.topic;
    try {
        kafka::read_topic(
            kafka::topic_reader_config{bootstrap_servers_, properties_}, topic,
            [&](kafka::stored_record&& r) {
                ++report.records;
                auto k = decode_record_key(r.key);
                if (!k) {
                    ++report.skipped;
                    spdlog::warn("checkpoint topic {}: skipping the record at offset {}: its key is not "
                                 "[\"source\",\"database\"] (a foreign or corrupt record)",
                                 topic, r.offset);
                    return;
                }
                if (!r.value) {
                    ++report.tombstones;
                    out.erase(*k);
                    return;
                }
                try {
                    out[*k] = decode_record_value(*r.value);
                } catch (std::invalid_argument const& e) {
                    ++report.skipped;
                    spdlog::warn("checkpoint topic {}: skipping the record of database {} at offset {}: {}", topic,
                                 k->database, r.offset, e.what());
                }
            },
            options_.timeout);
    } catch (std::exception const& e) {
        throw store_error(store_errc::io, std::string("checkpoint topic ") + topic + " cannot be read: " + e.what());
    }
    return report;
}

std::optional<position> kafka_store::get(key const& k) const {
    std::lock_guard lock(mutex_);
    auto it = positions_.find(k);
    if (it == positions_.end()) {
        return std::nullopt;
    }
    return it->second;
}

std::vector<std::pair<key, position>> kafka_store::list() const {
    std::lock_guard lock(mutex_);
    return {positions_.begin(), positions_.end()};
}

kafka::record kafka_store::make_record(key const& k, position const& p) const {
    kafka::record r;
    r.topic = options_.topic;
    r.key = encode_record_key(k);
    r.value = encode_record_value(p, options_.shard_uuids ? options_.shard_uuids(p.seq_json)
                                                          : std::vector<std::string>{});
    return r;
}

void kafka_store::committed(std::vector<std::pair<key, position>> const& entries) {
    std::lock_guard lock(mutex_);
    for (auto const& [k, p] : entries) {
        positions_[k] = p;
    }
    last_error_.clear();
}

boost::system::error_code kafka_store::write(std::vector<std::pair<key, position>> const& entries) {
    std::vector<kafka::record> records;
    records.reserve(entries.size());
    for (auto const& [k, p] : entries) {
        if (!is_valid_seq_json(p.seq_json)) {
            std::lock_guard lock(mutex_);
            last_error_ = "not a seq: " + p.seq_json;
            return make_error_code(store_errc::invalid_value);
        }
        records.push_back(make_record(k, p));
    }
    if (auto ec = produce_and_wait(records)) {
        return ec;
    }
    committed(entries);
    return {};
}

boost::system::error_code kafka_store::erase(key const& k) {
    kafka::record r;
    r.topic = options_.topic;
    r.key = encode_record_key(k);
    r.tombstone = true; // a null value: compaction forgets the key
    if (auto ec = produce_and_wait({r})) {
        return ec;
    }
    std::lock_guard lock(mutex_);
    positions_.erase(k);
    return {};
}

void kafka_store::stop_by(std::chrono::steady_clock::time_point deadline) {
    stop_by_.store(deadline.time_since_epoch().count(), std::memory_order_relaxed);
}

std::string kafka_store::last_error_detail() const {
    std::lock_guard lock(mutex_);
    return last_error_;
}

boost::system::error_code kafka_store::produce_and_wait(std::vector<kafka::record> const& records) {
    struct shared_state {
        std::mutex mutex;
        std::condition_variable cv;
        std::size_t pending = 0;
        boost::system::error_code first_error;
    };
    auto st = std::make_shared<shared_state>();
    using clock = std::chrono::steady_clock;
    auto const own_deadline = clock::now() + options_.timeout;
    // Read again at each look: stop_by() may be called while this waits.
    auto const deadline = [&] {
        return std::min(own_deadline, clock::time_point(clock::duration(stop_by_.load(std::memory_order_relaxed))));
    };
    for (auto const& r : records) {
        for (;;) {
            {
                std::lock_guard lock(st->mutex);
                ++st->pending;
            }
            auto ec = producer_.try_produce(r, boost::asio::system_executor(), [st](kafka::delivery_report const& rep) {
                std::lock_guard lock(st->mutex);
                if (rep.ec && !st->first_error) {
                    st->first_error = rep.ec;
                }
                --st->pending;
                st->cv.notify_all();
            });
            if (!ec) {
                break;
            }
            {
                std::lock_guard lock(st->mutex);
                --st->pending;
            }
            if (!kafka::producer::is_queue_full(ec) || clock::now() >= deadline()) {
                std::lock_guard lock(mutex_);
                last_error_ = "cannot produce to " + options_.topic + ": " + ec.message();
                return ec;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    // The reports are served here too: the event loop may be the very
    // thread that waits (shutdown's last flush) or not run yet (startup).
    for (;;) {
        {
            std::unique_lock lock(st->mutex);
            if (st->pending == 0 || clock::now() >= deadline()) {
                break;
            }
        }
        producer_.serve_reports(std::chrono::milliseconds(10));
        std::unique_lock lock(st->mutex);
        st->cv.wait_for(lock, std::chrono::milliseconds(1), [&] { return st->pending == 0; });
    }
    std::unique_lock lock(st->mutex);
    if (st->pending != 0) {
        std::lock_guard elock(mutex_);
        last_error_ = clock::now() < own_deadline
                          ? std::string("the checkpoint records were not acknowledged before the shutdown deadline "
                                        "(are the brokers reachable?)")
                          : "the checkpoint records were not acknowledged within " +
                                std::to_string(options_.timeout.count()) + " ms (are the brokers reachable?)";
        return make_error_code(store_errc::io);
    }
    if (st->first_error) {
        std::lock_guard elock(mutex_);
        last_error_ = "writing to " + options_.topic + " failed: " + st->first_error.message();
        return st->first_error;
    }
    return {};
}

} // namespace checkpoint
