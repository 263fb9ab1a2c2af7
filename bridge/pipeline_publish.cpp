// pipeline::publish: a batch of rows read from the feed becomes records
// (ChangeMeta, routed by doc_type), produced with one ticket of the
// watermark per seq; and the choice of the producer (lane) they go to.
#include "bridge/pipeline.hpp"

#include "bridge/change_meta.hpp"
#include "bridge/pipeline_probe.hpp"
#include "kafka/error.hpp"
#include "kafka/producer.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

namespace asio = boost::asio;

namespace bridge {

namespace {

double unix_seconds(std::chrono::system_clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

} // namespace

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
            // One allocation: sized first, no temporary for a missing rev.
            auto const& rev = meta.document_rev;
            poison_key.reserve(row.id.size() + 1 + (rev ? rev->size() : 0));
            poison_key.append(row.id).push_back('\n');
            if (rev) {
                poison_key.append(*rev);
            }
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

} // namespace bridge
