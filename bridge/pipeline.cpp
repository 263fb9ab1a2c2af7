#include "bridge/pipeline.hpp"

#include "bridge/change_meta.hpp"
#include "bridge/pipeline_probe.hpp"
#include "kafka/error.hpp"
#include "kafka/producer.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

namespace asio = boost::asio;

namespace bridge {

namespace {

double unix_seconds(std::chrono::system_clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

} // namespace

pipeline::pipeline(asio::any_io_executor pool, couch::client_config client, couch::feed_options feed,
                   checkpoint::key key, std::optional<std::string> checkpoint_seq, window_limits limits,
                   dependencies deps, std::shared_ptr<couch::source> source)
    : pipeline(pool, std::make_shared<couch::client>(pool, std::move(client), std::move(source), &deps.registry),
               std::move(feed), std::move(key), std::move(checkpoint_seq), limits, deps) {}

pipeline::pipeline(asio::any_io_executor pool, std::shared_ptr<couch::client> client, couch::feed_options feed,
                   checkpoint::key key, std::optional<std::string> checkpoint_seq, window_limits limits,
                   dependencies deps)
    : strand_(asio::make_strand(pool)),
      initial_since_(feed.since),
      feed_(strand_, std::move(client), std::move(feed), deps.registry),
      key_(std::move(key)),
      limits_(limits),
      deps_(deps),
      probe_(std::make_unique<probe>(deps.registry, key_.database)),
      committed_(checkpoint_seq),
      start_seq_(std::move(checkpoint_seq)),
      window_timer_(strand_),
      status_timer_(strand_) {
    if (deps_.memory != nullptr) {
        deps_.flusher.write_first(*deps_.memory);
    }
    status_.database = key_.database;
    status_.state = "connecting";
    if (committed_) {
        status_.checkpoint_seq = *committed_;
    }
    // A state change shows in status() at once, not at the next tick: the
    // fleet gives a caught-up feed's place to a waiting database as soon as
    // it sees it `following` (fleet_idle.cpp). Both run on the strand.
    feed_.on_state_change([this](couch::feed_state st) {
        feed_state_ = st;
        refresh_status();
    });
    lane_ = &deps_.producer;
}

pipeline::~pipeline() { feed_.on_state_change({}); }

void pipeline::stop() {
    if (stop_requested_.exchange(true)) {
        return;
    }
    asio::post(strand_, [this] {
        stopping_ = true;
        feed_.stop();
        window_timer_.cancel();
        status_timer_.cancel();
    });
}

std::size_t pipeline::in_flight() const { return in_flight_atomic_.load(std::memory_order_relaxed); }

metrics::counter& pipeline::published_counter(std::string_view topic) {
    auto it = published_by_topic_.find(topic);
    if (it != published_by_topic_.end()) {
        return *it->second;
    }
    auto& c = deps_.registry.add_counter("couch_bridge_records_published_total",
                                         "Records acknowledged by Kafka, by database and topic",
                                         {{"database", key_.database}, {"topic", std::string(topic)}});
    published_by_topic_.emplace(std::string(topic), &c);
    return c;
}

// A database without a checkpoint that starts from `now`: learn what "now"
// is and write it durably before any row is handed out, so that neither a
// crash nor a stop (with or without rows in between) can make the next start
// resolve a later "now" and skip what was written meanwhile. False when
// stopped first.
asio::awaitable<bool> pipeline::pin_now_start() {
    std::optional<couch::seq> start;
    try {
        start = co_await feed_.resolve_now();
    } catch (boost::system::system_error const& e) {
        if (stopping_ || e.code() == asio::error::operation_aborted) {
            co_return false;
        }
        throw;
    }
    if (!start) {
        co_return !stopping_;
    }
    committed_ = start->raw_json();
    deps_.flusher.update(key_, *committed_);
    auto delay = std::chrono::milliseconds(500);
    for (;;) {
        // One synchronous durable write (an fsync) for this database, once in
        // its life: the only time a pipeline waits for the store.
        auto const ec = deps_.flusher.flush_now();
        if (!ec) {
            break;
        }
        spdlog::error("db {}: cannot store the start position {} (since=now): {}; not reading until it is stored",
                      key_.database, *committed_, ec.message());
        failure_ = "cannot store the start position: " + ec.message();
        failure_time_ = std::chrono::system_clock::now();
        asio::steady_timer t(strand_, delay);
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        if (stopping_) {
            co_return false;
        }
        delay = std::min(delay * 2, std::chrono::milliseconds(30000));
    }
    spdlog::info("db {}: since=now resolved to {}; stored durably before reading on", key_.database, *committed_);
    co_return !stopping_;
}

asio::awaitable<void> pipeline::run() {
    asio::co_spawn(strand_, status_ticker(), [this](std::exception_ptr) {
        ticker_done_.store(true); // see quiescent(): the owner may destroy the pipeline after this
    });
    std::mt19937 jitter{std::random_device{}()};
    if (!committed_ && initial_since_.where == couch::since::kind::now) {
        if (!co_await pin_now_start()) {
            refresh_status();
            co_return;
        }
    }
    while (!stopping_) {
        if (rewind_pending_) {
            // A delivery failed: wait, then read again from the last position
            // that Kafka acknowledged. Everything after it is sent again
            // (at-least-once), nothing is skipped.
            rewind_pending_ = false;
            auto delay = retry_delay_;
            std::uniform_int_distribution<long> spread(0, delay.count() / 4 + 1);
            delay += std::chrono::milliseconds(spread(jitter));
            spdlog::warn("db {}: rewinding to checkpoint {} in {} ms after a delivery failure: {}", key_.database,
                         committed_ ? *committed_ : std::string("(start)"), delay.count(), failure_);
            asio::steady_timer t(strand_, delay);
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
            if (stopping_) {
                break;
            }
            release_lease(); // the open group is abandoned with its generation
            watermark_.reset();
            outstanding_.clear();
            if (committed_) {
                feed_.rewind(couch::since::from(couch::seq::from_raw_json(*committed_)));
            } else {
                // Nothing acknowledged yet. A `now` start that has resolved
                // was checkpointed below, so committed_ is set then; here
                // "now" never resolved, hence no row was read either.
                feed_.rewind(initial_since_);
            }
            probe_->rewinds.inc();
        }

        // Back-pressure: do not read while the window is full.
        if (in_flight_records_ >= limits_.max_records || in_flight_bytes_ >= limits_.max_bytes) {
            probe_->backpressure.inc();
            while (!stopping_ && !rewind_pending_ &&
                   (in_flight_records_ >= limits_.max_records || in_flight_bytes_ >= limits_.max_bytes)) {
                window_timer_.expires_after(std::chrono::seconds(1));
                co_await window_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            continue;
        }

        auto generation = generation_;
        std::vector<couch::row> rows;
        try {
            rows = co_await feed_.next();
        } catch (boost::system::system_error const& e) {
            if (stopping_ || e.code() == asio::error::operation_aborted) {
                break;
            }
            throw;
        }
        if (stopping_) {
            break;
        }
        if (generation != generation_ || rewind_pending_) {
            // Rows read before a rewind decision are dropped: they are read
            // again from the checkpoint.
            continue;
        }
        co_await publish(std::move(rows), generation);
    }
    release_lease();
    refresh_status();
}

asio::awaitable<bool> pipeline::choose_lane(std::uint64_t generation) {
    auto* const want = deps_.catch_up != nullptr && feed_state_ == couch::feed_state::catching_up ? deps_.catch_up
                                                                                                   : &deps_.producer;
    if (want == lane_) {
        co_return true;
    }
    // Two producers keep no order between them: a record of the new lane
    // could overtake one of the same key still queued in the old lane. So
    // the old lane is drained first (one linger and a round trip, once per
    // catch-up).
    write_memory(); // acknowledgements may move the checkpoint while we wait
    while (in_flight_records_ > 0) {
        window_timer_.expires_after(std::chrono::seconds(1));
        co_await window_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (generation != generation_ || stopping_) {
            co_return false;
        }
    }
    lane_ = want;
    probe_->lane_switches.inc();
    spdlog::debug("db {}: records go to the {} producer now", key_.database,
                  lane_ == deps_.catch_up ? "catch-up" : "following");
    co_return true;
}

asio::awaitable<void> pipeline::publish(std::vector<couch::row> rows, std::uint64_t generation) {
    // The rows were parsed from the socket just before (feed_.next() hands
    // them out as soon as a read completes them): the start of their
    // latency, which includes any wait for the exactly-once gate below.
    auto const read_at = std::chrono::steady_clock::now();
    if (!co_await choose_lane(generation)) {
        co_return;
    }
    auto& producer = *lane_;
    // Exactly-once: a batch lands in one transaction with the checkpoint
    // that covers it, so the commit waits for the batches under way and new
    // batches wait while it commits (without transactions the gate is
    // always open).
    if (!lease_held_) {
        while (!deps_.producer.enter_batch()) {
            co_await deps_.producer.wait_for_gate();
            if (generation != generation_ || stopping_) {
                co_return;
            }
        }
        lease_held_ = true;
    }
    struct batch_lease {
        pipeline& self;
        bool keep = false;
        ~batch_lease() {
            if (!keep) {
                self.release_lease();
            }
        }
    } lease{*this};
    auto const now = std::chrono::system_clock::now();

    // Tickets, in feed order. A row without a seq (CouchDB's seq_interval
    // leaves most rows' seq null) belongs to the ticket of the next row that
    // has one: that ticket is done only when all rows of its group are. Each
    // ticket starts with one "guard" count, released once the row carrying
    // the seq has been handled, so a group never completes early while a
    // produce call of the same group is waiting for queue space.
    std::vector<checkpoint::watermark::ticket> row_ticket(rows.size());
    {
        std::size_t group_begin = 0;
        for (std::size_t i = 0; i < rows.size(); ++i) {
            if (!rows[i].seq.empty() || i + 1 == rows.size()) {
                auto t = watermark_.push(rows[i].seq.raw_json());
                outstanding_[t] = 1;
                for (auto j = group_begin; j <= i; ++j) {
                    row_ticket[j] = t;
                }
                group_begin = i + 1;
            }
        }
    }

    kafka::record rec;
    rec.headers = {{"database", key_.database}, {"seq", {}}, {"rev", {}}};
    for (std::size_t i = 0; i < rows.size(); ++i) {
        auto& row = rows[i];
        if (generation != generation_ || stopping_) {
            co_return;
        }
        if (deps_.may_publish && !deps_.may_publish()) {
            // Group mode: this process was paused and its databases may
            // belong to another instance now; publish nothing until the group
            // says (revoked: the fleet stops this pipeline).
            spdlog::warn("db {}: holding records until the group confirms this instance still owns the database",
                         key_.database);
            while (!deps_.may_publish()) {
                asio::steady_timer t(strand_, std::chrono::milliseconds(50));
                co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                if (generation != generation_ || stopping_) {
                    co_return;
                }
            }
        }
        auto const ticket = row_ticket[i];
        bool const ends_group = i + 1 == rows.size() || row_ticket[i + 1] != ticket;
        if (row.position_only) {
            // Only a position (filtered-out changes): nothing to publish.
            if (ends_group) {
                release(ticket);
            }
            continue;
        }
        ++rows_read_;
        auto meta = make_change_meta(row, key_.database, now);
        std::string forget_id;
        if (deps_.memory != nullptr) {
            if (row.deleted && !meta.document_type) {
                // A hard delete: route it like the document it was (which
                // may be earlier in this very batch: hand those over first).
                write_memory();
                if (auto m = deps_.memory->recall(key_, row.id)) {
                    meta.document_type = m->doc_type;
                    if (!m->domain.empty()) {
                        meta.domain = m->domain;
                    }
                    forget_id = row.id;
                    probe_->tombstones_recalled.inc();
                } else {
                    probe_->tombstones_unknown.inc();
                }
            } else if (!row.deleted && meta.document_type) {
                memo_.emplace_back(row.id,
                                   checkpoint::store::remembered{*meta.document_type, meta.domain.value_or("")});
            }
        } else if (row.deleted && !meta.document_type) {
            probe_->tombstones_unknown.inc();
        }
        auto decision = deps_.routes.route(row, meta);
        auto const& opts = deps_.options;
        bool const filtered = decision.skipped == skip_reason::none && filtered_out(meta);
        std::string poison_key;
        bool poisoned = false;
        if (decision.skipped == skip_reason::none && !filtered && opts.on_unpublishable != unpublishable_policy::stop) {
            poison_key = row.id;
            poison_key += '\n';
            poison_key += meta.document_rev.value_or("");
            if (!poison_.empty()) {
                if (auto it = poison_.find(poison_key); it != poison_.end()) {
                    auto error = std::move(it->second);
                    poison_.erase(it);
                    poisoned = true;
                    if (!unpublishable(row, meta, error, row.wire_bytes, ticket, generation)) {
                        co_return;
                    }
                }
            }
        }
        if (poisoned) {
            // Went by policy above.
        } else if (decision.skipped != skip_reason::none || filtered) {
            (filtered                                      ? probe_->skipped_filter
             : decision.skipped == skip_reason::design_doc ? probe_->skipped_design
                                                           : probe_->skipped_no_type)
                .inc();
            ++skipped_;
            spdlog::debug("db {}: skipped {} ({})", key_.database, row.id,
                          filtered ? std::string_view("doc_type_filter") : to_string(decision.skipped));
        } else {
            // One record reused across the batch: assignments keep their
            // capacity, so the steady state allocates nothing here.
            rec.value.clear();
            serialize_payload(meta, opts.payload, row.doc_text, rec.value);
            rec.topic.assign(decision.topic);
            rec.key.assign(row.id);
            rec.headers[1].value.assign(row.seq.raw_json());
            if (meta.document_rev) {
                rec.headers[2].value.assign(*meta.document_rev);
            } else {
                rec.headers[2].value.clear();
            }
            auto const bytes = rec.value.size() + rec.key.size();
            auto const sent = read_at;
            bool produced = true;
            for (;;) {
                auto ec = producer.try_produce(
                    rec, strand_,
                    [this, ticket, generation, bytes, topic = decision.topic, sent, poison_key,
                     forget_id](kafka::delivery_report const& r) {
                        on_delivery(ticket, generation, bytes, topic, sent, r, poison_key, forget_id);
                    });
                if (!ec) {
                    break;
                }
                if (kafka::is_permanent_record_error(ec) && opts.on_unpublishable != unpublishable_policy::stop) {
                    if (!unpublishable(row, meta, "cannot produce to topic " + rec.topic + ": " + ec.message(), bytes,
                                       ticket, generation)) {
                        co_return;
                    }
                    produced = false;
                    break;
                }
                if (kafka::producer::is_queue_full(ec)) {
                    // librdkafka's queue is full: wait for delivery reports, never spin.
                    write_memory(); // acknowledgements may move the checkpoint while we wait
                    co_await producer.wait_for_space();
                    if (stopping_ || generation != generation_) {
                        co_return;
                    }
                    continue;
                }
                if (deps_.producer.transactional() && kafka::is_transaction_busy(ec)) {
                    // A commit outside the periodic one (flush_now) is under
                    // way: the same record goes into the next transaction.
                    write_memory();
                    co_await deps_.producer.wait_for_gate();
                    if (stopping_ || generation != generation_) {
                        co_return;
                    }
                    continue;
                }
                probe_->produce_errors.inc();
                fail_generation("cannot produce to topic " + rec.topic + ": " + ec.message());
                co_return;
            }
            if (produced) {
                ++outstanding_[ticket];
                ++in_flight_records_;
                in_flight_bytes_ += bytes;
                // At once, not at the end of the batch: shutdown (another
                // thread) must never see 0 while this record is unacknowledged.
                in_flight_atomic_.store(in_flight_records_, std::memory_order_relaxed);
            }
        }
        if (ends_group) {
            release(ticket);
        }
    }
    probe_->in_flight.set(static_cast<double>(in_flight_records_));
    probe_->in_flight_bytes.set(static_cast<double>(in_flight_bytes_));
    in_flight_atomic_.store(in_flight_records_, std::memory_order_relaxed);
    if (!rows.empty()) {
        probe_->last_change.set(unix_seconds(now));
    }
    write_memory();
    advance_checkpoint();
    // A batch that ends on rows without a seq (the parser hands out held
    // seq_interval rows early past its byte limit) leaves its group open:
    // the next batch closes it. With transactions the lease is kept until
    // then, so that no commit lands inside the group (its checkpoint could
    // not cover the rows already committed).
    lease.keep = deps_.producer.transactional() && !rows.empty() && rows.back().seq.empty() &&
                 generation == generation_ && !stopping_;
}

void pipeline::release_lease() {
    if (lease_held_) {
        lease_held_ = false;
        deps_.producer.leave_batch();
    }
}

// Before anything can move the checkpoint past a published document (an
// acknowledgement handled while publish() waits, or the end of publish()),
// what it was goes to the memory. The memory only buffers it; the flusher
// writes the buffer to the store before the positions that cover it
// (flusher::write_first). A failure is counted and logged there (or here,
// when a full buffer is written at once): the memory is a cache, and the
// tombstone of that document would go to the default topic.
void pipeline::write_memory() {
    if (memo_.empty() || deps_.memory == nullptr) {
        memo_.clear();
        return;
    }
    if (auto ec = deps_.memory->remember(key_, std::move(memo_))) {
        spdlog::warn("db {}: cannot write the hard-delete memory: {}", key_.database, ec.message());
    }
    memo_.clear();
}

bool pipeline::filtered_out(change_meta const& meta) const {
    auto const& o = deps_.options;
    if (o.include_doc_types.empty() && o.exclude_doc_types.empty()) {
        return false;
    }
    std::string_view const type = meta.document_type ? std::string_view(*meta.document_type) : std::string_view();
    auto const in = [type](std::vector<std::string> const& v) { return std::find(v.begin(), v.end(), type) != v.end(); };
    return (!o.include_doc_types.empty() && !in(o.include_doc_types)) || in(o.exclude_doc_types);
}

bool pipeline::unpublishable(couch::row const& row, change_meta const& meta, std::string const& error,
                             std::size_t size, checkpoint::watermark::ticket ticket, std::uint64_t generation) {
    auto const& o = deps_.options;
    std::string const action = o.on_unpublishable == unpublishable_policy::dlq ? "dlq" : "skip";
    std::string const reason = error.find("too large") != std::string::npos ||
                                       error.find("Message size") != std::string::npos ||
                                       error.find("MSG_SIZE") != std::string::npos
                                   ? "too_large"
                                   : "rejected";
    ++unpublishable_;
    last_unpublishable_ =
        row.id + " (seq " + row.seq.raw_json() + ", " + std::to_string(size) + " bytes): " + error + " -> " + action;
    deps_.registry
        .add_counter("couch_bridge_unpublishable_total",
                     "Records Kafka can never take, by reason and what was done (dlq, skip)",
                     {{"database", key_.database}, {"reason", reason}, {"action", action}})
        .inc();
    spdlog::warn("db {}: a record can never be published: {}", key_.database, last_unpublishable_);
    if (o.on_unpublishable == unpublishable_policy::skip) {
        ++skipped_;
        return true;
    }
    kafka::record d;
    d.topic = o.dlq_topic;
    d.key = row.id;
    serialize(meta, d.value); // the stub, never the document
    d.headers = {{"error", error}, {"database", key_.database}, {"seq", row.seq.raw_json()},
                 {"size", std::to_string(size)}};
    auto const bytes = d.value.size() + d.key.size();
    auto const sent = std::chrono::steady_clock::now();
    std::string_view const topic = o.dlq_topic;
    auto ec = deps_.producer.try_produce(d, strand_, [this, ticket, generation, bytes, topic, sent](kafka::delivery_report const& r) {
        on_delivery(ticket, generation, bytes, topic, sent, r, {}, {});
    });
    if (ec) {
        probe_->produce_errors.inc();
        fail_generation("cannot produce to the dead-letter topic " + o.dlq_topic + ": " + ec.message());
        return false;
    }
    ++outstanding_[ticket];
    ++in_flight_records_;
    in_flight_bytes_ += bytes;
    in_flight_atomic_.store(in_flight_records_, std::memory_order_relaxed);
    return true;
}

unpublishable_policy parse_unpublishable_policy(std::string_view s) {
    if (s == "dlq") {
        return unpublishable_policy::dlq;
    }
    if (s == "skip") {
        return unpublishable_policy::skip;
    }
    if (s == "stop") {
        return unpublishable_policy::stop;
    }
    throw std::invalid_argument("on-unpublishable must be dlq, skip or stop, not '" + std::string(s) + "'");
}

} // namespace bridge
