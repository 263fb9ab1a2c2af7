#include "couch/db_updates_feed.hpp"

#include "couch/changes_feed.hpp" // url_encode
#include "couch/databases.hpp"    // couch_reason

namespace couch {

namespace asio = boost::asio;

db_updates_feed::db_updates_feed(http_session& session, std::chrono::milliseconds heartbeat, std::size_t max_row_bytes)
    : session_(session), heartbeat_(heartbeat), parser_(feed_kind::continuous, max_row_bytes) {}

asio::awaitable<db_updates_feed::open_result> db_updates_feed::open(since from) {
    parser_.reset(feed_kind::continuous);
    std::string const target = "/_db_updates?feed=continuous&heartbeat=" + std::to_string(heartbeat_.count()) +
                               "&since=" + url_encode(from.to_query_param());
    auto r = co_await session_.open_stream(target);
    open_result out;
    out.status = r.status;
    if (!r.error.empty()) {
        out.message = r.error;
        co_return out;
    }
    if (r.status == 200) {
        out.outcome = opened::ok;
        co_return out;
    }
    out.message = "GET " + session_.redacted_url() + "/_db_updates: HTTP " + std::to_string(r.status) +
                  (r.body.empty() ? std::string() : ": " + couch_reason(r.body));
    switch (r.status) {
    case 400:
    case 401:
    case 403:
    case 404:
    case 405:
    case 501:
        out.outcome = opened::unsupported;
        break;
    default:
        out.outcome = opened::failed;
        break;
    }
    co_return out;
}

asio::awaitable<db_updates_feed::batch> db_updates_feed::next() {
    batch out;
    while (out.events.empty()) {
        // CouchDB writes heartbeats irregularly (recording 15b: gaps of 1.5 s
        // at heartbeat=500), so the watchdog allows twice the heartbeat and a
        // second's slack.
        auto piece = co_await session_.read_stream(2 * heartbeat_ + std::chrono::seconds(1));
        if (!piece.error.empty()) {
            // Rows completed before the break are good; a partial one is read again.
            out.error = piece.error;
            break;
        }
        if (piece.ended) {
            if (auto ec = parser_.finish()) {
                out.error = "_db_updates from " + session_.redacted_url() + ": " + ec.message();
            }
            out.ended = true;
            break;
        }
        if (auto ec = parser_.feed(piece.data, out.events)) {
            session_.close_stream();
            out.error = "_db_updates from " + session_.redacted_url() + ": " + ec.message() + " (" +
                        parser_.error_detail() + ")";
            break;
        }
        if (parser_.ended()) {
            session_.close_stream();
            out.ended = true;
            break;
        }
    }
    for (auto const& e : out.events) {
        if (!e.seq.empty()) {
            last_seq_ = e.seq;
        }
    }
    if (out.ended && parser_.has_last_seq()) {
        last_seq_ = parser_.last_seq();
    }
    co_return out;
}

} // namespace couch
