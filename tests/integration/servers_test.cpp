// Proves from C++ that both real servers the harness starts work: a CouchDB
// request over Beast, and a produce + consume round trip through librdkafka.
#include "tests/support/test_env.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <memory>
#include <string>

namespace http = boost::beast::http;
using boost::asio::ip::tcp;

namespace {

struct url_parts {
    std::string host;
    std::string port;
};

url_parts split_url(std::string const& url) {
    auto rest = url.substr(url.find("://") + 3);
    auto colon = rest.find(':');
    auto slash = rest.find('/');
    return {rest.substr(0, colon), rest.substr(colon + 1, slash == std::string::npos ? std::string::npos : slash - colon - 1)};
}

http::response<http::string_body> request(http::verb verb, std::string const& target, std::string body = {}) {
    auto parts = split_url(test_support::couch_url());
    boost::asio::io_context ioc;
    tcp::resolver resolver(ioc);
    boost::beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(resolver.resolve(parts.host, parts.port));
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, parts.host);
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    http::write(stream, req);
    boost::beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    return res;
}

struct rk_deleter {
    void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using rk_ptr = std::unique_ptr<rd_kafka_t, rk_deleter>;

rk_ptr make_client(rd_kafka_type_t type, std::initializer_list<std::pair<char const*, std::string>> props) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char err[512];
    for (auto const& [k, v] : props) {
        if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            throw std::runtime_error(err);
        }
    }
    rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(err);
    }
    return rk_ptr(rk);
}

} // namespace

BOOST_AUTO_TEST_SUITE(servers)

BOOST_AUTO_TEST_CASE(couch_server_answers_over_beast) {
    auto db = test_support::unique_name("servers");
    auto welcome = request(http::verb::get, "/");
    BOOST_TEST(welcome.result_int() == 200);
    BOOST_TEST(boost::json::parse(welcome.body()).is_object());

    BOOST_TEST(request(http::verb::put, "/" + db).result_int() == 201);
    auto put = request(http::verb::put, "/" + db + "/doc1", R"({"doc_type":"CommCareCase","domain":"d"})");
    BOOST_TEST(put.result_int() == 201);

    auto changes = request(http::verb::get, "/" + db + "/_changes?include_docs=true");
    BOOST_REQUIRE(changes.result_int() == 200);
    auto results = boost::json::parse(changes.body()).at("results").as_array();
    BOOST_REQUIRE(results.size() == 1u);
    BOOST_TEST(results[0].at("id").as_string() == "doc1");
    BOOST_TEST(results[0].at("doc").at("doc_type").as_string() == "CommCareCase");
}

BOOST_AUTO_TEST_CASE(kafka_broker_round_trip_through_librdkafka) {
    auto brokers = test_support::kafka_brokers();
    auto topic = test_support::unique_name("servers-roundtrip");
    auto producer = make_client(RD_KAFKA_PRODUCER, {{"bootstrap.servers", brokers}, {"enable.idempotence", "true"}});
    std::string const value = R"({"document_id":"doc1"})";
    auto err = rd_kafka_producev(producer.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
                                 RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                 RD_KAFKA_V_KEY("doc1", 4), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    BOOST_REQUIRE_MESSAGE(err == RD_KAFKA_RESP_ERR_NO_ERROR, rd_kafka_err2str(err));
    BOOST_REQUIRE(rd_kafka_flush(producer.get(), 60000) == RD_KAFKA_RESP_ERR_NO_ERROR);

    auto consumer = make_client(RD_KAFKA_CONSUMER, {{"bootstrap.servers", brokers},
                                                    {"group.id", test_support::unique_name("servers-group")},
                                                    {"auto.offset.reset", "earliest"}});
    rd_kafka_poll_set_consumer(consumer.get());
    auto* subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic.c_str(), RD_KAFKA_PARTITION_UA);
    BOOST_REQUIRE(rd_kafka_subscribe(consumer.get(), subs) == RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(subs);

    std::string got_key;
    std::string got_value;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (got_value.empty() && std::chrono::steady_clock::now() < deadline) {
        rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer.get(), 500);
        if (!m) {
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            got_key.assign(static_cast<char const*>(m->key), m->key_len);
            got_value.assign(static_cast<char const*>(m->payload), m->len);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(consumer.get());
    BOOST_TEST(got_key == "doc1");
    BOOST_TEST(got_value == value);
}

BOOST_AUTO_TEST_SUITE_END()
