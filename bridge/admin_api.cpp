#include "bridge/admin_api.hpp"

#include "bridge/group_commands.hpp"

#include "bridge/fleet.hpp"
#include "metrics/http_server.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

#include <cctype>
#include <optional>
#include <string_view>

namespace bridge {

namespace {

constexpr char const* json_type = "application/json";

metrics::http_response error(unsigned status, std::string const& err, std::string const& reason) {
    return {status, json_type,
            boost::json::serialize(boost::json::object{{"error", err}, {"reason", reason}}) + "\n"};
}

// Percent-decoding; nullopt for a malformed escape.
std::optional<std::string> decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%') {
            if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
                !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
                return std::nullopt;
            }
            out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
            i += 2;
        } else if (s[i] == '+') {
            out.push_back(' ');
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

// The decoded value of `name` in a query string; "" when absent.
std::optional<std::string> query_param(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        auto const amp = query.find('&');
        auto const part = query.substr(0, amp);
        auto const eq = part.find('=');
        if (part.substr(0, eq) == name) {
            return decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1));
        }
        if (amp == std::string_view::npos) {
            break;
        }
        query.remove_prefix(amp + 1);
    }
    return std::string();
}

metrics::http_response answer(fleet::outcome o) { return {o.status, json_type, std::move(o.json)}; }

} // namespace

bool secrets_equal(std::string const& expected, std::string const& presented) {
    unsigned char diff = expected.size() == presented.size() ? 0 : 1;
    for (std::size_t i = 0; i < presented.size(); ++i) {
        diff |= static_cast<unsigned char>(presented[i] ^ (expected.empty() ? 0 : expected[i % expected.size()]));
    }
    return diff == 0 && !expected.empty();
}

void register_admin_api(metrics::http_server& server, fleet& f, std::string token, admin_group group) {
    server.handle_prefix("/databases", [&f, token, group](metrics::http_request const& req) -> metrics::http_response {
        if (!token.empty()) {
            std::string_view const bearer = "Bearer ";
            std::string_view const auth = req.authorization;
            if (!auth.starts_with(bearer) || !secrets_equal(token, std::string(auth.substr(bearer.size())))) {
                return error(401, "unauthorized", "the admin API needs Authorization: Bearer <the --admin-token>");
            }
        } else if (!req.from_loopback) {
            return error(403, "forbidden", "the admin API answers only on loopback unless --admin-token is set");
        }
        std::string_view rest = req.path;
        rest.remove_prefix(std::string_view("/databases").size());
        if (rest.empty() || rest == "/") {
            if (req.method != "GET" && req.method != "HEAD") {
                return error(405, "method_not_allowed", "GET /databases lists; act on /databases/{db}");
            }
            if (group.refresh_owners) {
                group.refresh_owners();
            }
            return {200, json_type, f.describe_all(group.owner_of)};
        }
        rest.remove_prefix(1);
        std::string_view action;
        if (auto const slash = rest.find('/'); slash != std::string_view::npos) {
            action = rest.substr(slash + 1);
            rest = rest.substr(0, slash);
        }
        auto const db = decode(rest);
        if (!db || !fleet::valid_database_name(*db)) {
            return error(400, "bad_request", "invalid database name in " + req.path);
        }
        auto const since = query_param(req.query, "since");
        if (!since) {
            return error(400, "bad_request", "malformed percent-encoding in since");
        }
        if (group.commands != nullptr) {
            admin_command c;
            c.database = *db;
            c.since = *since;
            if (action.empty() && req.method == "PUT") {
                c.what = admin_command::op::follow;
                c.options = req.body;
            } else if (action.empty() && req.method == "DELETE") {
                c.what = admin_command::op::remove;
            } else if (!action.empty() && req.method == "POST" && action == "pause") {
                c.what = admin_command::op::pause;
            } else if (!action.empty() && req.method == "POST" && action == "resume") {
                c.what = admin_command::op::resume;
            } else if (!action.empty() && req.method == "POST" && action == "rewind") {
                c.what = admin_command::op::rewind;
            } else {
                return error(405, "method_not_allowed",
                             "PUT or DELETE /databases/{db}, POST /databases/{db}/pause|resume|rewind");
            }
            if (auto bad = fleet::check_command(c.database, c.since, c.options); bad.status != 200) {
                return answer(std::move(bad)); // refused here, before it reaches the group
            }
            return answer(group.commands->submit(c));
        }
        if (action.empty()) {
            if (req.method == "PUT") {
                return answer(f.follow(*db, *since, req.body));
            }
            if (req.method == "DELETE") {
                return answer(f.remove(*db));
            }
            return error(405, "method_not_allowed", "PUT or DELETE /databases/{db}");
        }
        if (req.method != "POST") {
            return error(405, "method_not_allowed", "POST /databases/{db}/" + std::string(action));
        }
        if (action == "pause") {
            return answer(f.pause(*db));
        }
        if (action == "resume") {
            return answer(f.resume(*db));
        }
        if (action == "rewind") {
            return answer(f.rewind(*db, *since));
        }
        return error(404, "not_found", "unknown action '" + std::string(action) + "' (pause, resume, rewind)");
    });
}

} // namespace bridge
