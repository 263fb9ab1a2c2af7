#include "couch/changes_feed.hpp"

#include "common/redact.hpp"
#include "couch/changes_parser.hpp"
#include "couch/detail/connection.hpp"
#include "couch/shard_seq.hpp"
#include "couch/url.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/system/system_error.hpp>

#include <spdlog/spdlog.h>

#include <array>
#include <map>
#include <random>
#include <stdexcept>
#include <utility>

namespace couch {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;

std::string_view to_string(feed_state s) noexcept {
    switch (s) {
    case feed_state::connecting:
        return "connecting";
    case feed_state::catching_up:
        return "catching_up";
    case feed_state::following:
        return "following";
    case feed_state::backoff:
        return "backoff";
    case feed_state::unauthorized:
        return "unauthorized";
    case feed_state::db_missing:
        return "db_missing";
    case feed_state::failed:
        return "failed";
    case feed_state::stopped:
        return "stopped";
    }
    return "unknown";
}

std::string url_encode(std::string_view s) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(s.size() * 3);
    for (unsigned char c : s) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

namespace {

constexpr std::array<std::string_view, 8> all_states = {"connecting", "catching_up", "following", "backoff",
                                                        "unauthorized", "db_missing", "failed", "stopped"};
constexpr std::array<std::string_view, 11> reconnect_reasons = {
    "closed",     "stall",        "last_seq",     "http_5xx", "refused",          "server_error",
    "db_missing", "unauthorized", "bad_response", "tls",      "in_body_response"};

// This feed's metrics, looked up once.
struct probe {
    probe(metrics::registry& r, std::string const& db)
        : rows(r.add_counter("couch_bridge_couch_rows_read_total", "Change rows read from CouchDB",
                             {{"database", db}})),
          bytes(r.add_counter("couch_bridge_couch_bytes_read_total", "Bytes of _changes responses read",
                              {{"database", db}})),
          last_row(r.add_gauge("couch_bridge_couch_last_row_timestamp_seconds",
                               "Unix time of the last change row read", {{"database", db}})),
          pending(r.add_gauge("couch_bridge_couch_pending_changes",
                              "Changes still pending on the server (last catch-up batch)", {{"database", db}})),
          recreated(r.add_counter("couch_bridge_databases_recreated_total",
                                  "Databases found deleted and re-created under their name", {{"database", db}})),
          source_rewinds(r.add_counter("couch_bridge_source_rewinds_total",
                                       "Shards the server rewound (same uuid, lower seq): rows come again",
                                       {{"database", db}})) {
        for (std::size_t i = 0; i < all_states.size(); ++i) {
            states[i] = &r.add_gauge("couch_bridge_couch_state", "Feed state (1 for the current state)",
                                     {{"database", db}, {"state", std::string(all_states[i])}});
        }
        for (auto reason : reconnect_reasons) {
            reconnects.emplace(std::string(reason),
                               &r.add_counter("couch_bridge_couch_reconnects_total", "Feed reconnects by reason",
                                              {{"database", db}, {"reason", std::string(reason)}}));
        }
    }
    void set_state(feed_state s) noexcept {
        for (std::size_t i = 0; i < states.size(); ++i) {
            states[i]->set(i == static_cast<std::size_t>(s) ? 1.0 : 0.0);
        }
    }
    void reconnect(std::string const& reason) {
        if (auto it = reconnects.find(reason); it != reconnects.end()) {
            it->second->inc();
        }
    }
    metrics::counter& rows;
    metrics::counter& bytes;
    metrics::gauge& last_row;
    metrics::gauge& pending;
    metrics::counter& recreated;
    metrics::counter& source_rewinds;
    std::array<metrics::gauge*, all_states.size()> states{};
    std::map<std::string, metrics::counter*, std::less<>> reconnects;
};

using detail::connection;

struct small_response {
    error_code ec;
    unsigned status = 0;
    std::string body;
    std::string set_cookie;
};

std::string reason_of(std::string const& body) {
    error_code ec;
    auto v = boost::json::parse(body, ec);
    if (!ec && v.is_object()) {
        std::string out;
        if (auto const* e = v.get_object().if_contains("error"); e != nullptr && e->is_string()) {
            out = std::string(e->get_string());
        }
        if (auto const* r = v.get_object().if_contains("reason"); r != nullptr && r->is_string()) {
            out += (out.empty() ? "" : ": ") + std::string(r->get_string());
        }
        if (!out.empty()) {
            return out;
        }
    }
    return body.substr(0, 200);
}

// The printable start of stray bytes, for a log line.
std::string printable_prefix(std::string_view s, std::size_t n = 120) {
    std::string out;
    for (char c : s.substr(0, n)) {
        out.push_back(c == '\r' ? ' ' : c == '\n' ? '|' : (c >= 32 && c < 127) ? c : '?');
    }
    return out;
}

// The numeric prefix of a seq ("12-g1AA..." or 12); nullopt if it has none.
std::optional<std::uint64_t> seq_prefix(std::string_view raw) {
    if (raw.starts_with("\"")) {
        raw.remove_prefix(1);
    }
    std::uint64_t n = 0;
    std::size_t i = 0;
    for (; i < raw.size() && raw[i] >= '0' && raw[i] <= '9' && i < 19; ++i) {
        n = n * 10 + static_cast<std::uint64_t>(raw[i] - '0');
    }
    if (i == 0) {
        return std::nullopt;
    }
    return n;
}

} // namespace

struct changes_feed::impl {
    impl(asio::any_io_executor ex, client_config client, feed_options options, metrics::registry& registry,
         std::shared_ptr<source> src)
        : ex_(std::move(ex)), cfg_(std::move(client)), opt_(std::move(options)), url_(parse_url(cfg_)),
          source_(src ? std::move(src) : std::make_shared<source>(url_.redacted, source_options{}, registry)),
          probe_(registry, opt_.database), parser_(feed_kind::normal, opt_.max_row_bytes), timer_(ex_),
          position_(opt_.since), backoff_(opt_.backoff_initial), rng_(std::random_device{}()) {
        if (opt_.batch_limit == 0) {
            opt_.batch_limit = 1;
        }
        parser_.keep_doc_text(opt_.keep_doc_text);
        ssl_ = detail::make_tls_context(cfg_, url_);
        set_state(feed_state::connecting);
    }

    // --- state and errors ------------------------------------------------

    void set_state(feed_state s) {
        status_.state = s;
        probe_.set_state(s);
    }

    bool quiet_state() const {
        return status_.state == feed_state::unauthorized || status_.state == feed_state::db_missing ||
               status_.state == feed_state::failed;
    }

    void note_error(std::string const& reason, std::string msg) {
        msg = common::redact_secret(std::move(msg), url_.password);
        status_.last_error = msg;
        status_.last_error_time = std::chrono::system_clock::now();
        ++status_.reconnects;
        probe_.reconnect(reason);
        spdlog::warn("couch feed {} ({}): {}", opt_.database, reason, msg);
    }

    void drop_connection() {
        if (conn_) {
            conn_->close();
        }
        response_open_ = false;
        need_db_check_ = true;
    }

    // A transient problem: reconnect after a jittered exponential backoff.
    void transient(std::string const& reason, std::string msg) {
        drop_connection();
        note_error(reason, std::move(msg));
        auto const now = std::chrono::steady_clock::now();
        if (connected_ && now - connected_at_ >= opt_.healthy_reset) {
            backoff_ = opt_.backoff_initial;
        }
        connected_ = false;
        std::uniform_int_distribution<long long> jitter(backoff_.count() / 2, std::max<long long>(backoff_.count(), 1));
        wait_ = std::chrono::milliseconds(jitter(rng_));
        backoff_ = std::min(backoff_ * 2, opt_.backoff_max);
        catching_up_ = true;
        set_state(feed_state::backoff);
    }

    // A problem an operator must see (auth, missing db, bad data): a visible
    // state, retried every slow_retry.
    void slow(feed_state s, std::string const& reason, std::string msg) {
        drop_connection();
        note_error(reason, std::move(msg));
        connected_ = false;
        wait_ = opt_.slow_retry;
        catching_up_ = true;
        set_state(s);
    }

    void throw_if_stopped() const {
        if (stopped_) {
            throw boost::system::system_error(asio::error::operation_aborted);
        }
    }

    std::string db_path() const { return url_.prefix + "/" + url_encode(opt_.database); }

    std::string changes_target() const {
        std::string t = db_path() + "/_changes?include_docs=true&style=main_only";
        if (catching_up_) {
            t += "&feed=normal&limit=" + std::to_string(opt_.batch_limit);
            if (opt_.seq_interval > 0) {
                t += "&seq_interval=" + std::to_string(opt_.seq_interval);
            }
        } else {
            t += "&feed=continuous&heartbeat=" + std::to_string(opt_.heartbeat.count());
        }
        t += "&since=" + url_encode(position_.to_query_param());
        if (!opt_.selector.empty()) {
            t += "&filter=_selector";
        } else if (!opt_.doc_ids.empty()) {
            t += "&filter=_doc_ids";
        } else if (!opt_.filter.empty()) {
            t += "&filter=" + url_encode(opt_.filter);
        }
        return t;
    }

    bool filtered() const { return !opt_.selector.empty() || !opt_.doc_ids.empty() || !opt_.filter.empty(); }

    // The POST body of a filtered request, empty for a GET.
    std::string filter_body() const {
        if (!opt_.selector.empty()) {
            return "{\"selector\":" + opt_.selector + "}";
        }
        if (!opt_.doc_ids.empty()) {
            boost::json::array ids;
            for (auto const& id : opt_.doc_ids) {
                ids.emplace_back(id);
            }
            return boost::json::serialize(boost::json::object{{"doc_ids", std::move(ids)}});
        }
        return {};
    }

    template <class Req>
    void add_auth(Req& req) const {
        req.set(http::field::host, url_.host);
        req.set(http::field::user_agent, "couch-kafka-bridge");
        req.set(http::field::accept, "application/json");
        if (cfg_.auth == client_config::auth_mode::cookie) {
            if (!cookie_.empty()) {
                req.set(http::field::cookie, cookie_);
            }
        } else if (!url_.user.empty()) {
            req.set(http::field::authorization, "Basic " + base64(url_.user + ":" + url_.password));
        }
    }

    // --- I/O -------------------------------------------------------------

    asio::awaitable<error_code> connect(connection& c) {
        auto r = co_await detail::connect(c, ex_, url_, ssl_.get(), cfg_.tls_verify, opt_.request_timeout);
        tls_rejected_ = std::move(r.tls_rejected); // see transport_error()
        co_return r.ec;
    }

    template <class Msg>
    asio::awaitable<error_code> write(connection& c, Msg& msg) {
        error_code ec;
        if (c.tls) {
            co_await http::async_write(*c.tls, msg, asio::redirect_error(asio::use_awaitable, ec));
        } else {
            co_await http::async_write(*c.plain, msg, asio::redirect_error(asio::use_awaitable, ec));
        }
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_header(connection& c, beast::flat_buffer& buf, Parser& p) {
        error_code ec;
        if (c.tls) {
            co_await http::async_read_header(*c.tls, buf, p, asio::redirect_error(asio::use_awaitable, ec));
        } else {
            co_await http::async_read_header(*c.plain, buf, p, asio::redirect_error(asio::use_awaitable, ec));
        }
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_rest(connection& c, beast::flat_buffer& buf, Parser& p) {
        error_code ec;
        if (c.tls) {
            co_await http::async_read(*c.tls, buf, p, asio::redirect_error(asio::use_awaitable, ec));
        } else {
            co_await http::async_read(*c.plain, buf, p, asio::redirect_error(asio::use_awaitable, ec));
        }
        co_return ec;
    }

    asio::awaitable<std::size_t> read_some(connection& c, error_code& ec) {
        // 256 KiB per read: while catching up a read fills it, and fewer,
        // larger reads mean fewer syscalls and event-loop wake-ups per row
        // (the parser's per-call arena grows with it; see changes_parser).
        auto const b = buf_.prepare(read_size);
        std::size_t n = 0;
        if (c.tls) {
            n = co_await c.tls->async_read_some(b, asio::redirect_error(asio::use_awaitable, ec));
        } else {
            n = co_await c.plain->async_read_some(b, asio::redirect_error(asio::use_awaitable, ec));
        }
        buf_.commit(n);
        co_return n;
    }

    // A short request on its own connection (db info, _session).
    asio::awaitable<small_response> fetch(http::verb verb, std::string target, std::string body) {
        small_response out;
        fetch_conn_ = std::make_unique<connection>();
        auto& c = *fetch_conn_;
        if ((out.ec = co_await connect(c))) {
            co_return out;
        }
        http::request<http::string_body> req(verb, target, 11);
        add_auth(req);
        if (!body.empty()) {
            req.set(http::field::content_type, "application/json");
            req.body() = std::move(body);
            req.prepare_payload();
        }
        c.tcp().expires_after(opt_.request_timeout);
        if ((out.ec = co_await write(c, req))) {
            co_return out;
        }
        beast::flat_buffer buf;
        http::response_parser<http::string_body> p;
        p.body_limit(1u << 20);
        if ((out.ec = co_await read_rest(c, buf, p))) {
            co_return out;
        }
        out.status = p.get().result_int();
        out.body = std::move(p.get().body());
        // The session cookie, even when other Set-Cookie fields (a proxy's)
        // come first.
        auto const cookies = p.get().equal_range(http::field::set_cookie);
        for (auto it = cookies.first; it != cookies.second; ++it) {
            if (out.set_cookie.empty() || it->value().starts_with("AuthSession=")) {
                out.set_cookie = std::string(it->value());
            }
        }
        c.close();
        co_return out;
    }

    // Cookie auth: POST /_session. True with cookie_ set. False when it
    // failed, after recording why (transport trouble is transient like any
    // other; a refusal is `unauthorized` with CouchDB's reason), or when
    // stop()/rewind() interrupted it (nothing recorded; the caller checks).
    asio::awaitable<bool> login(std::uint64_t gen) {
        // Never send a stale session along, and never keep one after a
        // failed login: the next attempt must log in afresh.
        cookie_.clear();
        boost::json::object o;
        o["name"] = url_.user;
        o["password"] = url_.password;
        auto r = co_await fetch(http::verb::post, url_.prefix + "/_session", boost::json::serialize(o));
        if (stopped_ || gen != generation_) {
            co_return false;
        }
        if (r.ec) {
            transport_error(r.ec, "logging in (POST /_session) for");
            co_return false;
        }
        std::string const what = "cookie login (POST /_session) for " + where() + ": HTTP " +
                                 std::to_string(r.status) + ": " + reason_of(r.body);
        if (r.status != 200) {
            // Not on_status(): a 404 here says nothing about the database.
            if (r.status == 401 || r.status == 403) {
                slow(feed_state::unauthorized, "unauthorized", what);
            } else if (r.status >= 500) {
                transient("http_5xx", what);
            } else {
                slow(feed_state::failed, "bad_response", what);
            }
            co_return false;
        }
        auto const semi = r.set_cookie.find(';');
        auto cookie = r.set_cookie.substr(0, semi);
        if (!cookie.starts_with("AuthSession=") || cookie.size() <= 12) {
            slow(feed_state::unauthorized, "unauthorized", what + " (no AuthSession cookie in the answer)");
            co_return false;
        }
        cookie_ = std::move(cookie);
        co_return true;
    }

    std::string where() const { return "database '" + opt_.database + "' at " + url_.redacted; }

    // Cookie auth: a 401/403 may only mean the session expired. Logs in again
    // once per failure streak. True when the status is dealt with: the caller
    // just returns, and open() runs again (at once after a good login, after
    // the wait login() set when it failed). False: the caller records it.
    asio::awaitable<bool> renew_session(unsigned status, std::uint64_t gen) {
        if ((status != 401 && status != 403) || cfg_.auth != client_config::auth_mode::cookie || renewed_) {
            co_return false;
        }
        renewed_ = true;
        co_await login(gen);
        co_return true;
    }

    // Records a non-200 answer as a state.
    void on_status(unsigned status, std::string const& body) {
        std::string const what = "HTTP " + std::to_string(status) + " for " + where() + ": " + reason_of(body);
        if (status == 401 || status == 403) {
            // Cookie auth: the session may expire while the feed waits out the
            // slow retry; log in afresh on the next attempt instead of
            // presenting the same cookie (and its 401) forever.
            cookie_.clear();
            slow(feed_state::unauthorized, "unauthorized", what);
        } else if (status == 404 && filtered() && body.find("Database does not exist") == std::string::npos) {
            // Not the database: the filter's design document is missing.
            slow(feed_state::failed, "bad_response", what + " (the filter " + opt_.filter + " does not exist)");
        } else if (status == 404) {
            // A _changes 404 is a suspicion; GET /{db} confirms it (open()).
            suspect_missing_ = true;
            transient("db_missing", what);
        } else if (status >= 500) {
            source_->note_error(classify_server_error(status, body), what);
            transient("http_5xx", what);
        } else {
            slow(feed_state::failed, "bad_response", what);
        }
    }

    void transport_error(error_code ec, std::string_view during) {
        if (!tls_rejected_.empty()) {
            // The server's certificate was refused: a configuration problem
            // that retrying soon will not fix; show it as `failed`.
            auto detail = std::exchange(tls_rejected_, {});
            slow(feed_state::failed, "tls",
                 "TLS certificate of " + where() + " not accepted (" + detail +
                     "); give its CA in ca_file, or turn verification off with tls_verify=false");
            return;
        }
        std::string const reason = ec == asio::error::connection_refused ? "refused"
                                   : ec == beast::error::timeout          ? "stall"
                                                                          : "closed";
        if (reason == "refused") {
            source_->note_error("refused", std::string(during) + " " + url_.redacted + ": " + ec.message());
        }
        transient(reason, std::string(during) + " " + where() + ": " + ec.message());
    }

    asio::awaitable<void> sleep(std::chrono::milliseconds d) {
        timer_.expires_after(d);
        error_code ec;
        co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }

    // GET /{db} before reading from a position (or after a suspected
    // deletion): confirms a deletion (404) and looks for a new incarnation.
    // True when the feed may go on and open _changes; false after recording
    // why not (or after a rewind()/stop() cut in).
    asio::awaitable<bool> check_database(std::uint64_t gen) {
        auto r = co_await fetch(http::verb::get, db_path(), {});
        throw_if_stopped();
        if (gen != generation_) {
            co_return false;
        }
        if (r.ec) {
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

    // Opens the next _changes response (after any wait), or records why not.
    asio::awaitable<void> open() {
        if (wait_.count() > 0) {
            auto const d = wait_;
            wait_ = 0ms;
            co_await sleep(d);
            throw_if_stopped();
        }
        auto const gen = generation_;
        if (!quiet_state()) {
            set_state(feed_state::connecting);
        }
        // Our turn among the source's connection attempts; held until the
        // response header is in (or the attempt failed).
        waiter_ = std::make_shared<source::waiter>(ex_);
        auto permit = co_await source_->acquire(waiter_);
        throw_if_stopped();
        if (!permit || gen != generation_) {
            co_return; // a rewind() came in: start over from the new position
        }
        if (cfg_.auth == client_config::auth_mode::cookie && cookie_.empty()) {
            if (!co_await login(gen)) {
                throw_if_stopped(); // else login() recorded why, or a rewind() came in
                co_return;
            }
        }
        if (need_db_check_ && (position_.where == since::kind::at || suspect_missing_)) {
            if (!co_await check_database(gen)) {
                co_return;
            }
        }
        conn_ = std::make_unique<connection>();
        buf_.clear();
        if (auto ec = co_await connect(*conn_)) {
            throw_if_stopped();
            if (gen == generation_) {
                transport_error(ec, "connecting to");
            }
            co_return;
        }
        auto request_body = filter_body();
        http::request<http::string_body> req(request_body.empty() ? http::verb::get : http::verb::post,
                                             changes_target(), 11);
        add_auth(req);
        if (!request_body.empty()) {
            req.set(http::field::content_type, "application/json");
            req.body() = std::move(request_body);
            req.prepare_payload();
        }
        conn_->tcp().expires_after(opt_.request_timeout);
        if (auto ec = co_await write(*conn_, req)) {
            throw_if_stopped();
            if (gen == generation_) {
                transport_error(ec, "sending _changes request to");
            }
            co_return;
        }
        http::response_parser<http::string_body> p;
        // No body limit for the header: Beast checks Content-Length against
        // it while parsing the header, and a 200 body (a normal-feed batch,
        // which servers such as pouchdb send with Content-Length) is read by
        // our own streaming parser, which bounds each row instead. Only an
        // error body is read through Beast, with the limit set below.
        p.body_limit(boost::none);
        if (auto ec = co_await read_header(*conn_, buf_, p)) {
            throw_if_stopped();
            if (gen == generation_) {
                transport_error(ec, "reading _changes response header from");
            }
            co_return;
        }
        throw_if_stopped();
        if (gen != generation_) {
            co_return;
        }
        permit.release();
        unsigned const status = p.get().result_int();
        if (status != 200) {
            p.body_limit(1u << 16);
            auto ec = co_await read_rest(*conn_, buf_, p);
            throw_if_stopped();
            if (gen != generation_) {
                co_return;
            }
            std::string body;
            if (!ec) {
                body = std::move(p.get().body());
            }
            drop_connection();
            bool const handled = co_await renew_session(status, gen);
            throw_if_stopped();
            if (!handled) {
                on_status(status, body);
            }
            co_return;
        }
        renewed_ = false;
        if (p.chunked()) {
            framing_ = framing::chunked;
        } else if (auto len = p.content_length()) {
            framing_ = framing::length;
            body_left_ = *len;
        } else {
            framing_ = framing::eof;
        }
        decoder_.reset();
        parser_.reset(catching_up_ ? feed_kind::normal : feed_kind::continuous);
        response_open_ = true;
        if (!connected_) {
            connected_ = true;
            connected_at_ = std::chrono::steady_clock::now();
        }
        set_state(catching_up_ ? feed_state::catching_up : feed_state::following);
        if (framing_ == framing::length && body_left_ == 0) {
            end_of_response();
        }
    }

    // New rows were appended to ready_ from index `before`.
    void took_rows(std::size_t before) {
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

    void parse_error(error_code ec) {
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

    void end_of_response() {
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
            if (conn_) {
                conn_->close();
            }
            response_open_ = false;
            bool const drained = parser_.rows_parsed() < opt_.batch_limit ||
                                 (parser_.pending().has_value() && *parser_.pending() == 0);
            if (drained) {
                catching_up_ = false;
            }
            return;
        }
        if (parser_.ended()) {
            transient("last_seq", "the server ended the continuous feed of " + where() + " with last_seq");
        } else {
            transient("closed", "the server closed the continuous feed of " + where());
        }
    }

    // Read coalescing (feed_options::read_coalesce). Engaged after a read
    // that came less than half the interval after the previous one; kept while a
    // wait is rewarded with more than one row; never after a read of a
    // quarter of the buffer or more (a source that fast, over 32 MB/s at the
    // default 2 ms, is read flat out, so the wait never throttles it).
    asio::awaitable<void> coalesce_wait() {
        if (!coalesce_) {
            slept_ = false;
            co_return;
        }
        // On a grid of the interval shared by every feed of the process: the
        // waits of many busy feeds end together, in one wake-up of the loop,
        // rather than one each. Ends between 1/2 and 3/2 of the interval
        // after the previous read.
        using clock = std::chrono::steady_clock;
        auto const grid = std::chrono::duration_cast<clock::duration>(opt_.read_coalesce);
        auto const earliest = (last_read_ + grid / 2).time_since_epoch();
        auto const until = clock::time_point(((earliest + grid - clock::duration(1)) / grid) * grid);
        if (std::chrono::steady_clock::now() < until) {
            timer_.expires_at(until);
            error_code ec;
            co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        slept_ = true;
    }

    // `rows`: rows parsed from the read (seq_interval rows the parser holds
    // back count too).
    void coalesce_after_read(std::size_t bytes, std::uint64_t rows) {
        auto const now = std::chrono::steady_clock::now();
        if (opt_.read_coalesce.count() <= 0 || bytes >= coalesce_max_bytes) {
            // Flat out: a source this fast fills the buffer while we work.
            coalesce_ = false;
        } else if (slept_) {
            coalesce_ = rows >= 2;
        } else {
            // Rows at least twice as often as the interval: a wait pays.
            coalesce_ = rows > 0 && now - last_read_ < opt_.read_coalesce / 2;
        }
        last_read_ = now;
    }

    asio::awaitable<void> read_body() {
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
            auto const n = co_await read_some(*conn_, ec);
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

    static constexpr std::size_t max_stray_bytes = 16 * 1024;
    static constexpr std::size_t read_size = 256 * 1024;
    static constexpr std::size_t coalesce_max_bytes = read_size / 4;

    // The server wrote something that is not a chunk-size line into the open
    // chunked body: CouchDB does this with a whole second response (a 404
    // when the database was deleted under the feed, recording 06k; 5xx
    // answers when it runs out of file handles). Reads that response (bounded
    // in bytes and time) and decides by its status; never concludes "missing"
    // by itself (see the class comment).
    asio::awaitable<void> stray_response(std::string data, std::uint64_t gen) {
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
            co_await read_some(*conn_, rec);
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

    asio::awaitable<std::optional<seq>> resolve_now() {
        while (position_.where == since::kind::now) {
            throw_if_stopped();
            if (!response_open_) {
                co_await open();
                continue;
            }
            co_await read_body();
        }
        if (opt_.since.where != since::kind::now || status_.start_seq.empty()) {
            co_return std::nullopt;
        }
        co_return seq::from_raw_json(status_.start_seq);
    }

    asio::awaitable<std::vector<row>> next() {
        for (;;) {
            throw_if_stopped();
            if (!ready_.empty()) {
                std::vector<row> out;
                out.swap(ready_);
                co_return out;
            }
            if (!response_open_) {
                co_await open();
                continue;
            }
            co_await read_body();
        }
    }

    void rewind(since from) {
        drop_connection();
        // Also cut a db-info or /_session request in flight: it belongs to
        // the old position and may otherwise hold next() until its deadline.
        if (fetch_conn_ && (fetch_conn_->plain || fetch_conn_->tls)) {
            fetch_conn_->close();
        }
        ready_.clear();
        position_ = std::move(from);
        catching_up_ = true;
        wait_ = 0ms;
        ++generation_;
        recreated_ = false;
        confirmed_missing_ = false;
        suspect_missing_ = false;
        source_->cancel(waiter_);
        timer_.cancel();
    }

    void stop() {
        stopped_ = true;
        if (conn_) {
            conn_->close();
        }
        if (fetch_conn_ && (fetch_conn_->plain || fetch_conn_->tls)) {
            fetch_conn_->close();
        }
        source_->cancel(waiter_);
        timer_.cancel();
        set_state(feed_state::stopped);
    }

    enum class framing { chunked, length, eof };

    asio::any_io_executor ex_;
    client_config cfg_;
    feed_options opt_;
    parsed_url url_;
    std::shared_ptr<source> source_;
    std::shared_ptr<source::waiter> waiter_; // our place in the source's queue, while waiting
    probe probe_;
    std::unique_ptr<asio::ssl::context> ssl_;
    std::unique_ptr<connection> conn_;
    std::unique_ptr<connection> fetch_conn_;
    beast::flat_buffer buf_;
    chunked_decoder decoder_;
    changes_parser parser_;
    asio::steady_timer timer_;
    framing framing_ = framing::chunked;
    std::uint64_t body_left_ = 0;
    bool response_open_ = false;
    bool catching_up_ = true;
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
    bool coalesce_ = false;
    bool slept_ = false;
    since position_;
    std::vector<row> ready_;
    std::chrono::milliseconds backoff_;
    std::chrono::milliseconds wait_{0};
    std::uint64_t generation_ = 0;
    std::string cookie_;
    std::string tls_rejected_; // why the last handshake refused the server's certificate
    std::mt19937_64 rng_;
    feed_status status_;
};

changes_feed::changes_feed(asio::any_io_executor ex, client_config client, feed_options options,
                           metrics::registry& registry, std::shared_ptr<source> src)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(client), std::move(options), registry, std::move(src))) {}

changes_feed::~changes_feed() = default;

asio::awaitable<std::vector<row>> changes_feed::next() { return impl_->next(); }

asio::awaitable<std::optional<seq>> changes_feed::resolve_now() { return impl_->resolve_now(); }

void changes_feed::rewind(since from) { impl_->rewind(std::move(from)); }

feed_status changes_feed::status() const { return impl_->status_; }

void changes_feed::stop() { impl_->stop(); }

} // namespace couch
