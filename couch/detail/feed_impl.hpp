#pragma once

// The state of one changes_feed, shared by the files that implement it:
// couch/changes_feed.cpp (states, errors, the session, the public calls),
// couch/changes_feed_open.cpp (opening a response), couch/changes_feed_read.cpp
// (reading and parsing a response) and couch/changes_feed_db_check.cpp
// (GET /{db}: missing and recreated databases). Private to them.

#include "couch/changes_feed.hpp"
#include "couch/changes_parser.hpp"
#include "couch/client.hpp"
#include "couch/detail/feed_probe.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace couch {

namespace detail {

// Read coalescing's decision after a read (see changes_feed::impl::
// coalesce_wait): whether the next read waits. `slept`: this read came after
// a coalescing wait; `since_previous`: time since the previous read.
struct coalesce_read {
    std::size_t bytes = 0;
    std::uint64_t rows = 0; // rows parsed from the read
    bool slept = false;
    std::chrono::microseconds since_previous{0};
};
bool coalesce_next(coalesce_read const& r, std::chrono::microseconds interval, std::size_t read_size);
// The bytes after which a read that followed a wait counts as flat out:
// what a source of 32 MB/s sends in `interval`, at most a full read.
std::size_t coalesce_flat_out_bytes(std::chrono::microseconds interval, std::size_t read_size);

// coalesce_next() with a memory: a wait whose read came back flat out was
// lost (the source outran it while the loop slept), and the feed then reads
// at once for hold_intervals intervals. At full speed the loop drains the
// socket at each catch-up batch's start, whose first reads are small and
// close together: without the hold, a wait of 5-15 ms for most batches of
// 2,000 rows, while rows piled up (docs/BENCHMARKS.md, issue 16, lever 13).
struct coalesce_state {
    static constexpr int hold_intervals = 100;
    std::chrono::steady_clock::time_point hold_until{};

    // Whether the read after `r`, which ended at `now`, waits.
    bool after_read(coalesce_read const& r, std::chrono::steady_clock::time_point now,
                    std::chrono::microseconds interval, std::size_t read_size);
};

} // namespace detail

struct changes_feed::impl {
    impl(boost::asio::any_io_executor ex, std::shared_ptr<client> cl, feed_options options,
         metrics::registry& registry);

    // --- states and errors (changes_feed.cpp) -------------------------------
    void set_state(feed_state s);
    bool quiet_state() const;
    void note_error(std::string const& reason, std::string msg);
    void drop_connection();
    // A transient problem: reconnect after a jittered exponential backoff.
    void transient(std::string const& reason, std::string msg);
    // A problem an operator must see (auth, missing db, bad data): a visible
    // state, retried every slow_retry.
    void slow(feed_state s, std::string const& reason, std::string msg);
    void throw_if_stopped() const;
    void on_status(unsigned status, std::string const& body);
    void transport_error(boost::system::error_code ec, std::string_view during);
    std::string where() const;
    std::string db_path() const;
    std::string changes_target() const;
    bool filtered() const;
    std::string filter_body() const;

    // --- the session (changes_feed.cpp), opening a response (changes_feed_open.cpp)
    boost::asio::awaitable<bool> ensure_session(std::uint64_t gen);
    boost::asio::awaitable<bool> renew_session(unsigned status, std::uint64_t gen);
    boost::asio::awaitable<void> sleep(std::chrono::milliseconds d);
    // The _changes request for the current position (GET, or POST with a
    // filter's body), authorized.
    boost::beast::http::request<boost::beast::http::string_body> changes_request() const;
    boost::asio::awaitable<void> open();
    // A catch-up batch ended cleanly and another follows: send its request
    // now, on the kept connection, so the server prepares it while the
    // owner publishes the rows just read (open() then only reads the
    // header). Nothing is lost when it cannot: open() sends it as usual.
    boost::asio::awaitable<void> presend();
    void drop_presented();
    boost::asio::awaitable<std::optional<seq>> resolve_now();
    boost::asio::awaitable<std::vector<row>> next();
    void rewind(since from);
    void stop();

    // --- GET /{db} (changes_feed_db_check.cpp) -----------------------------
    boost::asio::awaitable<bool> check_database(std::uint64_t gen);

    // --- reading a response (changes_feed_read.cpp) -------------------------
    void took_rows(std::size_t before);
    void parse_error(boost::system::error_code ec);
    void end_of_response();
    boost::asio::awaitable<void> coalesce_wait();
    // A receive low-water mark on the open response's socket while a
    // coalescing wait lasts (see its comment).
    void quiet_socket(bool quiet);
    void coalesce_after_read(std::size_t bytes, std::uint64_t rows);
    // read_coalesce, times catch_up_coalesce_factor while catching up.
    std::chrono::microseconds coalesce_interval() const;
    boost::asio::awaitable<void> read_body();
    boost::asio::awaitable<void> stray_response(std::string data, std::uint64_t gen);
    boost::asio::awaitable<std::size_t> read_some(boost::system::error_code& ec);

    static constexpr std::size_t max_stray_bytes = 16 * 1024;
    // 256 KiB per read: while catching up a read fills it, and fewer,
    // larger reads mean fewer syscalls and event-loop wake-ups per row (the
    // parser's per-call arena grows with it; see changes_parser).
    static constexpr std::size_t read_size = 256 * 1024;

    enum class framing { chunked, length, eof };

    boost::asio::any_io_executor ex_;
    std::shared_ptr<client> client_;
    feed_options opt_;
    std::shared_ptr<source> source_;
    std::shared_ptr<source::waiter> waiter_; // our place in the source's queue, while waiting
    detail::feed_probe probe_;
    std::unique_ptr<detail::connection> conn_; // the open _changes response's connection
    request_slot slot_;                        // db info and login requests
    boost::beast::flat_buffer buf_;
    chunked_decoder decoder_;
    changes_parser parser_;
    boost::asio::steady_timer timer_;
    framing framing_ = framing::chunked;
    std::uint64_t body_left_ = 0;
    bool response_open_ = false;
    bool keep_alive_ = false; // the open response's connection may serve the next request
    bool catching_up_ = true;
    // Set by a catch-up batch read to its end on a kept connection, until
    // presend() acts on it.
    bool batch_done_ = false;
    // The connection that carries the presend() request, for that target
    // and generation; open() uses it only if both still hold.
    std::unique_ptr<detail::connection> presented_;
    std::string presented_target_;
    std::uint64_t presented_generation_ = 0;
    bool need_db_check_ = true;
    bool suspect_missing_ = false;   // a 404 from _changes or inside its body; GET /{db} decides
    bool confirmed_missing_ = false; // GET /{db} answered 404 (cleared when it is back and the same)
    bool recreated_ = false;         // sticky until rewind(): refuse to follow
    bool stopped_ = false;
    bool renewed_ = false;
    bool connected_ = false;
    std::chrono::steady_clock::time_point connected_at_;
    // Read coalescing state (see coalesce_wait).
    std::chrono::steady_clock::time_point last_read_;
    detail::coalesce_state coalesce_state_;
    bool coalesce_ = false;
    bool slept_ = false;
    since position_;
    std::vector<row> ready_;
    std::chrono::milliseconds backoff_;
    std::chrono::milliseconds wait_{0};
    std::uint64_t generation_ = 0;
    std::string cookie_;       // the session cookie this feed sends (cookie auth)
    std::string tls_rejected_; // why the last handshake refused the server's certificate
    std::mt19937_64 rng_;
    feed_status status_;
    std::function<void(feed_state)> on_state_change_;
};

} // namespace couch
