// Reading an open _changes response: framing (chunked, Content-Length, to
// EOF), rows into the parser, read coalescing, and the responses CouchDB
// writes into an open body. Part of changes_feed (see detail/feed_impl.hpp).
#include "couch/detail/feed_impl.hpp"
#include "metrics/registry.hpp"
#include "couch/detail/http_io.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>

namespace couch {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using namespace std::chrono_literals;
using detail::printable_prefix;
using detail::reason_of;

asio::awaitable<std::size_t> changes_feed::impl::read_some(error_code& ec) {
    co_return co_await detail::read_raw(*conn_, buf_, read_size, ec);
}

// New rows were appended to ready_ from index `before`.
void changes_feed::impl::took_rows(std::size_t before) {
    if (ready_.size() == before) {
        return;
    }
    auto const n = ready_.size() - before;
    status_.rows_read += n;
    probe_.rows.inc(static_cast<double>(n));
    status_.last_row_time = std::chrono::system_clock::now();
    probe_.last_row.set(std::chrono::duration<double>(status_.last_row_time.time_since_epoch()).count());
    for (auto i = ready_.size(); i > before; --i) {
        if (!ready_[i - 1].seq.empty()) {
            position_ = since::from(ready_[i - 1].seq);
            status_.last_seq_read = ready_[i - 1].seq.raw_json();
            break;
        }
    }
}

void changes_feed::impl::parse_error(error_code ec) {
    std::string const msg = where() + ": " + ec.message() + " (" + parser_.error_detail() + ")";
    if (ec == errc::truncated_body) {
        transient("closed", msg);
    } else if (ec == errc::server_error_row) {
        source_->note_error("error_row", msg);
        transient("server_error", msg);
    } else {
        // Reading again would meet the same row: never skip it, show it.
        slow(feed_state::failed, "bad_response", msg);
    }
}

void changes_feed::impl::end_of_response() {
    auto const before = ready_.size();
    auto const ec = parser_.finish(ready_);
    took_rows(before);
    if (ec) {
        parse_error(ec);
        return;
    }
    if (parser_.has_last_seq()) {
        position_ = since::from(parser_.last_seq());
        status_.last_seq_read = parser_.last_seq().raw_json();
        // since=now has just become a real position (the first response
        // of a `now` start carries no rows): publish it, so the owner can
        // checkpoint it and rewind to it instead of to a later "now".
        if (opt_.since.where == since::kind::now && status_.start_seq.empty() && status_.rows_read == 0) {
            status_.start_seq = status_.last_seq_read;
        }
    }
    if (catching_up_ && filtered() && parser_.has_last_seq() &&
        (ready_.empty() || ready_.back().seq.raw_json() != parser_.last_seq().raw_json())) {
        // Filtered-out changes move the position too (see feed_options).
        row r;
        r.seq = parser_.last_seq();
        r.position_only = true;
        ready_.push_back(std::move(r));
    }
    if (parser_.pending()) {
        status_.pending = parser_.pending();
        probe_.pending.set(static_cast<double>(*parser_.pending()));
    }
    if (catching_up_) {
        // A clean batch: go on at once (no db check between batches).
        // The response was read to its end: the next batch (or the
        // continuous feed) goes out on the same connection.
        bool const kept = conn_ && keep_alive_;
        if (kept) {
            client_->keep(ex_, std::move(conn_));
        } else if (conn_) {
            conn_->close();
        }
        response_open_ = false;
        bool const drained = parser_.rows_parsed() < opt_.batch_limit ||
                             (parser_.pending().has_value() && *parser_.pending() == 0);
        if (drained) {
            catching_up_ = false;
        }
        batch_done_ = kept && !drained;
        return;
    }
    if (parser_.ended()) {
        transient("last_seq", "the server ended the continuous feed of " + where() + " with last_seq");
    } else {
        transient("closed", "the server closed the continuous feed of " + where());
    }
}

// Read coalescing (feed_options::read_coalesce, times
// catch_up_coalesce_factor while catching up). Engaged after a read
// that came less than half the interval after the previous one; kept while a
// wait is rewarded with more than one row and fewer bytes than a source of
// 32 MB/s sends in the interval (detail::coalesce_next); never after an
// immediate read of a quarter of the buffer or more (such a source is read
// flat out, so the wait never throttles it).
asio::awaitable<void> changes_feed::impl::coalesce_wait() {
    if (!coalesce_) {
        slept_ = false;
        co_return;
    }
    // On a grid of the interval shared by every feed of the process: the
    // waits of many busy feeds end together, in one wake-up of the loop,
    // rather than one each. Ends between 1/2 and 3/2 of the interval
    // after the previous read.
    using clock = std::chrono::steady_clock;
    auto const grid = std::chrono::duration_cast<clock::duration>(coalesce_interval());
    auto const earliest = (last_read_ + grid / 2).time_since_epoch();
    auto const until = clock::time_point(((earliest + grid - clock::duration(1)) / grid) * grid);
    if (std::chrono::steady_clock::now() < until) {
        quiet_socket(true);
        timer_.expires_at(until);
        error_code ec;
        co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        quiet_socket(false);
    }
    slept_ = true;
}

// No read is pending during a coalescing wait, yet every segment the
// source sends (a CouchDB sends a row per chunk) makes the socket readable
// and wakes the event loop, edge-triggered, for nothing: about one wake-up
// per two rows at 6,000 rows/s, the largest count of all. A receive
// low-water mark keeps the kernel from signalling until that many bytes
// wait (or the peer closes, or an error). 1 MiB is far above what a wait
// gathers below the flat-out rate (32 MB/s x 15 ms), so the timer ends
// every wait; the kernel may grow the receive buffer to hold it. Reset
// before the read: a non-blocking read returns what there is in any case,
// but a read that found nothing must be woken by the next byte. Errors are
// ignored (a closed connection; the mark is only an optimisation).
void changes_feed::impl::quiet_socket(bool quiet) {
    if (!conn_) {
        return;
    }
    constexpr int quiet_low_watermark = 1024 * 1024;
    error_code ignored;
    conn_->tcp().socket().set_option(asio::socket_base::receive_low_watermark(quiet ? quiet_low_watermark : 1),
                                     ignored);
}

std::chrono::microseconds changes_feed::impl::coalesce_interval() const {
    return catching_up_ ? opt_.read_coalesce * opt_.catch_up_coalesce_factor : opt_.read_coalesce;
}

// `rows`: rows parsed from the read (seq_interval rows the parser holds
// back count too).
void changes_feed::impl::coalesce_after_read(std::size_t bytes, std::uint64_t rows) {
    auto const now = std::chrono::steady_clock::now();
    detail::coalesce_read const r{bytes, rows, slept_,
                                  std::chrono::duration_cast<std::chrono::microseconds>(now - last_read_)};
    coalesce_ = coalesce_state_.after_read(r, now, coalesce_interval(), read_size);
    last_read_ = now;
}

bool detail::coalesce_state::after_read(coalesce_read const& r, std::chrono::steady_clock::time_point now,
                                        std::chrono::microseconds interval, std::size_t read_size) {
    if (r.slept && interval.count() > 0 && r.bytes >= coalesce_flat_out_bytes(interval, read_size)) {
        hold_until = now + interval * hold_intervals;
    }
    return now >= hold_until && coalesce_next(r, interval, read_size);
}

std::size_t detail::coalesce_flat_out_bytes(std::chrono::microseconds interval, std::size_t read_size) {
    constexpr std::uint64_t bytes_per_us = 32; // 32 MB/s: 64 KB in the default 2 ms
    auto const us = static_cast<std::uint64_t>(std::max<std::int64_t>(interval.count(), 0));
    return static_cast<std::size_t>(std::min<std::uint64_t>(read_size, us * bytes_per_us));
}

bool detail::coalesce_next(coalesce_read const& r, std::chrono::microseconds interval, std::size_t read_size) {
    if (interval.count() <= 0) {
        return false;
    }
    if (r.slept) {
        // A wait gathers the interval's rows: only more than a source of
        // 32 MB/s sends in it (a full read while catching up, 10 ms) says
        // the source outruns the waits. A fixed quarter of the buffer was
        // crossed by 6,000 rows/s of 1.5 KB in a 10 ms wait, and the feed
        // then alternated between waited and immediate reads.
        return r.bytes < coalesce_flat_out_bytes(interval, read_size) && r.rows >= 2;
    }
    // Flat out: a source this fast fills the buffer while we work.
    if (r.bytes >= read_size / 4) {
        return false;
    }
    // Rows at least twice as often as the interval: a wait pays.
    return r.rows > 0 && r.since_previous < interval / 2;
}

asio::awaitable<void> changes_feed::impl::read_body() {
    auto const gen = generation_;
    std::optional<std::size_t> read_bytes;
    if (buf_.size() == 0) {
        co_await coalesce_wait();
        throw_if_stopped();
        if (gen != generation_) {
            co_return;
        }
        conn_->tcp().expires_after(catching_up_ ? opt_.request_timeout : 2 * opt_.heartbeat);
        error_code ec;
        auto const n = co_await read_some(ec);
        throw_if_stopped();
        if (gen != generation_) {
            co_return;
        }
        read_bytes = n;
        status_.bytes_read += n;
        probe_.bytes.inc(static_cast<double>(n));
        if (ec) {
            if (ec == http::error::end_of_stream || ec == asio::error::eof) {
                if (framing_ == framing::eof) {
                    end_of_response();
                    co_return;
                }
            }
            if (ec == beast::error::timeout) {
                transient("stall", "no bytes for " + std::to_string((2 * opt_.heartbeat).count()) +
                                       " ms from " + where() + " (watchdog)");
            } else {
                auto const before = ready_.size();
                // Rows completed before the close are good; a partial one is re-read.
                if (parser_.kind() == feed_kind::continuous) {
                    parser_.finish(ready_);
                    took_rows(before);
                }
                transient("closed", "connection to " + where() + " lost: " + ec.message());
            }
            co_return;
        }
    }
    auto const data = buf_.cdata();
    std::string_view in(static_cast<char const*>(data.data()), data.size());
    auto const before = ready_.size();
    auto const parsed_before = parser_.rows_parsed();
    error_code ec;
    bool end = false;
    if (framing_ == framing::chunked) {
        while (!in.empty() && !decoder_.done()) {
            std::string_view piece;
            if (auto dec = decoder_.next(in, piece)) {
                std::string stray;
                if (dec == errc::chunk_size_not_hex) {
                    stray.assign(in.substr(0, max_stray_bytes));
                }
                buf_.consume(buf_.size());
                took_rows(before);
                if (dec == errc::chunk_size_not_hex) {
                    co_await stray_response(std::move(stray), gen);
                } else {
                    transient("bad_response", where() + ": " + dec.message());
                }
                co_return;
            }
            if (!piece.empty() && (ec = parser_.feed(piece, ready_))) {
                break;
            }
        }
        end = decoder_.done();
    } else if (framing_ == framing::length) {
        auto const n = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), body_left_));
        ec = parser_.feed(in.substr(0, n), ready_);
        body_left_ -= n;
        end = body_left_ == 0;
    } else {
        ec = parser_.feed(in, ready_);
    }
    buf_.consume(buf_.size());
    took_rows(before);
    if (read_bytes) {
        coalesce_after_read(*read_bytes, parser_.rows_parsed() - parsed_before);
    }
    if (ec) {
        parse_error(ec);
        co_return;
    }
    if (end) {
        end_of_response();
    }
}



// The server wrote something that is not a chunk-size line into the open
// chunked body: CouchDB does this with a whole second response (a 404
// when the database was deleted under the feed, recording 06k; 5xx
// answers when it runs out of file handles). Reads that response (bounded
// in bytes and time) and decides by its status; never concludes "missing"
// by itself (see the class comment).
asio::awaitable<void> changes_feed::impl::stray_response(std::string data, std::uint64_t gen) {
    constexpr std::string_view http_prefix = "HTTP/";
    auto const deadline = std::chrono::steady_clock::now() + std::min<std::chrono::milliseconds>(2s, opt_.request_timeout);
    http::response_parser<http::string_body> p;
    p.eager(true);
    p.body_limit(max_stray_bytes);
    bool is_response = true;
    std::string const shown = printable_prefix(data);
    bool prefix_checked = false;
    for (;;) {
        if (!prefix_checked) {
            auto const n = std::min(data.size(), http_prefix.size());
            if (std::string_view(data).substr(0, n) != http_prefix.substr(0, n)) {
                is_response = false;
                break;
            }
            prefix_checked = n == http_prefix.size();
        }
        if (prefix_checked) {
            error_code pec;
            auto const used = p.put(asio::buffer(data), pec);
            data.erase(0, used);
            if (!pec || p.is_done() || pec != http::error::need_more) {
                break;
            }
        }
        if (data.size() >= max_stray_bytes || std::chrono::steady_clock::now() >= deadline) {
            break;
        }
        conn_->tcp().expires_at(deadline);
        error_code rec;
        co_await read_some(rec);
        throw_if_stopped();
        if (gen != generation_) {
            co_return;
        }
        auto const more = buf_.cdata();
        data.append(static_cast<char const*>(more.data()), more.size());
        buf_.consume(buf_.size());
        if (rec && data.empty()) {
            break;
        }
        if (rec) {
            // Parse what came before the close, then stop.
            if (prefix_checked || data.size() >= http_prefix.size()) {
                continue;
            }
            break;
        }
    }
    if (!is_response) {
        std::string const msg = where() + ": the server wrote bytes that are no chunk-size line into the open "
                                          "feed ('" + shown + "')";
        source_->note_error("in_body_response", msg);
        transient("bad_response", msg);
        co_return;
    }
    if (!p.is_header_done()) {
        std::string const msg = where() + ": the server wrote an incomplete HTTP response into the open feed ('" +
                                shown + "')";
        source_->note_error("in_body_response", msg);
        transient("bad_response", msg);
        co_return;
    }
    unsigned const status = p.get().result_int();
    std::string const body = p.get().body();
    std::string const msg = "the server wrote an HTTP " + std::to_string(status) +
                            " response into the open feed of " + where() + ": " + reason_of(body);
    if (status >= 500) {
        auto reason = classify_server_error(status, body);
        source_->note_error("in_body_response", msg);
        if (reason != "http_5xx") {
            source_->note_error(reason, msg);
        }
        transient("in_body_response", msg);
    } else if (status == 404) {
        // Maybe deleted (06k), maybe not: GET /{db} decides before the
        // next _changes request.
        suspect_missing_ = true;
        transient("in_body_response", msg + " (checking whether the database still exists)");
    } else {
        source_->note_error("in_body_response", msg);
        transient("in_body_response", msg);
    }
}

} // namespace couch
