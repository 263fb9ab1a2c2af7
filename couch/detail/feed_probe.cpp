#include "couch/detail/feed_probe.hpp"

#include "metrics/registry.hpp"

#include <boost/json/parse.hpp>

namespace couch::detail {

namespace {

constexpr std::array<std::string_view, 8> all_states = {"connecting", "catching_up", "following", "backoff",
                                                        "unauthorized", "db_missing", "failed", "stopped"};
constexpr std::array<std::string_view, 11> reconnect_reasons = {
    "closed",     "stall",        "last_seq",     "http_5xx", "refused",          "server_error",
    "db_missing", "unauthorized", "bad_response", "tls",      "in_body_response"};

} // namespace

feed_probe::feed_probe(metrics::registry& r, std::string const& db)
    : rows(r.add_counter("couch_bridge_couch_rows_read_total", "Change rows read from CouchDB", {{"database", db}})),
      bytes(r.add_counter("couch_bridge_couch_bytes_read_total", "Bytes of _changes responses read",
                          {{"database", db}})),
      last_row(r.add_gauge("couch_bridge_couch_last_row_timestamp_seconds", "Unix time of the last change row read",
                           {{"database", db}})),
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

void feed_probe::set_state(feed_state s) noexcept {
    for (std::size_t i = 0; i < states.size(); ++i) {
        states[i]->set(i == static_cast<std::size_t>(s) ? 1.0 : 0.0);
    }
}

void feed_probe::reconnect(std::string const& reason) {
    if (auto it = reconnects.find(reason); it != reconnects.end()) {
        it->second->inc();
    }
}

std::string reason_of(std::string const& body) {
    boost::system::error_code ec;
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

std::string printable_prefix(std::string_view s, std::size_t n) {
    std::string out;
    for (char c : s.substr(0, n)) {
        out.push_back(c == '\r' ? ' ' : c == '\n' ? '|' : (c >= 32 && c < 127) ? c : '?');
    }
    return out;
}

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

} // namespace couch::detail
