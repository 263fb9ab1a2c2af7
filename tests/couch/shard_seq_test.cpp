#include "couch/shard_seq.hpp"
#include "tests/support/test_env.hpp"

#include <boost/test/unit_test.hpp>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <set>
#include <tuple>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

// Expected values: decoded once with the recordings' reading aid
// (fixtures/couchdb-3.4.3/tools/decode_seq.py, Python, not part of this
// project) and written here by hand; the README rows 17a, 17b and 20a give the
// same numbers in prose.

namespace {

std::string recording(std::string const& name) {
    return test_support::read_file(test_support::data_dir() + "/couchdb-3.4.3/" + name);
}

// The value of the first `"key":"..."` in a recording, without quotes.
std::string member(std::string const& text, std::string const& key, std::size_t nth = 0) {
    std::string const needle = "\"" + key + "\":\"";
    std::size_t pos = 0;
    for (std::size_t i = 0; i <= nth; ++i) {
        pos = text.find(needle, i == 0 ? 0 : pos + 1);
        BOOST_REQUIRE(pos != std::string::npos);
    }
    auto const start = pos + needle.size();
    return text.substr(start, text.find('"', start) - start);
}

couch::decoded_seq decode(std::string const& text) { return couch::decode_shard_seq(std::string_view(text)); }

// Every quoted `"<digits>-g<base64url>"` in a text (seq values in JSON, and
// the quoted ids of eventsource).
void collect_seqs(std::string_view text, std::set<std::string>& out) {
    auto is_b64 = [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    };
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '"') {
            continue;
        }
        std::size_t j = i + 1;
        while (j < text.size() && text[j] >= '0' && text[j] <= '9') {
            ++j;
        }
        if (j == i + 1 || j + 2 >= text.size() || text[j] != '-' || text[j + 1] != 'g') {
            continue;
        }
        std::size_t k = j + 1;
        while (k < text.size() && is_b64(text[k])) {
            ++k;
        }
        if (k < text.size() && text[k] == '"') {
            out.insert(std::string(text.substr(i + 1, k - i - 1)));
            i = k;
        }
    }
}

// --- building terms by hand (Erlang external term format) ---

struct term {
    std::string bytes;
    term& u8(unsigned v) {
        bytes.push_back(static_cast<char>(v & 0xff));
        return *this;
    }
    term& be32(std::uint32_t v) {
        for (int s = 24; s >= 0; s -= 8) {
            u8(v >> s);
        }
        return *this;
    }
    term& atom(std::string_view a) { // ATOM_EXT, as CouchDB 3.4.3 on OTP 25 writes it
        u8(100).u8(a.size() >> 8).u8(a.size());
        bytes += a;
        return *this;
    }
    term& integer(std::uint64_t v) {
        if (v < 256) {
            return u8(97).u8(static_cast<unsigned>(v));
        }
        if (v < (1u << 27)) {
            return u8(98).be32(static_cast<std::uint32_t>(v));
        }
        std::string digits;
        for (; v != 0; v >>= 8) {
            digits.push_back(static_cast<char>(v & 0xff));
        }
        u8(110).u8(digits.size()).u8(0);
        bytes += digits;
        return *this;
    }
    term& binary(std::string_view b) {
        u8(109).be32(static_cast<std::uint32_t>(b.size()));
        bytes += b;
        return *this;
    }
    term& tuple(unsigned arity) { return u8(104).u8(arity); }
    term& list(std::uint32_t n) { return u8(108).be32(n); }
    term& nil() { return u8(106); }
    term& raw(std::string_view b) {
        bytes += b;
        return *this;
    }
    // {Node, [B, E], {Seq, Uuid, Node}}
    term& entry(std::string_view node, std::uint32_t b, std::uint32_t e, std::uint64_t seq, std::string_view uuid) {
        tuple(3).atom(node).list(2).integer(b).integer(e).nil();
        return tuple(3).integer(seq).binary(uuid).atom(node);
    }
};

std::string base64url(std::string_view in) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        acc = (acc << 8) | static_cast<std::uint8_t>(c);
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out.push_back(alphabet[(acc >> bits) & 63]);
        }
    }
    if (bits > 0) {
        out.push_back(alphabet[(acc << (6 - bits)) & 63]);
    }
    return out;
}

// "N-" + base64url(131 ++ term), uncompressed.
std::string plain_seq(std::uint64_t n, term const& t) {
    return std::to_string(n) + "-" + base64url(std::string(1, '\x83') + t.bytes);
}

// "N-" + base64url(131, 80, size, zlib(term)); `declared` overrides the size.
std::string compressed_seq(std::uint64_t n, std::string_view term_bytes, std::int64_t declared = -1) {
    uLongf len = compressBound(static_cast<uLong>(term_bytes.size()));
    std::string z(len, '\0');
    BOOST_REQUIRE(compress2(reinterpret_cast<Bytef*>(z.data()), &len, reinterpret_cast<Bytef const*>(term_bytes.data()),
                            static_cast<uLong>(term_bytes.size()), 6) == Z_OK);
    z.resize(len);
    term head;
    head.u8(131).u8(80).be32(static_cast<std::uint32_t>(declared >= 0 ? declared : static_cast<std::int64_t>(term_bytes.size())));
    return std::to_string(n) + "-" + base64url(head.bytes + z);
}

constexpr char node[] = "couchdb@127.0.0.1";

void check_shard(couch::shard_position const& p, std::string_view range, std::uint64_t seq, std::string_view uuid) {
    BOOST_TEST(p.node == node);
    BOOST_TEST(p.range.to_string() == range);
    BOOST_TEST(p.seq == seq);
    BOOST_TEST(p.uuid_prefix == uuid);
    BOOST_TEST(p.epoch_node == (uuid.empty() ? "" : node));
}

} // namespace

BOOST_AUTO_TEST_SUITE(shard_seq)

BOOST_AUTO_TEST_CASE(decodes_17a_update_seq_q4) {
    auto const d = decode(member(recording("17a_db_info_before_recreate.http"), "update_seq"));
    BOOST_REQUIRE(d.shape == couch::seq_shape::clustered);
    BOOST_TEST(d.number == 2u);
    BOOST_TEST(d.compressed);
    BOOST_REQUIRE_EQUAL(d.shards.size(), 4u);
    // In the term's order: highest range first.
    check_shard(d.shards[0], "c0000000-ffffffff", 1, "b767cb4");
    check_shard(d.shards[1], "80000000-bfffffff", 0, "b6c8f7d");
    check_shard(d.shards[2], "40000000-7fffffff", 1, "5cdde8e");
    check_shard(d.shards[3], "00000000-3fffffff", 0, "681d477");
    BOOST_TEST(d.shards[0].range.begin == 0xc0000000u);
    BOOST_TEST(d.shards[0].range.end == 0xffffffffu);
}

BOOST_AUTO_TEST_CASE(decodes_17b_update_seq_after_recreate) {
    auto const d = decode(member(recording("17b_db_info_after_recreate.http"), "update_seq"));
    BOOST_REQUIRE(d.shape == couch::seq_shape::clustered);
    BOOST_TEST(d.number == 1u);
    BOOST_REQUIRE_EQUAL(d.shards.size(), 4u);
    check_shard(d.shards[0], "c0000000-ffffffff", 0, "ceb3b3a");
    check_shard(d.shards[1], "80000000-bfffffff", 1, "8a89b74");
    check_shard(d.shards[2], "40000000-7fffffff", 0, "6c3dd55");
    check_shard(d.shards[3], "00000000-3fffffff", 0, "d9983b0");
}

BOOST_AUTO_TEST_CASE(purge_seq_holds_bare_zeros) {
    auto const d = decode(member(recording("17a_db_info_before_recreate.http"), "purge_seq"));
    BOOST_REQUIRE(d.shape == couch::seq_shape::clustered);
    BOOST_TEST(d.number == 0u);
    BOOST_REQUIRE_EQUAL(d.shards.size(), 4u);
    for (auto const& s : d.shards) {
        BOOST_TEST(!s.has_uuid());
        BOOST_TEST(s.seq == 0u);
        BOOST_TEST(s.epoch_node.empty());
    }
    check_shard(d.shards[3], "00000000-3fffffff", 0, "");
}

BOOST_AUTO_TEST_CASE(uncompressed_term_q1) {
    // 14e's purge_seq is the one uncompressed term in the recordings (131
    // directly followed by the list); its range end 4294967295 is a SMALL_BIG.
    auto const text = recording("14e_db_info_q1.http");
    auto const purge = decode(member(text, "purge_seq"));
    BOOST_REQUIRE(purge.shape == couch::seq_shape::clustered);
    BOOST_TEST(!purge.compressed);
    BOOST_REQUIRE_EQUAL(purge.shards.size(), 1u);
    check_shard(purge.shards[0], "00000000-ffffffff", 0, "");

    auto const update = decode(member(text, "update_seq"));
    BOOST_REQUIRE(update.shape == couch::seq_shape::clustered);
    BOOST_TEST(update.compressed);
    BOOST_TEST(update.number == 10u);
    BOOST_REQUIRE_EQUAL(update.shards.size(), 1u);
    check_shard(update.shards[0], "00000000-ffffffff", 10, "a67c3f3");
}

BOOST_AUTO_TEST_CASE(q8_seq_interval_row_has_unreported_shards) {
    auto const text = recording("20a_changes_q8_seq_interval.http");
    auto const row2 = decode(member(text, "seq"));
    BOOST_REQUIRE(row2.shape == couch::seq_shape::clustered);
    BOOST_TEST(row2.number == 2u);
    BOOST_REQUIRE_EQUAL(row2.shards.size(), 8u);
    check_shard(row2.shards[0], "00000000-1fffffff", 0, "0002d87");
    check_shard(row2.shards[1], "20000000-3fffffff", 1, "73ca9bb");
    check_shard(row2.shards[2], "40000000-5fffffff", 1, "ad33df3");
    check_shard(row2.shards[3], "60000000-7fffffff", 0, "");
    check_shard(row2.shards[7], "e0000000-ffffffff", 0, "");

    auto const last = decode(member(text, "last_seq"));
    BOOST_REQUIRE(last.shape == couch::seq_shape::clustered);
    BOOST_TEST(last.number == 10u);
    BOOST_REQUIRE_EQUAL(last.shards.size(), 8u);
    std::uint64_t sum = 0;
    for (auto const& s : last.shards) {
        BOOST_TEST(s.has_uuid());
        sum += s.seq;
    }
    BOOST_TEST(sum == 10u);
}

// Every clustered seq in every recording decodes, and each obeys what
// CouchDB guarantees: the prefix is the sum of the shard seqs, the ranges
// tile 00000000-ffffffff, one node, 7-character hex uuid prefixes. The
// counts (741 distinct seqs, 740 compressed, 41 bare entries) come from the
// Python reading aid run over the same files.
BOOST_AUTO_TEST_CASE(every_recorded_seq_decodes) {
    std::set<std::string> seqs;
    for (auto const& f : std::filesystem::directory_iterator(test_support::data_dir() + "/couchdb-3.4.3")) {
        if (f.path().extension() == ".http") {
            collect_seqs(test_support::read_file(f.path().string()), seqs);
        }
    }
    BOOST_TEST(seqs.size() == 741u);
    std::size_t compressed = 0;
    std::size_t bare = 0;
    for (auto const& s : seqs) {
        BOOST_TEST_CONTEXT(s) {
            auto const d = decode(s);
            BOOST_REQUIRE(d.shape == couch::seq_shape::clustered);
            compressed += d.compressed ? 1 : 0;
            std::uint64_t sum = 0;
            std::vector<couch::shard_range> ranges;
            for (auto const& p : d.shards) {
                sum += p.seq;
                ranges.push_back(p.range);
                BOOST_TEST(p.node == node);
                if (p.has_uuid()) {
                    BOOST_TEST(p.uuid_prefix.size() == 7u);
                    BOOST_TEST(p.uuid_prefix.find_first_not_of("0123456789abcdef") == std::string::npos);
                    BOOST_TEST(p.epoch_node == node);
                } else {
                    ++bare;
                }
            }
            BOOST_TEST(sum == d.number);
            std::sort(ranges.begin(), ranges.end(), [](auto const& a, auto const& b) { return a.begin < b.begin; });
            BOOST_TEST(ranges.front().begin == 0u);
            BOOST_TEST(ranges.back().end == 0xffffffffu);
            for (std::size_t i = 1; i < ranges.size(); ++i) {
                BOOST_TEST(std::uint64_t{ranges[i - 1].end} + 1 == ranges[i].begin);
            }
        }
    }
    BOOST_TEST(compressed == 740u);
    BOOST_TEST(bare == 41u);
}

BOOST_AUTO_TEST_CASE(couch_seq_json_forms) {
    auto const s17 = member(recording("17a_db_info_before_recreate.http"), "update_seq");
    auto const d = couch::decode_shard_seq(couch::seq::from_raw_json("\"" + s17 + "\""));
    BOOST_TEST((d.shape == couch::seq_shape::clustered));
    BOOST_TEST(d.shards.size() == 4u);

    auto const n = couch::decode_shard_seq(couch::seq::from_raw_json("42"));
    BOOST_TEST((n.shape == couch::seq_shape::integer));
    BOOST_TEST(n.number == 42u);
    BOOST_TEST((couch::decode_shard_seq(couch::seq::from_raw_json("-1")).shape == couch::seq_shape::opaque));
    BOOST_TEST((couch::decode_shard_seq(couch::seq::from_raw_json("1.5")).shape == couch::seq_shape::opaque));
    BOOST_TEST((couch::decode_shard_seq(couch::seq{}).shape == couch::seq_shape::opaque));
    BOOST_TEST((couch::decode_shard_seq(couch::seq::from_raw_json("\"" + s17)).shape == couch::seq_shape::opaque));
    BOOST_TEST((couch::decode_shard_seq(couch::seq::from_raw_json("\"2-g1\\u0041AAA\"")).shape ==
                couch::seq_shape::opaque));
    BOOST_TEST((couch::decode_shard_seq(couch::seq::from_raw_json("\"7\"")).shape == couch::seq_shape::integer));
}

BOOST_AUTO_TEST_CASE(garbage_is_opaque) {
    for (std::string const s : {"", "now", "-", "1-", "-5", "x-g1AAAA", "1-g1AAAA", "1-!!!!", "1-g1AAAA=x",
                                "99999999999999999999999-g1AAAA", "1-AAAA", "1-gw", "1-g2o", "1-g2wAAAAAag",
                                "1-g2gDZAABYWwAAAACYQBhAWphAA"}) {
        BOOST_TEST_CONTEXT("'" << s << "'") {
            auto const d = decode(s);
            BOOST_TEST((d.shape == couch::seq_shape::opaque));
            BOOST_TEST(!d.opaque_reason.empty());
            BOOST_TEST(d.shards.empty());
        }
    }
    auto const max = decode("18446744073709551615");
    BOOST_TEST((max.shape == couch::seq_shape::integer));
    BOOST_TEST((decode("18446744073709551616").shape == couch::seq_shape::opaque));
}

BOOST_AUTO_TEST_CASE(every_truncation_is_opaque) {
    for (auto const& text : {member(recording("17a_db_info_before_recreate.http"), "update_seq"),
                             member(recording("14e_db_info_q1.http"), "purge_seq")}) {
        for (std::size_t n = 0; n < text.size(); ++n) {
            BOOST_TEST_CONTEXT("cut at " << n) {
                BOOST_TEST((decode(text.substr(0, n)).shape != couch::seq_shape::clustered));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(hand_built_terms) {
    term t;
    t.list(2).entry(node, 0, 0x7fffffff, 300000000000ull, "aaaaaaa").entry("n2@h", 0x80000000u, 0xffffffffu, 5, "bbbbbbb").nil();
    auto const d = decode(compressed_seq(300000000005ull, t.bytes));
    BOOST_REQUIRE(d.shape == couch::seq_shape::clustered);
    BOOST_REQUIRE_EQUAL(d.shards.size(), 2u);
    BOOST_TEST(d.shards[0].seq == 300000000000ull); // SMALL_BIG, 5 bytes
    BOOST_TEST(d.shards[1].node == "n2@h");
    BOOST_TEST(d.shards[1].range.to_string() == "80000000-ffffffff");
    // The same term uncompressed decodes the same.
    auto const p = decode(plain_seq(300000000005ull, t));
    BOOST_REQUIRE(p.shape == couch::seq_shape::clustered);
    BOOST_TEST(!p.compressed);
    BOOST_TEST(p.shards[1].uuid_prefix == "bbbbbbb");

    // CouchDB 2.0's {Seq, Uuid}; a UTF-8 small atom; a STRING_EXT range
    // (term_to_binary's form of a list of bytes); a Latin-1 atom converted.
    term old;
    old.list(3);
    old.tuple(3).u8(119).u8(4).raw("n\xc3\xa9x").list(2).integer(0).integer(9).nil().tuple(2).integer(7).binary("c1");
    old.tuple(3).atom("n\xe9x").u8(107).u8(0).u8(2).u8(10).u8(20).integer(3);
    old.tuple(3).u8(115).u8(1).raw("z").list(2).integer(21).integer(0xffffffffu).nil().tuple(3).integer(1).binary("").atom("z");
    old.nil();
    auto const o = decode(plain_seq(11, old));
    BOOST_REQUIRE(o.shape == couch::seq_shape::clustered);
    BOOST_REQUIRE_EQUAL(o.shards.size(), 3u);
    BOOST_TEST(o.shards[0].node == "n\xc3\xa9x");
    BOOST_TEST(o.shards[0].uuid_prefix == "c1");
    BOOST_TEST(o.shards[0].epoch_node.empty());
    BOOST_TEST(o.shards[1].node == "n\xc3\xa9x"); // Latin-1 0xe9 -> UTF-8
    BOOST_TEST(o.shards[1].range.begin == 10u);
    BOOST_TEST(o.shards[1].range.end == 20u);
    BOOST_TEST(o.shards[1].seq == 3u);
    BOOST_TEST(!o.shards[1].has_uuid());
    BOOST_TEST(!o.shards[2].has_uuid()); // an empty binary is no uuid
}

BOOST_AUTO_TEST_CASE(terms_outside_the_subset_are_opaque) {
    auto shard = [](term& t) { t.entry(node, 0, 0xffffffffu, 1, "aaaaaaa"); };
    std::vector<std::pair<std::string, term>> cases;
    auto add = [&](std::string name) -> term& { return cases.emplace_back(std::move(name), term{}).second; };
    { auto& t = add("split shard {Seq, {split, Uuid}, Node}");
      t.list(1).tuple(3).atom(node).list(2).integer(0).integer(5).nil();
      t.tuple(3).integer(1).tuple(2).atom("split").binary("aaaaaaa").atom(node).nil(); }
    { auto& t = add("improper list"); t.list(1); shard(t); t.integer(0); }
    { auto& t = add("trailing bytes"); t.list(1); shard(t); t.nil().u8(0); }
    { auto& t = add("empty list"); t.nil(); }
    { auto& t = add("list claims 2, holds 1"); t.list(2); shard(t); t.nil(); }
    { auto& t = add("entry arity 4"); t.list(1).tuple(4).atom(node).list(2).integer(0).integer(1).nil().integer(0).integer(0).nil(); }
    { auto& t = add("range of 3"); t.list(1).tuple(3).atom(node).list(3).integer(0).integer(1).integer(2).nil().integer(0).nil(); }
    { auto& t = add("range backwards"); t.list(1).tuple(3).atom(node).list(2).integer(9).integer(1).nil().integer(0).nil(); }
    { auto& t = add("range end past 32 bits"); t.list(1).tuple(3).atom(node).list(2).integer(0).integer(0x100000000ull).nil().integer(0).nil(); }
    { auto& t = add("negative seq"); t.list(1).tuple(3).atom(node).list(2).integer(0).integer(1).nil().u8(98).be32(0xffffffffu).nil(); }
    { auto& t = add("negative big"); t.list(1).tuple(3).atom(node).list(2).integer(0).integer(1).nil().u8(110).u8(1).u8(1).u8(5).nil(); }
    { auto& t = add("big of 9 bytes"); t.list(1).tuple(3).atom(node).list(2).integer(0).integer(1).nil().u8(110).u8(9).u8(0).raw(std::string(9, '\1')).nil(); }
    { auto& t = add("node is a binary"); t.list(1).tuple(3).binary("n").list(2).integer(0).integer(1).nil().integer(0).nil(); }
    { auto& t = add("uuid is an atom"); t.list(1).tuple(3).atom(node).list(2).integer(0).integer(1).nil().tuple(3).integer(0).atom("u").atom(node).nil(); }
    { auto& t = add("uuid too long"); t.list(1).tuple(3).atom(node).list(2).integer(0).integer(1).nil().tuple(2).integer(0).binary(std::string(65, 'a')).nil(); }
    { auto& t = add("atom length past the data"); t.list(1).tuple(3).u8(100).u8(0xff).u8(0xff).raw("abc"); }
    { auto& t = add("a range listed twice (found by fuzz_shard_seq: it made a seq rewind against itself)");
      t.list(2).entry(node, 0, 0xffffffffu, 64, "b6c8f7d").entry("other@h", 0, 0xffffffffu, 44, "b6c8f7d").nil(); }
    { auto& t = add("float"); t.list(1).tuple(3).atom(node).list(2).integer(0).integer(1).nil().u8(70).raw(std::string(8, '\0')).nil(); }
    for (auto const& [name, t] : cases) {
        BOOST_TEST_CONTEXT(name) {
            auto const plain = decode(plain_seq(1, t));
            BOOST_TEST((plain.shape == couch::seq_shape::opaque));
            BOOST_TEST(!plain.opaque_reason.empty());
            BOOST_TEST((decode(compressed_seq(1, t.bytes)).shape == couch::seq_shape::opaque));
        }
    }
}

BOOST_AUTO_TEST_CASE(limits_make_oversized_input_opaque) {
    term two;
    two.list(2).entry(node, 0, 9, 1, "aaaaaaa").entry(node, 10, 0xffffffffu, 1, "bbbbbbb").nil();
    auto const text = compressed_seq(2, two.bytes);
    BOOST_TEST((decode(text).shape == couch::seq_shape::clustered));

    couch::shard_seq_limits one_shard;
    one_shard.max_shards = 1;
    BOOST_TEST((couch::decode_shard_seq(text, one_shard).shape == couch::seq_shape::opaque));
    couch::shard_seq_limits short_text;
    short_text.max_text_bytes = text.size() - 1;
    BOOST_TEST((couch::decode_shard_seq(text, short_text).shape == couch::seq_shape::opaque));
    couch::shard_seq_limits small_term;
    small_term.max_term_bytes = two.bytes.size() - 1;
    BOOST_TEST((couch::decode_shard_seq(text, small_term).shape == couch::seq_shape::opaque));
    BOOST_TEST((couch::decode_shard_seq(plain_seq(2, two), small_term).shape == couch::seq_shape::opaque));
    couch::shard_seq_limits short_atoms;
    short_atoms.max_atom_bytes = 4;
    BOOST_TEST((couch::decode_shard_seq(text, short_atoms).shape == couch::seq_shape::opaque));

    // The declared size is checked both ways, and a zlib bomb stops at it:
    // 16 MiB of zeros compress to ~16 KiB; declared small, it is refused
    // after inflating at most the declared bytes; declared honestly, it is
    // over max_term_bytes and never inflated.
    BOOST_TEST((decode(compressed_seq(2, two.bytes, static_cast<std::int64_t>(two.bytes.size()) - 1)).shape ==
                couch::seq_shape::opaque));
    BOOST_TEST((decode(compressed_seq(2, two.bytes, static_cast<std::int64_t>(two.bytes.size()) + 1)).shape ==
                couch::seq_shape::opaque));
    std::string const zeros(std::size_t{16} << 20, '\0');
    auto const bomb_small = compressed_seq(0, zeros, 1000);
    auto const bomb_honest = compressed_seq(0, zeros);
    BOOST_TEST(bomb_honest.size() < (std::size_t{1} << 20)); // under the text limit: the size check is what stops it
    BOOST_TEST((decode(bomb_small).shape == couch::seq_shape::opaque));
    BOOST_TEST((decode(bomb_honest).shape == couch::seq_shape::opaque));
    BOOST_TEST(decode(bomb_honest).opaque_reason == "term larger than the limit");
    // A list that claims 2^32-1 entries is refused before anything is reserved.
    term huge;
    huge.list(0xffffffffu);
    BOOST_TEST((decode(plain_seq(0, huge)).shape == couch::seq_shape::opaque));
}

// --- compare_incarnation ---

BOOST_AUTO_TEST_CASE(recreate_17a_to_17b) {
    auto const before = member(recording("17a_db_info_before_recreate.http"), "update_seq");
    auto const after = member(recording("17b_db_info_after_recreate.http"), "update_seq");
    auto const r = couch::compare_incarnation(decode(before), decode(after));
    BOOST_TEST(couch::to_string(r.verdict) == std::string("recreated"));
    BOOST_TEST(r.compared == 4u);
    BOOST_TEST(r.changed == 4u);
    BOOST_TEST(r.matching == 0u);
    BOOST_REQUIRE_EQUAL(r.replaced.size(), 4u);
    // Server order (17b's term order): c0..., 80..., 40..., 00...
    BOOST_TEST(r.replaced[0].range.to_string() == "c0000000-ffffffff");
    BOOST_TEST(r.replaced[0].checkpoint_uuid == "b767cb4");
    BOOST_TEST(r.replaced[0].server_uuid == "ceb3b3a");
    BOOST_TEST(r.replaced[3].checkpoint_uuid == "681d477");
    BOOST_TEST(r.replaced[3].server_uuid == "d9983b0");
    BOOST_TEST(r.rewinds.empty());
    // Either direction, and through couch::seq.
    auto const back = couch::compare_incarnation(couch::seq::from_raw_json("\"" + after + "\""),
                                                 couch::seq::from_raw_json("\"" + before + "\""));
    BOOST_TEST((back.verdict == couch::incarnation::recreated));
    // The same seq against itself: same incarnation.
    auto const same = couch::compare_incarnation(decode(after), decode(after));
    BOOST_TEST((same.verdict == couch::incarnation::same_incarnation));
    BOOST_TEST(same.matching == 4u);
    // purge_seq carries no uuid: unknown, never recreated.
    auto const purge = member(recording("17a_db_info_before_recreate.http"), "purge_seq");
    BOOST_TEST((couch::compare_incarnation(decode(purge), decode(after)).verdict == couch::incarnation::unknown));
}

BOOST_AUTO_TEST_CASE(recreate_06_hq_del) {
    // 06a: the old incarnation's last_seq (both shards known); 06g: the new
    // incarnation's last_seq after two new docs.
    auto const old_last = member(recording("06a_changes_before_delete.http"), "last_seq");
    auto const new_last = member(recording("06g_changes_new_incarnation_since0.http"), "last_seq");
    auto const r = couch::compare_incarnation(decode(old_last), decode(new_last));
    BOOST_TEST((r.verdict == couch::incarnation::recreated));
    BOOST_TEST(r.compared == 2u);
    // 06f's first row (since = the old last_seq) still echoes the old uuid of
    // the shard that had not sent a row yet: a row seq can look like the old
    // incarnation, which is why recreation is judged on update_seq. The
    // replaced shard is still reported.
    auto const echo = member(recording("06f_changes_since_old_incarnation_seq.http"), "seq");
    auto const e = couch::compare_incarnation(decode(old_last), decode(echo));
    BOOST_TEST((e.verdict == couch::incarnation::same_incarnation));
    BOOST_TEST(e.matching == 1u);
    BOOST_REQUIRE_EQUAL(e.replaced.size(), 1u);
    BOOST_TEST(e.replaced[0].range.to_string() == "80000000-ffffffff");
    BOOST_TEST(e.replaced[0].checkpoint_uuid == "a042563");
    BOOST_TEST(e.replaced[0].server_uuid == "c44abd6");
}

BOOST_AUTO_TEST_CASE(q8_row_seqs_move_forward_and_back) {
    auto const text = recording("20a_changes_q8_seq_interval.http");
    auto const row2 = decode(member(text, "seq"));
    auto const last = decode(member(text, "last_seq"));
    // Forward: the 3 shards row 2 knows all match; the 5 bare ones are skipped.
    auto const fwd = couch::compare_incarnation(row2, last);
    BOOST_TEST((fwd.verdict == couch::incarnation::same_incarnation));
    BOOST_TEST(fwd.compared == 3u);
    BOOST_TEST(fwd.matching == 3u);
    // Backward: a checkpoint at last_seq and a server at row 2 is a rewind of
    // two shards (2 -> 1 each).
    auto const back = couch::compare_incarnation(last, row2);
    BOOST_TEST((back.verdict == couch::incarnation::rewound));
    BOOST_REQUIRE_EQUAL(back.rewinds.size(), 2u);
    BOOST_TEST(back.rewinds[0].range.to_string() == "20000000-3fffffff");
    BOOST_TEST(back.rewinds[0].checkpoint_seq == 2u);
    BOOST_TEST(back.rewinds[0].server_seq == 1u);
    BOOST_TEST(back.rewinds[0].server_uuid == "73ca9bb");
    BOOST_TEST(back.rewinds[1].range.to_string() == "40000000-5fffffff");
    // With a stricter minimum, 3 compared shards are not enough.
    couch::incarnation_options strict;
    strict.min_compared_shards = 4;
    BOOST_TEST((couch::compare_incarnation(row2, last, strict).verdict == couch::incarnation::unknown));
}

BOOST_AUTO_TEST_CASE(synthetic_rewind_and_cluster_copies) {
    auto seq_of = [](std::vector<std::tuple<std::string, std::uint32_t, std::uint32_t, std::uint64_t, std::string>> const& shards) {
        term t;
        t.list(static_cast<std::uint32_t>(shards.size()));
        std::uint64_t sum = 0;
        for (auto const& [n, b, e, s, u] : shards) {
            t.entry(n, b, e, s, u);
            sum += s;
        }
        t.nil();
        return decode(compressed_seq(sum, t.bytes));
    };
    auto const checkpoint = seq_of({{"a@h", 0, 0x7fffffff, 1000, "1111111"}, {"a@h", 0x80000000u, 0xffffffffu, 500, "2222222"}});

    // A shard moved to node b (file copied: same uuid) and behind: rewound.
    auto const moved = seq_of({{"b@h", 0, 0x7fffffff, 900, "1111111"}, {"a@h", 0x80000000u, 0xffffffffu, 520, "2222222"}});
    auto const r = couch::compare_incarnation(checkpoint, moved);
    BOOST_TEST((r.verdict == couch::incarnation::rewound));
    BOOST_REQUIRE_EQUAL(r.rewinds.size(), 1u);
    BOOST_TEST(r.rewinds[0].range.to_string() == "00000000-7fffffff");
    BOOST_TEST(r.rewinds[0].node == "b@h");
    BOOST_TEST(r.rewinds[0].checkpoint_seq == 1000u);
    BOOST_TEST(r.rewinds[0].server_seq == 900u);
    BOOST_TEST(r.rewinds[0].checkpoint_uuid == "1111111");

    // Ahead on both: same incarnation.
    auto const ahead = seq_of({{"a@h", 0, 0x7fffffff, 1001, "1111111"}, {"a@h", 0x80000000u, 0xffffffffu, 500, "2222222"}});
    BOOST_TEST((couch::compare_incarnation(checkpoint, ahead).verdict == couch::incarnation::same_incarnation));

    // n=3: the server answered from other copies (other nodes, their own
    // uuids). Nothing is comparable: unknown, not recreated.
    auto const copies = seq_of({{"b@h", 0, 0x7fffffff, 990, "3333333"}, {"c@h", 0x80000000u, 0xffffffffu, 480, "4444444"}});
    auto const c = couch::compare_incarnation(checkpoint, copies);
    BOOST_TEST((c.verdict == couch::incarnation::unknown));
    BOOST_TEST(c.compared == 0u);

    // One copy rebuilt on its node, the other matching: not recreated.
    auto const rebuilt = seq_of({{"a@h", 0, 0x7fffffff, 3, "5555555"}, {"a@h", 0x80000000u, 0xffffffffu, 500, "2222222"}});
    auto const b = couch::compare_incarnation(checkpoint, rebuilt);
    BOOST_TEST((b.verdict == couch::incarnation::same_incarnation));
    BOOST_TEST(b.replaced.size() == 1u);

    // A split (other ranges): unknown.
    auto const split = seq_of({{"a@h", 0, 0x3fffffff, 1, "6666666"}, {"a@h", 0x40000000u, 0xffffffffu, 1, "7777777"}});
    BOOST_TEST((couch::compare_incarnation(checkpoint, split).verdict == couch::incarnation::unknown));

    // Integer and opaque seqs: unknown.
    BOOST_TEST((couch::compare_incarnation(decode("42"), decode("41")).verdict == couch::incarnation::unknown));
    BOOST_TEST((couch::compare_incarnation(checkpoint, decode("garbage")).verdict == couch::incarnation::unknown));
}

BOOST_AUTO_TEST_SUITE_END()
