#include "bridge/status_api.hpp"

#include "bridge/change_meta.hpp"
#include "bridge/discovery.hpp"
#include "bridge/fleet.hpp"
#include "bridge/group.hpp"
#include "bridge/group_transactions.hpp"
#include "checkpoint/flusher.hpp"
#include "common/version.hpp"
#include "couch/source.hpp"
#include "kafka/producer.hpp"
#include "metrics/http_server.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace bridge {

namespace {

std::string iso_time(std::chrono::system_clock::time_point t) {
    if (t == std::chrono::system_clock::time_point{}) {
        return {};
    }
    return format_timestamp(t);
}

boost::json::value status_json(std::vector<pipeline_status> const& statuses) {
    boost::json::object dbs;
    for (auto const& s : statuses) {
        boost::json::object o;
        o["state"] = s.state;
        o["ready"] = s.ready;
        o["last_seq_read"] = s.last_seq_read;
        o["checkpoint_seq"] = s.checkpoint_seq;
        o["rows_read"] = s.rows_read;
        o["published"] = s.published;
        o["skipped"] = s.skipped;
        o["delivery_failures"] = s.delivery_failures;
        o["in_flight"] = s.in_flight;
        o["in_flight_bytes"] = s.in_flight_bytes;
        if (s.pending) {
            o["pending"] = *s.pending;
        } else {
            o["pending"] = nullptr;
        }
        o["last_error"] = s.last_error.empty() ? boost::json::value(nullptr) : boost::json::value(s.last_error);
        o["last_error_time"] = s.last_error_time == std::chrono::system_clock::time_point{}
                                   ? boost::json::value(nullptr)
                                   : boost::json::value(iso_time(s.last_error_time));
        o["last_row_time"] = s.last_row_time == std::chrono::system_clock::time_point{}
                                 ? boost::json::value(nullptr)
                                 : boost::json::value(iso_time(s.last_row_time));
        o["unpublishable"] = s.unpublishable;
        o["last_unpublishable"] =
            s.last_unpublishable.empty() ? boost::json::value(nullptr) : boost::json::value(s.last_unpublishable);
        dbs[s.database] = std::move(o);
    }
    return dbs;
}


boost::json::value source_json(couch::source const& src) {
    auto h = src.status();
    boost::json::object o;
    o["name"] = src.name();
    o["state"] = h.state;
    boost::json::object errors;
    for (auto const& [reason, n] : h.errors) {
        errors[reason] = n;
    }
    o["errors"] = std::move(errors);
    o["last_error"] = h.last_error.empty() ? boost::json::value(nullptr) : boost::json::value(h.last_error);
    o["last_error_time"] = h.last_error_time == std::chrono::system_clock::time_point{}
                               ? boost::json::value(nullptr)
                               : boost::json::value(iso_time(h.last_error_time));
    o["connecting"] = h.connecting;
    o["waiting"] = h.waiting;
    o["max_connecting"] = h.max_connecting;
    return o;
}

boost::json::value group_json(status_sources const& s) {
    boost::json::array parts;
    for (auto p : s.group->partitions()) {
        parts.emplace_back(p);
    }
    boost::json::object g{{"name", s.cfg.group},
                          {"member_id", s.group->member_id()},
                          {"partitions", std::move(parts)},
                          {"rebalances", s.group->rebalances()}};
    if (s.transactions != nullptr) {
        // Exactly-once: the partitions whose transactional producer is open
        // (normally all of them; one fenced or failing to open is missing).
        boost::json::array open;
        for (auto p : s.transactions->open_partitions()) {
            open.emplace_back(p);
        }
        g["transactional_partitions"] = std::move(open);
    }
    return g;
}

std::string starting_reason(status_sources const& s) { return s.starting ? s.starting() : std::string(); }

} // namespace

void register_status_endpoints(metrics::http_server& http, status_sources const& s) {
    http.handle("/healthz", [] { return metrics::http_response{200, "text/plain; charset=utf-8", "ok\n"}; });
    http.handle("/readyz", [s] {
        std::string not_ready;
        if (auto why = starting_reason(s); !why.empty()) {
            not_ready += "starting: " + why + "\n";
        }
        if (auto k = s.producer.health(); !k.ready) {
            not_ready += "kafka: cannot reach the cluster (" + k.last_error + ")\n";
        }
        for (auto const& st : s.databases.statuses()) {
            if (!st.ready) {
                not_ready +=
                    st.database + ": " + st.state + (st.last_error.empty() ? "" : " (" + st.last_error + ")") + "\n";
            }
        }
        auto h = s.flusher.status();
        if (h.consecutive_failures > 0) {
            not_ready += "checkpoints: " + h.last_error + "\n";
        }
        std::string member;
        if (s.group != nullptr) {
            // Informative, ready or not: which member this is and what it owns.
            std::string parts;
            for (auto p : s.group->partitions()) {
                parts += (parts.empty() ? "" : ",") + std::to_string(p);
            }
            member = "group " + s.cfg.group + ": member " + s.group->member_id() + ", partitions [" + parts +
                     "], rebalances " + std::to_string(s.group->rebalances()) + "\n";
        }
        if (not_ready.empty()) {
            return metrics::http_response{200, "text/plain; charset=utf-8", "ready\n" + member};
        }
        return metrics::http_response{503, "text/plain; charset=utf-8", not_ready + member};
    });
    http.handle("/status", [s] {
        boost::json::object root;
        root["version"] = common::version;
        if (auto why = starting_reason(s); !why.empty()) {
            root["starting"] = why;
        }
        root["source"] = source_json(s.source);
        root["discovery"] = s.finder != nullptr ? boost::json::value(s.finder->status()) : boost::json::value(nullptr);
        auto k = s.producer.health();
        root["kafka"] = {{"ready", k.ready},
                         {"last_error", k.last_error.empty() ? boost::json::value(nullptr)
                                                             : boost::json::value(k.last_error)}};
        root["delivery"] = s.cfg.delivery;
        if (s.group != nullptr) {
            root["group"] = group_json(s);
        }
        root["checkpoint_store"] = s.cfg.checkpoint_store;
        root["databases"] = status_json(s.databases.statuses());
        boost::json::array idle; // followed, feed closed until they change (--max-open-feeds)
        for (auto& db : s.databases.idle_databases()) {
            idle.emplace_back(std::move(db));
        }
        root["idle"] = std::move(idle);
        auto h = s.flusher.status();
        boost::json::object ck;
        ck["consecutive_failures"] = h.consecutive_failures;
        ck["last_error"] = h.last_error.empty() ? boost::json::value(nullptr) : boost::json::value(h.last_error);
        ck["last_success_time"] = iso_time(h.last_success_time);
        root["checkpoints"] = std::move(ck);
        return metrics::http_response{200, "application/json", boost::json::serialize(root) + "\n"};
    });
}

} // namespace bridge
