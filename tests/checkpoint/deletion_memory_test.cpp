#include "checkpoint/deletion_memory.hpp"

#include "checkpoint/flusher.hpp"
#include "checkpoint/store.hpp"
#include "metrics/registry.hpp"
#include "tests/support/test_env.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace ck = checkpoint;
using namespace std::chrono_literals;

namespace {

using docs = std::vector<std::pair<std::string, ck::store::remembered>>;

// Checks, at the moment positions are written, that every document remembered
// so far is already in the store: the rule of issue 11.
class checking_writer final : public ck::position_writer {
public:
    checking_writer(ck::store& s, std::vector<std::string> ids) : store_(s), ids_(std::move(ids)) {}
    boost::system::error_code write(std::vector<std::pair<ck::key, ck::position>> const& entries) override {
        for (auto const& id : ids_) {
            if (!store_.recall(k, id)) {
                ++missing;
            }
        }
        ++writes;
        return store_.write(entries);
    }
    ck::key k{"src", "db"};
    int writes = 0;
    int missing = 0;

private:
    ck::store& store_;
    std::vector<std::string> ids_;
};

struct fixture {
    std::string dir = test_support::make_temp_dir("deletion-memory");
    std::unique_ptr<ck::store> store = ck::store::open(dir);
    metrics::registry registry;
    ck::key k{"src", "db"};
};

} // namespace

BOOST_AUTO_TEST_SUITE(deletion_memory)

BOOST_AUTO_TEST_CASE(remember_buffers_recall_sees_the_buffer_and_write_pending_stores_it) {
    fixture fx;
    ck::deletion_memory m(*fx.store, fx.registry);
    BOOST_TEST(!m.remember(fx.k, docs{{"a", {"CommCareCase", "demo"}}, {"b", {"XFormInstance", ""}}}));
    BOOST_TEST(m.pending() == 2u);
    BOOST_TEST(!fx.store->recall(fx.k, "a")); // not written yet
    auto a = m.recall(fx.k, "a");
    BOOST_REQUIRE(a);
    BOOST_TEST(a->doc_type == "CommCareCase");
    BOOST_TEST(a->domain == "demo");
    BOOST_TEST(!m.recall(ck::key{"src", "other"}, "a")); // per database

    BOOST_TEST(!m.write_pending());
    BOOST_TEST(m.pending() == 0u);
    auto stored = fx.store->recall(fx.k, "b");
    BOOST_REQUIRE(stored);
    BOOST_TEST(stored->doc_type == "XFormInstance");
    BOOST_TEST(stored->domain.empty());
    BOOST_TEST(m.recall(fx.k, "b").has_value()); // from the store now
}

BOOST_AUTO_TEST_CASE(latest_wins_and_a_forget_hides_the_store_until_written) {
    fixture fx;
    ck::deletion_memory m(*fx.store, fx.registry);
    BOOST_TEST(!m.remember(fx.k, docs{{"a", {"T1", "d1"}}}));
    BOOST_TEST(!m.remember(fx.k, docs{{"a", {"T2", "d2"}}}));
    BOOST_TEST(m.pending() == 1u);
    BOOST_TEST(m.recall(fx.k, "a")->doc_type == "T2");
    BOOST_TEST(!m.write_pending());
    BOOST_TEST(fx.store->recall(fx.k, "a")->doc_type == "T2");

    m.forget(fx.k, "a");
    BOOST_TEST(!m.recall(fx.k, "a"));              // the buffered forget answers first
    BOOST_TEST(fx.store->recall(fx.k, "a").has_value()); // still stored
    BOOST_TEST(!m.write_pending());
    BOOST_TEST(!fx.store->recall(fx.k, "a"));

    // Remembered and forgotten within one interval: never stored.
    BOOST_TEST(!m.remember(fx.k, docs{{"b", {"T", ""}}}));
    m.forget(fx.k, "b");
    BOOST_TEST(!m.write_pending());
    BOOST_TEST(!fx.store->recall(fx.k, "b"));
}

BOOST_AUTO_TEST_CASE(a_full_buffer_is_written_at_once) {
    fixture fx;
    ck::deletion_memory m(*fx.store, fx.registry, 3);
    BOOST_TEST(!m.remember(fx.k, docs{{"a", {"T", ""}}, {"b", {"T", ""}}, {"c", {"T", ""}}}));
    BOOST_TEST(!fx.store->recall(fx.k, "a"));
    BOOST_TEST(!m.remember(fx.k, docs{{"d", {"T", ""}}}));
    BOOST_TEST(m.pending() == 0u);
    for (auto const* id : {"a", "b", "c", "d"}) {
        BOOST_TEST(fx.store->recall(fx.k, id).has_value(), id);
    }
}

BOOST_AUTO_TEST_CASE(the_destructor_writes_what_is_buffered_and_it_survives_a_reopen) {
    fixture fx;
    {
        ck::deletion_memory m(*fx.store, fx.registry);
        BOOST_TEST(!m.remember(fx.k, docs{{"a", {"T", "dom"}}}));
    }
    fx.store.reset();
    fx.store = ck::store::open(fx.dir);
    auto a = fx.store->recall(fx.k, "a");
    BOOST_REQUIRE(a);
    BOOST_TEST(a->domain == "dom");
}

// The rule of issue 11: the flusher writes the memory after taking the dirty
// positions and before writing them, so a durable position never covers a
// document whose memory is not in the store.
BOOST_AUTO_TEST_CASE(a_flusher_writes_the_memory_before_the_positions_that_cover_it) {
    fixture fx;
    boost::asio::io_context ioc;
    ck::deletion_memory m(*fx.store, fx.registry);
    std::vector<std::string> ids;
    docs batch;
    for (int i = 0; i < 50; ++i) {
        ids.push_back("doc-" + std::to_string(49 - i)); // unsorted on purpose
        batch.emplace_back(ids.back(), ck::store::remembered{"CommCareCase", "demo"});
    }

    // Without write_first the positions would go out first: the check can fail.
    {
        checking_writer w(*fx.store, ids);
        ck::flusher f(ioc.get_executor(), w, 1000ms, fx.registry, "0.1.0");
        BOOST_TEST(!m.remember(fx.k, docs(batch)));
        f.update(fx.k, "\"1-a\"");
        BOOST_TEST(!f.flush_now());
        BOOST_TEST(w.writes == 1);
        BOOST_TEST(w.missing == 50);
        BOOST_TEST(!m.write_pending());
    }
    {
        checking_writer w(*fx.store, ids);
        ck::flusher f(ioc.get_executor(), w, 1000ms, fx.registry, "0.1.0");
        f.write_first(m);
        f.write_first(m); // idempotent
        for (auto const& id : ids) {
            m.forget(fx.k, id);
        }
        BOOST_TEST(!m.write_pending());
        BOOST_TEST(!m.remember(fx.k, docs(batch)));
        f.update(fx.k, "\"2-a\"");
        BOOST_TEST(!f.flush_now());
        BOOST_TEST(w.writes == 1);
        BOOST_TEST(w.missing == 0);
        BOOST_TEST(m.pending() == 0u);
        BOOST_TEST(fx.store->get(fx.k)->seq_json == "\"2-a\"");
    }
}

BOOST_AUTO_TEST_SUITE_END()
