#include "couch/changes_feed.hpp"

#include "common/redact.hpp"
#include "couch/detail/feed_impl.hpp"
#include "couch/detail/http_io.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/system/system_error.hpp>

#include <spdlog/spdlog.h>

#include <utility>

namespace couch {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using namespace std::chrono_literals;
using detail::reason_of;

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

changes_feed::impl::impl(asio::any_io_executor ex, std::shared_ptr<client> cl, feed_options options,
                         metrics::registry& registry)
    : ex_(std::move(ex)), client_(std::move(cl)), opt_(std::move(options)), source_(client_->gate()),
      probe_(registry, opt_.database), parser_(feed_kind::normal, opt_.max_row_bytes), timer_(ex_),
      position_(opt_.since), backoff_(opt_.backoff_initial), rng_(std::random_device{}()) {
    if (opt_.batch_limit == 0) {
        opt_.batch_limit = 1;
    }
    parser_.keep_doc_text(opt_.keep_doc_text);
    set_state(feed_state::connecting);
}

// --- states and errors ------------------------------------------------------

void changes_feed::impl::set_state(feed_state s) {
    bool const changed = status_.state != s;
    status_.state = s;
    probe_.set_state(s);
    if (changed && on_state_change_) {
        on_state_change_(s);
    }
}

bool changes_feed::impl::quiet_state() const {
    return status_.state == feed_state::unauthorized || status_.state == feed_state::db_missing ||
           status_.state == feed_state::failed;
}

void changes_feed::impl::note_error(std::string const& reason, std::string msg) {
    msg = common::redact_secret(std::move(msg), client_->url().password);
    status_.last_error = msg;
    status_.last_error_time = std::chrono::system_clock::now();
    ++status_.reconnects;
    probe_.reconnect(reason);
    spdlog::warn("couch feed {} ({}): {}", opt_.database, reason, msg);
}

void changes_feed::impl::drop_connection() {
    if (conn_) {
        conn_->close();
    }
    drop_presented();
    batch_done_ = false;
    response_open_ = false;
    need_db_check_ = true;
}

void changes_feed::impl::transient(std::string const& reason, std::string msg) {
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

void changes_feed::impl::slow(feed_state s, std::string const& reason, std::string msg) {
    drop_connection();
    note_error(reason, std::move(msg));
    connected_ = false;
    wait_ = opt_.slow_retry;
    catching_up_ = true;
    set_state(s);
}

void changes_feed::impl::throw_if_stopped() const {
    if (stopped_) {
        throw boost::system::system_error(asio::error::operation_aborted);
    }
}

std::string changes_feed::impl::where() const {
    return "database '" + opt_.database + "' at " + client_->redacted_url();
}

std::string changes_feed::impl::db_path() const { return client_->url().prefix + "/" + url_encode(opt_.database); }

std::string changes_feed::impl::changes_target() const {
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

bool changes_feed::impl::filtered() const {
    return !opt_.selector.empty() || !opt_.doc_ids.empty() || !opt_.filter.empty();
}

std::string changes_feed::impl::filter_body() const {
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

void changes_feed::impl::on_status(unsigned status, std::string const& body) {
    std::string const what = "HTTP " + std::to_string(status) + " for " + where() + ": " + reason_of(body);
    if (status == 401 || status == 403) {
        // Cookie auth: the session may expire while the feed waits out the
        // slow retry; log in afresh on the next attempt instead of
        // presenting the same cookie (and its 401) forever.
        client_->session_refused(std::exchange(cookie_, {}));
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

void changes_feed::impl::transport_error(error_code ec, std::string_view during) {
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
        source_->note_error("refused", std::string(during) + " " + client_->redacted_url() + ": " + ec.message());
    }
    transient(reason, std::string(during) + " " + where() + ": " + ec.message());
}

// --- the session --------------------------------------------------------------

// Cookie auth: the client's session (one login for every feed of the
// source). True with cookie_ set. False when the login failed, after
// recording why (transport trouble is transient like any other; a refusal is
// `unauthorized` with CouchDB's reason), or when stop()/rewind() interrupted
// it (nothing recorded; the caller checks).
asio::awaitable<bool> changes_feed::impl::ensure_session(std::uint64_t gen) {
    auto s = co_await client_->session(slot_, opt_.request_timeout);
    if (stopped_ || gen != generation_ || s.cancelled) {
        co_return false;
    }
    if (s.ok) {
        cookie_ = std::move(s.cookie);
        co_return true;
    }
    auto const& r = s.reply;
    if (r.ec) {
        tls_rejected_ = r.tls_rejected;
        transport_error(r.ec, "logging in (POST /_session) for");
        co_return false;
    }
    std::string const what = "cookie login (POST /_session) for " + where() + ": HTTP " + std::to_string(r.status) +
                             ": " + reason_of(r.body);
    if (r.status == 200) {
        slow(feed_state::unauthorized, "unauthorized", what + " (no AuthSession cookie in the answer)");
    } else if (r.status == 401 || r.status == 403) {
        // Not on_status(): a 404 here says nothing about the database.
        slow(feed_state::unauthorized, "unauthorized", what);
    } else if (r.status >= 500) {
        transient("http_5xx", what);
    } else {
        slow(feed_state::failed, "bad_response", what);
    }
    co_return false;
}

// Cookie auth: a 401/403 may only mean the session expired. Renews it once
// per failure streak (the client logs in once however many feeds saw the
// 401). True when the status is dealt with: the caller just returns, and
// open() runs again (at once after a good login, after the wait
// ensure_session() set when it failed). False: the caller records it.
asio::awaitable<bool> changes_feed::impl::renew_session(unsigned status, std::uint64_t gen) {
    if ((status != 401 && status != 403) || !client_->cookie_auth() || renewed_) {
        co_return false;
    }
    renewed_ = true;
    client_->session_refused(std::exchange(cookie_, {}));
    co_await ensure_session(gen);
    co_return true;
}

asio::awaitable<void> changes_feed::impl::sleep(std::chrono::milliseconds d) {
    timer_.expires_after(d);
    error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<std::optional<seq>> changes_feed::impl::resolve_now() {
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

asio::awaitable<std::vector<row>> changes_feed::impl::next() {
    for (;;) {
        throw_if_stopped();
        if (!ready_.empty()) {
            if (batch_done_ && !response_open_ && catching_up_) {
                co_await presend();
                throw_if_stopped();
            }
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

void changes_feed::impl::rewind(since from) {
    drop_connection();
    // Also cut a db-info or /_session request in flight: it belongs to the
    // old position and may otherwise hold next() until its deadline.
    slot_.cancel();
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

void changes_feed::impl::stop() {
    stopped_ = true;
    if (conn_) {
        conn_->close();
    }
    drop_presented();
    slot_.cancel();
    source_->cancel(waiter_);
    timer_.cancel();
    set_state(feed_state::stopped);
}

// --- the public face ----------------------------------------------------------------

changes_feed::changes_feed(asio::any_io_executor ex, client_config client, feed_options options,
                           metrics::registry& registry, std::shared_ptr<source> src)
    : changes_feed(ex, std::make_shared<couch::client>(ex, std::move(client), std::move(src), &registry),
                   std::move(options), registry) {}

changes_feed::changes_feed(asio::any_io_executor ex, std::shared_ptr<couch::client> client, feed_options options,
                           metrics::registry& registry)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(client), std::move(options), registry)) {}

changes_feed::~changes_feed() = default;

asio::awaitable<std::vector<row>> changes_feed::next() { return impl_->next(); }

asio::awaitable<std::optional<seq>> changes_feed::resolve_now() { return impl_->resolve_now(); }

void changes_feed::rewind(since from) { impl_->rewind(std::move(from)); }

feed_status changes_feed::status() const { return impl_->status_; }

void changes_feed::on_state_change(std::function<void(feed_state)> hook) { impl_->on_state_change_ = std::move(hook); }

void changes_feed::stop() { impl_->stop(); }

} // namespace couch
