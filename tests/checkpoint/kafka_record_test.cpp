// The records of the Kafka checkpoint store: what a key and a value look
// like on the wire, what decodes, and what is refused as foreign or corrupt.
#include "checkpoint/kafka_store.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <stdexcept>

BOOST_AUTO_TEST_SUITE(kafka_record)

BOOST_AUTO_TEST_CASE(a_key_is_the_json_array_of_source_and_database) {
    checkpoint::key k{"http://couch:5984", "a/b\"c"};
    auto raw = checkpoint::encode_record_key(k);
    BOOST_TEST(raw == R"(["http://couch:5984","a/b\"c"])");
    auto back = checkpoint::decode_record_key(raw);
    BOOST_REQUIRE(back.has_value());
    BOOST_TEST((*back == k));
    // ("a/b","c") and ("a","b/c") stay apart.
    BOOST_TEST(checkpoint::encode_record_key({"a/b", "c"}) != checkpoint::encode_record_key({"a", "b/c"}));
}

BOOST_AUTO_TEST_CASE(foreign_keys_do_not_decode) {
    for (auto raw : {"", "not json", "{}", "[]", R"(["only one"])", R"(["a","b","c"])", R"([1,"db"])",
                     R"(["src",""])", R"(["src",null])"}) {
        BOOST_TEST(!checkpoint::decode_record_key(raw).has_value(), raw);
    }
}

BOOST_AUTO_TEST_CASE(a_value_keeps_the_seq_byte_exact_and_the_shard_uuids) {
    checkpoint::position p{R"("12-g1AAAA\u00e9x")", 1764672000123, "0.1.0"};
    auto raw = checkpoint::encode_record_value(p, {"00000000-7fffffff:a1b2c3d", "80000000-ffffffff:e4f5a6b"});
    auto v = boost::json::parse(raw).as_object();
    BOOST_TEST(v.at("seq_json").as_string() == R"("12-g1AAAA\u00e9x")"); // the escape is kept, not decoded
    BOOST_TEST(v.at("shard_uuids").as_array().size() == 2u);
    auto back = checkpoint::decode_record_value(raw);
    BOOST_TEST((back == p));
    // No uuids known: the field is left out.
    BOOST_TEST(!boost::json::parse(checkpoint::encode_record_value(p, {})).as_object().contains("shard_uuids"));
}

BOOST_AUTO_TEST_CASE(corrupt_values_are_refused_with_a_reason) {
    for (auto raw : {"", "{", "[]", R"({"seq_json":12})", R"({"seq_json":"not a seq","written_unix_ms":1,"bridge_version":"x"})",
                     R"({"seq_json":"42","bridge_version":"x"})"}) {
        BOOST_CHECK_THROW(checkpoint::decode_record_value(raw), std::invalid_argument);
    }
}

BOOST_AUTO_TEST_SUITE_END()
