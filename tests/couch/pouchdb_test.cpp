// The feed against the real pouchdb-server (integer seqs, Content-Length
// normal feed, chunked continuous feed).
#include "couch/changes_feed.hpp"
#include "metrics/registry.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <map>
#include <set>
#include <string>

namespace asio = boost::asio;
namespace http = boost::beast::http;
using namespace std::chrono_literals;

namespace {

// A blocking one-shot HTTP request for test setup; returns the parsed body.
boost::json::value call(http::verb verb, std::string const& target, std::string const& body = {}) {
    auto const url = test_support::couch_url();
    auto const hostport = url.substr(url.find("://") + 3);
    auto const host = hostport.substr(0, hostport.find(':'));
    auto const port = hostport.substr(hostport.find(':') + 1);
    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    boost::beast::tcp_stream stream(io);
    stream.connect(resolver.resolve(host, port));
    http::request<http::string_body> req(verb, target, 11);
    req.set(http::field::host, host);
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    boost::beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    BOOST_REQUIRE_MESSAGE(res.result_int() < 300, target << " -> " << res.result_int() << " " << res.body());
    return boost::json::parse(res.body());
}

std::string put_doc(std::string const& db, std::string const& id, std::string const& body) {
    auto r = call(http::verb::put, "/" + db + "/" + couch::url_encode(id), body);
    return std::string(r.at("rev").as_string());
}

struct read_result {
    std::vector<couch::row> rows;
    std::string error;
};

// Follows `db` from `since` until `want` rows arrived (60 s safety net).
read_result follow(std::string const& db, couch::since since, std::size_t want, std::size_t batch_limit = 3) {
    read_result out;
    asio::io_context io;
    auto strand = asio::make_strand(io);
    metrics::registry reg;
    couch::client_config cfg;
    cfg.url = test_support::couch_url();
    couch::feed_options opt;
    opt.database = db;
    opt.since = std::move(since);
    opt.heartbeat = 500ms;
    opt.keep_doc_text = true; // the tests read documents back
    opt.batch_limit = batch_limit; // by default 3: several catch-up batches
    couch::changes_feed feed(strand, cfg, opt, reg);
    bool done = false;
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        try {
            while (out.rows.size() < want) {
                for (auto& r : co_await feed.next()) {
                    out.rows.push_back(std::move(r));
                }
            }
        } catch (std::exception const& e) {
            out.error = e.what();
        }
        done = true;
        feed.stop();
    }, asio::detached);
    asio::steady_timer t(strand);
    asio::co_spawn(strand, [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 6000 && !done; ++i) {
            t.expires_after(10ms);
            co_await t.async_wait(asio::use_awaitable);
        }
        if (!done) {
            out.error = "timed out; state " + std::string(couch::to_string(feed.status().state)) + ", " +
                        feed.status().last_error;
            feed.stop();
        }
    }, asio::detached);
    io.run();
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(pouchdb)

BOOST_AUTO_TEST_CASE(follows_from_0_and_from_a_saved_seq) {
    auto const db = test_support::unique_name("ckb-couch");
    call(http::verb::put, "/" + db);
    std::vector<std::string> const ids = {"a/b", "\xc3\xbc-doc", "100%", "with space", "plain", "_design/ddoc"};
    for (auto const& id : ids) {
        put_doc(db, id, R"({"doc_type":"Thing","n":1})");
    }

    auto const first = follow(db, couch::since::beginning(), ids.size());
    BOOST_TEST(first.error.empty(), first.error);
    std::map<std::string, int> seen;
    for (auto const& r : first.rows) {
        ++seen[r.id];
        BOOST_TEST(!r.seq.empty());
        BOOST_TEST(r.has_doc);
    }
    for (auto const& id : ids) {
        BOOST_TEST(seen[id] == 1, "id " << id);
    }
    BOOST_TEST(first.rows.size() == ids.size());

    // Update one doc and delete another; following from the saved seq gives exactly those two.
    auto const saved = first.rows.back().seq;
    auto const cur = call(http::verb::get, "/" + db + "/" + couch::url_encode("with space"));
    put_doc(db, "with space", R"({"doc_type":"Thing","n":2,"_rev":")" + std::string(cur.at("_rev").as_string()) + "\"}");
    auto const del = call(http::verb::get, "/" + db + "/" + couch::url_encode("100%"));
    call(http::verb::delete_, "/" + db + "/" + couch::url_encode("100%") + "?rev=" + std::string(del.at("_rev").as_string()));

    auto const second = follow(db, couch::since::from(saved), 2);
    BOOST_TEST(second.error.empty(), second.error);
    BOOST_REQUIRE_EQUAL(second.rows.size(), 2u);
    BOOST_TEST(second.rows[0].id == "with space");
    BOOST_TEST(boost::json::parse(second.rows[0].doc_text).at("n").as_int64() == 2);
    BOOST_TEST(second.rows[1].id == "100%");
    BOOST_TEST(second.rows[1].deleted);
    BOOST_TEST(second.rows[1].seq.raw_json().find('"') == std::string::npos); // integer seqs stay integers
}

// pouchdb frames a normal-feed batch with Content-Length; a batch larger
// than any header-time body limit (here ~180 KiB) must still be read
// (regression: it used to fail forever with "body limit exceeded").
BOOST_AUTO_TEST_CASE(catch_up_batch_larger_than_64_kib_is_read) {
    auto const db = test_support::unique_name("pouch-big");
    call(http::verb::put, "/" + db);
    boost::json::array docs;
    std::string const filler(3000, 'x');
    for (int i = 0; i < 60; ++i) {
        docs.push_back(boost::json::object{{"_id", "big-" + std::to_string(i)}, {"doc_type", "CommCareCase"},
                                           {"filler", filler}});
    }
    call(http::verb::post, "/" + db + "/_bulk_docs", boost::json::serialize(boost::json::object{{"docs", docs}}));
    auto r = follow(db, couch::since::beginning(), 60, 1000);
    BOOST_TEST(r.error.empty(), r.error);
    BOOST_REQUIRE(r.rows.size() == 60u);
    std::set<std::string> ids;
    for (auto const& row : r.rows) {
        ids.insert(row.id);
        BOOST_TEST(row.has_doc);
    }
    BOOST_TEST(ids.size() == 60u);
}

BOOST_AUTO_TEST_SUITE_END()
