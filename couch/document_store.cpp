#include "couch/document_store.hpp"

#include "couch/client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <optional>
#include <unordered_map>

namespace couch {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;

namespace {

// A _bulk_get reply holds whole documents; this bounds one batch's reply.
constexpr std::uint64_t body_limit = 256u << 20;

// The server's own words for an error reply ({"error","reason"}), if any.
std::string server_reason(std::string const& body) {
    error_code ec;
    auto v = boost::json::parse(body, ec);
    if (ec || !v.is_object()) {
        return {};
    }
    auto const& o = v.as_object();
    std::string out;
    for (auto const* key : {"error", "reason"}) {
        if (auto const* p = o.if_contains(key); p != nullptr && p->is_string()) {
            out += out.empty() ? "" : ": ";
            out += std::string(p->as_string());
        }
    }
    return out;
}

} // namespace

struct document_store::impl {
    impl(client_config c, std::chrono::milliseconds t)
        : timeout(t), cl(std::make_shared<client>(ioc.get_executor(), std::move(c), nullptr, nullptr)) {}

    // Runs one request of the client on this thread's own io_context.
    http_reply run(std::string target, std::string body) {
        std::optional<http_reply> out;
        std::exception_ptr failure;
        asio::co_spawn(ioc, cl->request(slot, http::verb::post, std::move(target), std::move(body), body_limit, timeout),
                       [&](std::exception_ptr e, http_reply r) {
                           failure = e;
                           out = std::move(r);
                       });
        ioc.restart();
        ioc.run();
        if (failure) {
            std::rethrow_exception(failure);
        }
        return std::move(*out);
    }

    struct posted {
        std::string error;
        std::string body;
    };

    // POST {prefix}/{db}{path} with a JSON body; a 200 body, or an error text.
    posted post_json(std::string const& database, std::string const& path, std::string const& body) {
        auto r = run("/" + url_encode(database) + path, body);
        if (!r.error.empty()) {
            return {r.error, {}};
        }
        if (r.status == 200) {
            return {{}, std::move(r.body)};
        }
        auto reason = server_reason(r.body);
        std::string what = r.status == 401 || r.status == 403 ? "CouchDB refused the credentials"
                           : r.status == 404                  ? "database '" + database + "' does not exist"
                                                              : path.substr(1) + " on database '" + database + "' failed";
        return {what + " (" + std::to_string(r.status) + (reason.empty() ? "" : " " + reason) + ")", {}};
    }

    std::chrono::milliseconds timeout;
    asio::io_context ioc; // declared before the client: its connections close first
    std::shared_ptr<client> cl;
    request_slot slot;
};

document_store::document_store(client_config config, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>(std::move(config), timeout)) {}

document_store::~document_store() = default;

fetch_result document_store::fetch(std::string const& database, std::vector<std::string> const& ids) {
    // Each distinct id once (servers differ on repeated ids), answers mapped back.
    std::vector<std::string> unique;
    std::unordered_map<std::string, std::size_t> index;
    for (auto const& id : ids) {
        if (index.try_emplace(id, unique.size()).second) {
            unique.push_back(id);
        }
    }
    if (unique.empty()) {
        return {};
    }
    boost::json::array docs;
    docs.reserve(unique.size());
    for (auto const& id : unique) {
        docs.push_back(boost::json::object{{"id", id}});
    }
    auto got = impl_->post_json(database, "/_bulk_get",
                                boost::json::serialize(boost::json::object{{"docs", std::move(docs)}}));
    if (!got.error.empty()) {
        return {got.error, {}};
    }
    auto result = parse_bulk_get(got.body, unique);
    if (!result.error.empty()) {
        return result;
    }
    // Not returned: deleted, or never there? _all_docs knows.
    std::vector<std::string> unsure;
    for (auto const& d : result.docs) {
        if (d.state == doc_state::missing) {
            unsure.push_back(d.id);
        }
    }
    if (!unsure.empty()) {
        boost::json::array keys;
        for (auto const& id : unsure) {
            keys.emplace_back(id);
        }
        auto checked = impl_->post_json(database, "/_all_docs",
                                         boost::json::serialize(boost::json::object{{"keys", std::move(keys)}}));
        if (!checked.error.empty()) {
            return {checked.error, {}};
        }
        auto states = parse_all_docs_keys(checked.body, unsure);
        if (!states.error.empty()) {
            return states;
        }
        for (auto const& s : states.docs) {
            if (s.state == doc_state::found) {
                return {"document '" + s.id + "' of database '" + database +
                            "' was created while it was being fetched; try again",
                        {}};
            }
            result.docs[index.at(s.id)].state = s.state;
        }
    }
    fetch_result out;
    out.docs.reserve(ids.size());
    for (auto const& id : ids) {
        out.docs.push_back(result.docs[index.at(id)]);
    }
    return out;
}

fetch_result parse_bulk_get(std::string const& body, std::vector<std::string> const& ids) {
    fetch_result out;
    auto fail = [&out](std::string why) {
        out.docs.clear();
        out.error = "unexpected _bulk_get reply: " + std::move(why);
        return out;
    };
    error_code ec;
    auto root = boost::json::parse(body, ec);
    if (ec || !root.is_object()) {
        return fail("not a JSON object");
    }
    auto const* results = root.as_object().if_contains("results");
    if (results == nullptr || !results->is_array()) {
        return fail("no \"results\" array");
    }
    auto const& arr = results->as_array();
    if (arr.size() != ids.size()) {
        return fail(std::to_string(arr.size()) + " results for " + std::to_string(ids.size()) + " ids");
    }
    for (std::size_t i = 0; i < arr.size(); ++i) {
        auto const* r = arr[i].if_object();
        auto const* id = r ? r->if_contains("id") : nullptr;
        auto const* rdocs = r ? r->if_contains("docs") : nullptr;
        if (id == nullptr || !id->is_string() || id->as_string() != ids[i] || rdocs == nullptr ||
            !rdocs->is_array() || rdocs->as_array().empty() || !rdocs->as_array()[0].is_object()) {
            return fail("result " + std::to_string(i) + " is not {\"id\":\"" + ids[i] + "\",\"docs\":[{...}]}");
        }
        fetched_doc d;
        d.id = ids[i];
        auto const& first = rdocs->as_array()[0].as_object();
        if (auto const* ok = first.if_contains("ok"); ok != nullptr && ok->is_object()) {
            auto const* del = ok->as_object().if_contains("_deleted");
            d.state = del != nullptr && del->is_bool() && del->as_bool() ? doc_state::deleted : doc_state::found;
            d.doc = *ok;
        } else if (auto const* err = first.if_contains("error"); err != nullptr && err->is_object()) {
            auto const* kind = err->as_object().if_contains("error");
            auto const* reason = err->as_object().if_contains("reason");
            if (kind == nullptr || !kind->is_string() || kind->as_string() != "not_found") {
                return fail("document '" + ids[i] + "': " + boost::json::serialize(*err));
            }
            d.state = reason != nullptr && reason->is_string() && reason->as_string() == "deleted"
                          ? doc_state::deleted
                          : doc_state::missing;
        } else if (first.empty()) {
            d.state = doc_state::missing; // pouchdb-server's answer for deleted and missing alike
        } else {
            return fail("result " + std::to_string(i) + " has neither \"ok\" nor \"error\"");
        }
        out.docs.push_back(std::move(d));
    }
    return out;
}

fetch_result parse_all_docs_keys(std::string const& body, std::vector<std::string> const& keys) {
    fetch_result out;
    auto fail = [&out](std::string why) {
        out.docs.clear();
        out.error = "unexpected _all_docs reply: " + std::move(why);
        return out;
    };
    error_code ec;
    auto root = boost::json::parse(body, ec);
    auto const* rows = !ec && root.is_object() ? root.as_object().if_contains("rows") : nullptr;
    if (rows == nullptr || !rows->is_array()) {
        return fail("no \"rows\" array");
    }
    auto const& arr = rows->as_array();
    if (arr.size() != keys.size()) {
        return fail(std::to_string(arr.size()) + " rows for " + std::to_string(keys.size()) + " keys");
    }
    for (std::size_t i = 0; i < arr.size(); ++i) {
        auto const* row = arr[i].if_object();
        auto const* key = row ? row->if_contains("key") : nullptr;
        if (key == nullptr || !key->is_string() || key->as_string() != keys[i]) {
            return fail("row " + std::to_string(i) + " is not for key '" + keys[i] + "'");
        }
        fetched_doc d;
        d.id = keys[i];
        auto const* err = row->if_contains("error");
        auto const* value = row->if_contains("value");
        if (err != nullptr) {
            if (!err->is_string() || err->as_string() != "not_found") {
                return fail("key '" + keys[i] + "': " + boost::json::serialize(*err));
            }
            d.state = doc_state::missing;
        } else if (value != nullptr && value->is_object()) {
            auto const* del = value->as_object().if_contains("deleted");
            d.state = del != nullptr && del->is_bool() && del->as_bool() ? doc_state::deleted : doc_state::found;
        } else {
            return fail("row " + std::to_string(i) + " has neither \"error\" nor \"value\"");
        }
        out.docs.push_back(std::move(d));
    }
    return out;
}

} // namespace couch
