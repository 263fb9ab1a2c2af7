// The admin API's commands on the fleet (GET /databases aside): follow a
// database from a position, pause, resume, remove, rewind, and the checks of
// their input. Each changes the desired state of one entry under the fleet's
// lock, starts or stops its pipeline, and persists what the API changed.
#include "bridge/fleet.hpp"
#include "bridge/fleet_entry.hpp"

#include "checkpoint/store.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

namespace json = boost::json;

namespace bridge {

namespace {

std::string error_json(std::string const& error, std::string const& reason) {
    return json::serialize(json::object{{"error", error}, {"reason", reason}}) + "\n";
}

bool valid_since(std::string const& s) {
    return s.empty() || s == "0" || s == "now" || checkpoint::is_valid_seq_json(s);
}

} // namespace

std::string check_database_options(json::object const& o) {
    int server_filters = 0;
    for (auto const& [k, v] : o) {
        auto strings = [&v] {
            if (!v.is_array()) {
                return false;
            }
            for (auto const& x : v.as_array()) {
                if (!x.is_string()) {
                    return false;
                }
            }
            return true;
        };
        if (k == "selector") {
            ++server_filters;
            if (!v.is_object()) {
                return "selector must be a JSON object (a Mango selector)";
            }
        } else if (k == "doc_ids") {
            ++server_filters;
            if (!strings() || v.as_array().empty()) {
                return "doc_ids must be a non-empty array of strings";
            }
        } else if (k == "filter") {
            ++server_filters;
            if (!v.is_string() || v.as_string().find('/') == json::string::npos) {
                return "filter must be \"ddoc/name\"";
            }
        } else if (k == "include_doc_types" || k == "exclude_doc_types") {
            if (!strings()) {
                return std::string(k) + " must be an array of strings";
            }
        } else {
            return "unknown option '" + std::string(k) +
                   "' (selector, doc_ids, filter, include_doc_types, exclude_doc_types)";
        }
    }
    if (server_filters > 1) {
        return "give at most one of selector, doc_ids and filter";
    }
    return {};
}

fleet::outcome fleet::ok_locked(entry const& e, unsigned status) const {
    std::string state = e.p && !e.stopping ? std::string("following") : e.p ? std::string("stopping") : e.desired;
    return {status, json::serialize(json::object{{"ok", true}, {"database", e.db}, {"state", state}}) + "\n"};
}

fleet::outcome fleet::check_command(std::string const& db, std::string const& since, std::string const& options) {
    if (!valid_database_name(db)) {
        return {400, error_json("bad_request", "invalid database name '" + db + "'")};
    }
    if (!valid_since(since)) {
        return {400, error_json("bad_request", "since must be 0, now, or a seq's JSON text (a CouchDB 2+ seq with "
                                                "its quotes)")};
    }
    if (options.find_first_not_of(" \t\r\n") != std::string::npos) {
        boost::system::error_code ec;
        auto v = json::parse(options, ec);
        if (ec || !v.is_object()) {
            return {400, error_json("bad_request", "the body must be a JSON object of options")};
        }
        if (auto why = check_database_options(v.as_object()); !why.empty()) {
            return {400, error_json("bad_request", why)};
        }
    }
    return {200, {}};
}

fleet::outcome fleet::follow(std::string const& db, std::string const& since, std::string const& options) {
    if (auto bad = check_command(db, since, options); bad.status != 200) {
        return bad;
    }
    if (!since.empty() && deps_.owns && !deps_.owns(db)) {
        // Group mode: a start position is the owner's to write.
        return {409, error_json("not_owner", "database '" + db +
                                                 "' runs in another member of the group: send the start position "
                                                 "or rewind to that instance (its /status lists it)")};
    }
    std::optional<json::object> new_options;
    if (options.find_first_not_of(" \t\r\n") != std::string::npos) {
        new_options = json::parse(options).as_object(); // checked by check_command
    }
    std::lock_guard lock(mutex_);
    auto& slot = entries_[db];
    bool const created = !slot;
    if (created) {
        slot = std::make_unique<entry>();
        slot->db = db;
    }
    auto& e = *slot;
    bool const options_changed = new_options && *new_options != e.options;
    if (!created && e.desired == "following" && e.p && !e.stopping && since.empty() && !options_changed) {
        return ok_locked(e);
    }
    // A database recorded as deleted is another database now, if it exists
    // at all: its old checkpoint would skip the new incarnation's first
    // changes (CouchDB accepts an old seq and answers from there). Without
    // an explicit since, it is followed from 0.
    bool const was_deleted = e.desired == "deleted";
    e.desired = "following";
    e.from_api = true;
    if (new_options) {
        e.options = std::move(*new_options);
    }
    if (!since.empty()) {
        e.rewind_to = since;
    } else if (was_deleted) {
        e.rewind_to = "0";
    }
    try {
        if (was_deleted) {
            forget_deletion_locked(e);
        }
        if (e.p) {
            stop_pipeline_locked(e); // the reaper starts it again (at the target, if any)
        } else {
            std::optional<std::string> kind;
            if (e.rewind_to) {
                auto target = *std::exchange(e.rewind_to, std::nullopt);
                checkpoint::key key{deps_.source_name, db};
                boost::system::error_code ec;
                if (target == "0" || target == "now") {
                    ec = deps_.positions.erase(key);
                    kind = target;
                } else {
                    flusher_for(db).update(key, target);
                    ec = flusher_for(db).flush_now();
                }
                if (ec) {
                    return {503, error_json("store", "cannot store the start position: " + ec.message())};
                }
            }
            start_pipeline_locked(e, kind);
        }
        persist_locked();
    } catch (std::exception const& err) {
        return {503, error_json("store", err.what())};
    }
    spdlog::info("db {}: followed through the admin API{}", db, since.empty() ? "" : " from since=" + since);
    return ok_locked(e, created ? 201 : 200);
}

// remove() and pause(): stop the pipeline, keep the checkpoint, record why.
fleet::outcome fleet::stop_following(std::string const& db, std::string const& desired, std::string const& what) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(db);
    if (it == entries_.end() || it->second->desired == "removed") {
        return {404, error_json("not_found", "database '" + db + "' is not followed")};
    }
    auto& e = *it->second;
    e.desired = desired;
    e.from_api = true;
    e.rewind_to.reset();
    stop_pipeline_locked(e);
    try {
        persist_locked();
    } catch (std::exception const& err) {
        return {503, error_json("store", err.what())};
    }
    spdlog::info("db {}: {} (admin API); its checkpoint is kept", db, what);
    return ok_locked(e);
}

fleet::outcome fleet::remove(std::string const& db) {
    auto out = stop_following(db, "removed", "no longer followed");
    if (out.status == 200) {
        probe_->removed_api.inc();
    }
    return out;
}

fleet::outcome fleet::pause(std::string const& db) { return stop_following(db, "paused", "paused"); }

fleet::outcome fleet::resume(std::string const& db) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(db);
    if (it == entries_.end() || it->second->desired == "removed") {
        return {404, error_json("not_found", "database '" + db + "' is not followed")};
    }
    auto& e = *it->second;
    if (e.desired == "following") {
        return ok_locked(e);
    }
    bool const was_deleted = e.desired == "deleted"; // a new incarnation: from 0 (see follow())
    e.desired = "following";
    e.from_api = true;
    try {
        if (was_deleted) {
            forget_deletion_locked(e);
            if (e.p) {
                e.rewind_to = "0"; // the reaper drops the checkpoint durably, then starts it
            } else {
                if (auto ec = deps_.positions.erase(checkpoint::key{deps_.source_name, db})) {
                    return {503, error_json("store", "cannot drop the old incarnation's checkpoint: " +
                                                         ec.message())};
                }
                start_pipeline_locked(e, std::string("0"));
            }
        } else if (!e.p) {
            start_pipeline_locked(e, std::nullopt);
        }
        persist_locked();
    } catch (std::exception const& err) {
        return {503, error_json("store", err.what())};
    }
    spdlog::info("db {}: resumed (admin API)", db);
    return ok_locked(e);
}

void fleet::forget_deletion_locked(entry& e) {
    spdlog::warn("db {}: deleted at {} (checkpoint {}); following it now as a new incarnation, from 0", e.db,
                 e.deleted_unix_ms, e.deleted_checkpoint.empty() ? std::string("none") : e.deleted_checkpoint);
    e.deleted_unix_ms = 0;
    e.deleted_checkpoint.clear();
    persist_deleted_locked();
}

fleet::outcome fleet::rewind(std::string const& db, std::string const& since) {
    if (since.empty() || !valid_since(since)) {
        return {400, error_json("bad_request", "rewind needs ?since=0, now, or a seq's JSON text")};
    }
    {
        std::lock_guard lock(mutex_);
        auto it = entries_.find(db);
        if (it == entries_.end() || it->second->desired == "removed") {
            return {404, error_json("not_found", "database '" + db + "' is not followed")};
        }
    }
    return follow(db, since);
}

} // namespace bridge
