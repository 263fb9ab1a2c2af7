// GET /{db} before a feed reads from a position: missing databases (a
// confirmed 404), new incarnations (recreated) and source rewinds. Part of
// changes_feed (see detail/feed_impl.hpp and the rules in changes_feed.hpp).
#include "couch/detail/feed_impl.hpp"
#include "metrics/registry.hpp"
#include "couch/shard_seq.hpp"

#include <boost/beast/http/verb.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

namespace couch {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using detail::reason_of;
using detail::seq_prefix;

// GET /{db} before reading from a position (or after a suspected
// deletion): confirms a deletion (404) and looks for a new incarnation.
// True when the feed may go on and open _changes; false after recording
// why not (or after a rewind()/stop() cut in).
asio::awaitable<bool> changes_feed::impl::check_database(std::uint64_t gen) {
    auto r = co_await client_->exchange(slot_, http::verb::get, db_path(), {}, cookie_, 1u << 20,
                                        opt_.request_timeout);
    throw_if_stopped();
    if (gen != generation_) {
        co_return false;
    }
    if (r.ec) {
        tls_rejected_ = std::move(r.tls_rejected);
        transport_error(r.ec, "reading db info of");
        co_return false;
    }
    if (r.status == 404) {
        // Confirmed: the database does not exist (now).
        suspect_missing_ = false;
        confirmed_missing_ = true;
        slow(feed_state::db_missing, "db_missing",
             "HTTP 404 for " + where() + ": " + reason_of(r.body) + " (the database does not exist)");
        co_return false;
    }
    if (r.status != 200) {
        bool const handled = co_await renew_session(r.status, gen);
        throw_if_stopped();
        if (!handled) {
            on_status(r.status, r.body);
        }
        co_return false;
    }
    suspect_missing_ = false;
    if (recreated_) {
        slow(feed_state::failed, "db_missing",
             where() + " was deleted and re-created; still refusing to follow the new incarnation from seq " +
                 position_.at_seq.raw_json() + " (reset the checkpoint)");
        co_return false;
    }
    if (position_.where == since::kind::at) {
        error_code jec;
        auto info = boost::json::parse(r.body, jec);
        boost::json::value const* us = nullptr;
        if (!jec && info.is_object()) {
            us = info.get_object().if_contains("update_seq");
        }
        if (us != nullptr) {
            auto const cur_raw = boost::json::serialize(*us);
            auto const& mine_raw = position_.at_seq.raw_json();
            bool const integers = us->is_number() && !mine_raw.starts_with("\"");
            auto const cur = seq_prefix(cur_raw);
            auto const mine = seq_prefix(mine_raw);
            bool const behind = cur && mine && *cur < *mine;
            // Exact, where both seqs are CouchDB 2/3 clustered seqs.
            auto const exact = compare_incarnation(position_.at_seq, seq::from_raw_json(cur_raw));
            for (auto const& back : exact.rewinds) {
                ++status_.source_rewinds;
                probe_.source_rewinds.inc();
                spdlog::warn("couch feed {}: the server rewound shard {} on {} from seq {} to {} (same uuid {}): "
                             "rows after it will be sent again (a shard move or node replacement)",
                             opt_.database, back.range.to_string(), back.node, back.checkpoint_seq,
                             back.server_seq, back.server_uuid);
            }
            bool const recreated =
                exact.verdict == incarnation::recreated ||
                (exact.verdict == incarnation::unknown && behind && (integers || confirmed_missing_));
            if (recreated) {
                std::string const why = exact.verdict == incarnation::recreated
                                            ? exact.reason
                                            : "its update_seq " + cur_raw + " is behind the position " + mine_raw;
                ++status_.recreated;
                probe_.recreated.inc();
                if (opt_.on_recreate == feed_options::recreate_policy::restart) {
                    spdlog::error("couch feed {}: {} was deleted and re-created ({}): publishing the new "
                                  "incarnation from 0 (--on-recreate restart)",
                                  opt_.database, where(), why);
                    position_ = since::beginning();
                    confirmed_missing_ = false;
                    need_db_check_ = false;
                    co_return true;
                }
                recreated_ = true;
                slow(feed_state::failed, "db_missing",
                     where() + " was deleted and re-created; refusing to follow the new incarnation from seq " +
                         mine_raw + " (" + why +
                         ", and CouchDB would silently restart from 0); reset the checkpoint or use "
                         "--on-recreate restart");
                co_return false;
            }
            if (exact.verdict == incarnation::same_incarnation || exact.verdict == incarnation::rewound) {
                // Proven the same database, whatever the prefix says.
            } else if (confirmed_missing_) {
                spdlog::warn("couch feed {}: {} is back after a 404; its update_seq {} does not prove a new "
                             "incarnation, following on from {}",
                             opt_.database, where(), cur_raw, mine_raw);
            } else if (behind) {
                spdlog::info("couch feed {}: update_seq {} of {} is behind the position {} without a deletion "
                             "(a lagging shard copy answered); following on",
                             opt_.database, cur_raw, where(), mine_raw);
            }
        }
    }
    confirmed_missing_ = false;
    need_db_check_ = false;
    co_return true;
}
} // namespace couch
