#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace metrics {

// Label set of one series, e.g. {{"database", "cases"}, {"topic", "case"}}.
// Order is preserved as given; the same family must always use the same
// label names in the same order.
using labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing value. Thread-safe and lock-free; cheap enough
// for the hot path (one relaxed atomic add).
class counter {
public:
    // Adds v. Increments that are not > 0 (negative, NaN) are ignored: a
    // counter that goes down reads as a restart to Prometheus.
    void inc(double v = 1.0) noexcept;
    double value() const noexcept { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0.0};
};

// A value that goes up and down. Thread-safe and lock-free.
class gauge {
public:
    void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
    void inc(double v = 1.0) noexcept;
    void dec(double v = 1.0) noexcept { inc(-v); }
    double value() const noexcept { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0.0};
};

// A histogram with fixed upper bounds (the +Inf bucket is implicit).
// observe() is thread-safe and lock-free.
class histogram {
public:
    // Throws std::logic_error unless the bounds are finite and strictly
    // increasing.
    explicit histogram(std::vector<double> upper_bounds);
    // Counts v in the first bucket whose bound is >= v (NaN: only in +Inf).
    void observe(double v) noexcept;

    std::vector<double> const& upper_bounds() const noexcept { return bounds_; }
    // Cumulative counts per bound, then the +Inf count; and the sum.
    std::vector<std::uint64_t> cumulative_counts() const;
    double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }
    std::uint64_t count() const noexcept;

private:
    std::vector<double> bounds_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_; // bounds_.size() + 1
    std::atomic<double> sum_{0.0};
};

// Bucket helpers: start, start*factor, ... (count bounds). Throws
// std::logic_error unless start > 0, factor > 1 and count >= 1.
std::vector<double> exponential_buckets(double start, double factor, int count);

enum class metric_type { counter, gauge, histogram };

// The set of metric families a process exposes. Registration (the
// counter()/gauge()/histogram() calls) takes a mutex and returns a reference
// that stays valid for the registry's lifetime: components look their series
// up once (in their probe) and update them lock-free afterwards.
//
// Registering the same name twice with the same type returns the same family
// (and the same label values the same series); the same name with another
// type, help text or set of label names throws std::logic_error, and so do
// names the text format does not allow (metric names [a-zA-Z_:][a-zA-Z0-9_:]*,
// label names [a-zA-Z_][a-zA-Z0-9_]* not starting with "__", no `le` on a
// histogram, no duplicate label names). Conventions: counters end in _total,
// units are base units in the name (_seconds, _bytes).
class registry {
public:
    registry();
    ~registry();
    registry(registry const&) = delete;
    registry& operator=(registry const&) = delete;

    metrics::counter& add_counter(std::string_view name, std::string_view help, labels const& l = {});
    metrics::gauge& add_gauge(std::string_view name, std::string_view help, labels const& l = {});
    metrics::histogram& add_histogram(std::string_view name, std::string_view help, std::vector<double> const& upper_bounds,
                         labels const& l = {});

    // A callback run at every expose() before the text is written, to refresh
    // gauges whose value is read rather than pushed (process metrics, queue
    // depths). Runs on the exposing thread; must be thread-safe.
    void on_collect(std::function<void()> fn);

    // The whole registry in the Prometheus text exposition format 0.0.4.
    std::string expose() const;

private:
    struct family;
    family& family_for(std::string_view name, std::string_view help, metric_type type, labels const& l);

    mutable std::mutex mutex_;
    std::map<std::string, std::unique_ptr<family>, std::less<>> families_;
    std::vector<std::function<void()>> collectors_;
};

// Whether `name` is a valid metric name / label name of the text format.
bool is_valid_metric_name(std::string_view name);
bool is_valid_label_name(std::string_view name);

// Escapes a label value for the text format (backslash, double quote, newline).
std::string escape_label_value(std::string_view v);
// Escapes HELP text for the text format (backslash, newline).
std::string escape_help(std::string_view v);
// Formats a sample value: integers without a fraction, +Inf/-Inf/NaN spelled
// as the format wants, others with enough digits to round-trip.
std::string format_value(double v);

} // namespace metrics
