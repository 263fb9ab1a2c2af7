#pragma once

#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace kafka {

struct delivery_report;

// What try_produce() calls with a record's delivery report: any callable
// taking `delivery_report const&`. Move-only, and unlike std::function it
// keeps callables up to inline_size bytes (a pipeline's handler: a few
// counters, a topic, two short strings) in place, so handing one over per
// record allocates nothing; a larger one goes to the heap.
class completion {
public:
    static constexpr std::size_t inline_size = 160;

    completion() noexcept = default;

    template <typename F>
        requires(!std::is_same_v<std::remove_cvref_t<F>, completion> &&
                 std::is_invocable_v<std::remove_cvref_t<F>&, delivery_report const&>)
    completion(F&& f) { // NOLINT(google-explicit-constructor): a drop-in for std::function
        using fn = std::remove_cvref_t<F>;
        if constexpr (fits<fn>()) {
            ::new (static_cast<void*>(buf_)) fn(std::forward<F>(f));
            ops_ = &inline_ops<fn>;
        } else {
            auto* p = new fn(std::forward<F>(f));
            std::memcpy(buf_, &p, sizeof p);
            ops_ = &heap_ops<fn>;
        }
    }

    completion(completion&& other) noexcept { take(other); }

    completion& operator=(completion&& other) noexcept {
        if (this != &other) {
            reset();
            take(other);
        }
        return *this;
    }

    completion(completion const&) = delete;
    completion& operator=(completion const&) = delete;

    ~completion() { reset(); }

    // Precondition: not empty.
    void operator()(delivery_report const& report) { ops_->call(buf_, report); }

    explicit operator bool() const noexcept { return ops_ != nullptr; }

    // Destroys the callable (and what it captured); empty afterwards.
    void reset() noexcept {
        if (ops_ != nullptr) {
            ops_->destroy(buf_);
            ops_ = nullptr;
        }
    }

private:
    struct ops {
        void (*call)(void* self, delivery_report const& report);
        void (*move)(void* dst, void* src) noexcept; // leaves src destroyed
        void (*destroy)(void* self) noexcept;
    };

    template <typename F>
    static constexpr bool fits() {
        return sizeof(F) <= inline_size && alignof(F) <= alignof(std::max_align_t) &&
               std::is_nothrow_move_constructible_v<F>;
    }

    template <typename F>
    static F* heap_object(void* self) noexcept {
        F* p = nullptr;
        std::memcpy(&p, self, sizeof p);
        return p;
    }

    template <typename F>
    static constexpr ops inline_ops{
        [](void* self, delivery_report const& report) { (*static_cast<F*>(self))(report); },
        [](void* dst, void* src) noexcept {
            ::new (dst) F(std::move(*static_cast<F*>(src)));
            static_cast<F*>(src)->~F();
        },
        [](void* self) noexcept { static_cast<F*>(self)->~F(); },
    };

    template <typename F>
    static constexpr ops heap_ops{
        [](void* self, delivery_report const& report) { (*heap_object<F>(self))(report); },
        [](void* dst, void* src) noexcept { std::memcpy(dst, src, sizeof(F*)); },
        [](void* self) noexcept { delete heap_object<F>(self); },
    };

    void take(completion& other) noexcept {
        if (other.ops_ != nullptr) {
            other.ops_->move(buf_, other.buf_);
            ops_ = other.ops_;
            other.ops_ = nullptr;
        }
    }

    alignas(std::max_align_t) unsigned char buf_[inline_size];
    ops const* ops_ = nullptr;
};

} // namespace kafka
