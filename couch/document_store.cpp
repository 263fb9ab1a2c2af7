#include "couch/document_store.hpp"
#include "couch/url.hpp"

#include "common/redact.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <optional>
#include <unordered_map>
#include <stdexcept>

namespace couch {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
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

struct exchange_result {
    std::string error;
    http::response<http::string_body> response;
};

} // namespace

struct document_store::impl {
    impl(client_config c, std::chrono::milliseconds t) : cfg(std::move(c)), url(parse_url(cfg)), timeout(t) {
        if (url.tls) {
            ssl = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
            ssl->set_default_verify_paths();
            if (!cfg.ca_file.empty()) {
                error_code ec;
                ssl->load_verify_file(cfg.ca_file, ec);
                if (ec) {
                    throw std::invalid_argument("cannot load CA file '" + cfg.ca_file + "' for " + url.redacted +
                                                ": " + ec.message());
                }
            }
            ssl->set_verify_mode(cfg.tls_verify ? asio::ssl::verify_peer : asio::ssl::verify_none);
        }
    }

    beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }

    void close() {
        secure.reset();
        plain.reset();
        buffer.clear();
    }

    asio::awaitable<std::string> connect() {
        close();
        tcp::resolver resolver(ioc);
        auto [rec, endpoints] =
            co_await resolver.async_resolve(url.host, url.port, asio::as_tuple(asio::use_awaitable));
        if (rec) {
            co_return "cannot resolve " + url.host + ": " + rec.message();
        }
        if (url.tls) {
            secure.emplace(ioc, *ssl);
        } else {
            plain.emplace(ioc);
        }
        lowest().expires_after(timeout);
        auto [cec, ep] = co_await lowest().async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
        if (cec) {
            close();
            co_return "cannot connect to " + url.redacted + ": " + cec.message();
        }
        if (secure) {
            if (!SSL_set_tlsext_host_name(secure->native_handle(), url.host.c_str())) {
                close();
                co_return "TLS: cannot set the server name " + url.host;
            }
            if (cfg.tls_verify) {
                secure->set_verify_callback(asio::ssl::host_name_verification(url.host));
            }
            auto [hec] = co_await secure->async_handshake(asio::ssl::stream_base::client,
                                                          asio::as_tuple(asio::use_awaitable));
            if (hec) {
                close();
                co_return "TLS handshake with " + url.redacted + " failed: " + hec.message();
            }
        }
        co_return std::string{};
    }

    template <class Stream>
    asio::awaitable<error_code> write_read(Stream& s, http::request<http::string_body> const& req,
                                           http::response<http::string_body>& res) {
        lowest().expires_after(timeout);
        auto [wec, wn] = co_await http::async_write(s, req, asio::as_tuple(asio::use_awaitable));
        if (wec) {
            co_return wec;
        }
        http::response_parser<http::string_body> parser;
        parser.body_limit(body_limit);
        lowest().expires_after(timeout);
        auto [rec, rn] = co_await http::async_read(s, buffer, parser, asio::as_tuple(asio::use_awaitable));
        if (!rec) {
            res = parser.release();
        }
        co_return rec;
    }

    // One request on the kept connection; a connection the server closed
    // meanwhile is reopened once.
    asio::awaitable<exchange_result> exchange(http::request<http::string_body> req) {
        exchange_result out;
        for (int attempt = 0; attempt < 2; ++attempt) {
            bool const reused = plain.has_value() || secure.has_value();
            if (!reused) {
                if (auto err = co_await connect(); !err.empty()) {
                    out.error = err;
                    co_return out;
                }
            }
            error_code ec = secure ? co_await write_read(*secure, req, out.response)
                                   : co_await write_read(*plain, req, out.response);
            if (!ec) {
                if (!out.response.keep_alive()) {
                    close();
                }
                co_return out;
            }
            close();
            bool const stale = reused && (ec == http::error::end_of_stream || ec == asio::error::eof ||
                                          ec == asio::error::connection_reset || ec == asio::error::broken_pipe);
            if (!stale) {
                out.error = "request to " + url.redacted + " failed: " + ec.message();
                co_return out;
            }
        }
        out.error = "request to " + url.redacted + " failed: the server keeps closing the connection";
        co_return out;
    }

    exchange_result run(http::request<http::string_body> req) {
        std::optional<exchange_result> out;
        std::exception_ptr failure;
        asio::co_spawn(ioc, exchange(std::move(req)), [&](std::exception_ptr e, exchange_result r) {
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

    http::request<http::string_body> request(http::verb verb, std::string target) const {
        http::request<http::string_body> req{verb, url.prefix + target, 11};
        req.set(http::field::host, url.host);
        req.set(http::field::user_agent, "couch-kafka-bridge");
        req.set(http::field::accept, "application/json");
        if (cfg.auth == client_config::auth_mode::cookie) {
            if (!cookie.empty()) {
                req.set(http::field::cookie, cookie);
            }
        } else if (!url.user.empty()) {
            req.set(http::field::authorization, "Basic " + base64(url.user + ":" + url.password));
        }
        req.keep_alive(true);
        return req;
    }

    // POST /_session; keeps the AuthSession cookie. Returns an error text.
    std::string login() {
        auto req = request(http::verb::post, "/_session");
        req.set(http::field::content_type, "application/x-www-form-urlencoded");
        req.body() = "name=" + url_encode(url.user) + "&password=" + url_encode(url.password);
        req.prepare_payload();
        auto r = run(std::move(req));
        if (!r.error.empty()) {
            return r.error;
        }
        if (r.response.result_int() != 200) {
            return "CouchDB refused the session login (" + std::to_string(r.response.result_int()) + ")";
        }
        auto set_cookie = std::string(r.response[http::field::set_cookie]);
        auto const end = set_cookie.find(';');
        cookie = set_cookie.substr(0, end);
        if (cookie.rfind("AuthSession=", 0) != 0) {
            cookie.clear();
            return "CouchDB's session login set no AuthSession cookie";
        }
        return {};
    }

    struct posted {
        std::string error;
        std::string body;
    };

    // POST {prefix}/{db}{path} with a JSON body; a 200 body, or an error text.
    posted post_json(std::string const& database, std::string const& path, std::string const& body) {
        bool const cookie_auth = cfg.auth == client_config::auth_mode::cookie;
        exchange_result r;
        for (int attempt = 0; attempt < 2; ++attempt) {
            if (cookie_auth && cookie.empty()) {
                if (auto err = login(); !err.empty()) {
                    return {err, {}};
                }
            }
            auto req = request(http::verb::post, "/" + url_encode(database) + path);
            req.set(http::field::content_type, "application/json");
            req.body() = body;
            req.prepare_payload();
            r = run(std::move(req));
            if (!r.error.empty()) {
                return {r.error, {}};
            }
            if (r.response.result_int() == 401 && cookie_auth && attempt == 0) {
                cookie.clear(); // the session expired: log in again, once
                continue;
            }
            break;
        }
        auto const status = r.response.result_int();
        if (status == 200) {
            return {{}, std::move(r.response.body())};
        }
        auto reason = server_reason(r.response.body());
        std::string what = status == 401 || status == 403 ? "CouchDB refused the credentials"
                           : status == 404              ? "database '" + database + "' does not exist"
                                                        : path.substr(1) + " on database '" + database + "' failed";
        return {what + " (" + std::to_string(status) + (reason.empty() ? "" : " " + reason) + ")", {}};
    }

    client_config cfg;
    parsed_url url;
    std::chrono::milliseconds timeout;
    asio::io_context ioc;
    std::unique_ptr<asio::ssl::context> ssl;
    std::optional<beast::tcp_stream> plain;
    std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
    beast::flat_buffer buffer;
    std::string cookie;
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
