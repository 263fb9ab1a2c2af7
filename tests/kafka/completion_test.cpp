#include "kafka/completion.hpp"
#include "kafka/producer.hpp"

#include <boost/test/unit_test.hpp>

#include <array>
#include <memory>
#include <string>

namespace {

// A callable as large as the caller wants, counting its calls and owning a
// shared_ptr whose use count shows when the callable is destroyed.
template <std::size_t Padding>
struct probe {
    std::shared_ptr<int> calls;
    std::array<char, Padding> padding{};
    void operator()(kafka::delivery_report const& r) const { *calls += static_cast<int>(r.offset); }
};

kafka::delivery_report report_with_offset(std::int64_t offset) {
    kafka::delivery_report r;
    r.offset = offset;
    return r;
}

template <std::size_t Padding>
void calls_moves_and_releases() {
    auto calls = std::make_shared<int>(0);
    kafka::completion c(probe<Padding>{calls});
    BOOST_TEST(static_cast<bool>(c));
    BOOST_TEST(calls.use_count() == 2);
    c(report_with_offset(3));
    BOOST_TEST(*calls == 3);

    kafka::completion moved(std::move(c));
    BOOST_TEST(!static_cast<bool>(c)); // NOLINT(bugprone-use-after-move): moved-from is empty
    BOOST_TEST(calls.use_count() == 2);
    moved(report_with_offset(4));
    BOOST_TEST(*calls == 7);

    kafka::completion assigned;
    assigned = std::move(moved);
    assigned(report_with_offset(1));
    BOOST_TEST(*calls == 8);

    assigned.reset();
    BOOST_TEST(!static_cast<bool>(assigned));
    BOOST_TEST(calls.use_count() == 1);

    {
        kafka::completion scoped(probe<Padding>{calls});
        BOOST_TEST(calls.use_count() == 2);
    }
    BOOST_TEST(calls.use_count() == 1);
}

} // namespace

BOOST_AUTO_TEST_SUITE(completion)

BOOST_AUTO_TEST_CASE(a_small_callable_is_kept_in_place) { calls_moves_and_releases<16>(); }

BOOST_AUTO_TEST_CASE(a_callable_larger_than_the_inline_room_goes_to_the_heap) {
    calls_moves_and_releases<kafka::completion::inline_size + 8>();
}

BOOST_AUTO_TEST_CASE(move_only_captures_are_accepted) {
    auto owned = std::make_unique<std::string>("kept");
    std::string seen;
    kafka::completion c([&seen, owned = std::move(owned)](kafka::delivery_report const&) { seen = *owned; });
    c(kafka::delivery_report{});
    BOOST_TEST(seen == "kept");
}

BOOST_AUTO_TEST_SUITE_END()
