#include "metrics/registry.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <stdexcept>

namespace metrics {

namespace {

void atomic_add(std::atomic<double>& a, double v) noexcept {
    double cur = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
    }
}

std::string label_text(labels const& l, std::string_view extra_name = {}, std::string_view extra_value = {}) {
    if (l.empty() && extra_name.empty()) {
        return {};
    }
    std::string out = "{";
    bool first = true;
    for (auto const& [k, v] : l) {
        if (!first) {
            out += ',';
        }
        first = false;
        out += k;
        out += "=\"";
        out += escape_label_value(v);
        out += '"';
    }
    if (!extra_name.empty()) {
        if (!first) {
            out += ',';
        }
        out += extra_name;
        out += "=\"";
        out += extra_value;
        out += '"';
    }
    out += '}';
    return out;
}

bool is_name_start(char c, bool allow_colon) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
}

bool is_valid_name(std::string_view n, bool allow_colon) {
    if (n.empty() || !is_name_start(n.front(), allow_colon)) {
        return false;
    }
    return std::all_of(n.begin(), n.end(),
                       [allow_colon](char c) { return is_name_start(c, allow_colon) || (c >= '0' && c <= '9'); });
}

// Invalid names are programming errors (names are literals in the probes), so
// they fail loudly at registration rather than producing a scrape that
// Prometheus rejects as a whole.
void check_names(std::string_view name, labels const& l, metric_type type) {
    if (!is_valid_metric_name(name)) {
        throw std::logic_error("invalid metric name '" + std::string(name) + "'");
    }
    for (std::size_t i = 0; i < l.size(); ++i) {
        auto const& k = l[i].first;
        if (!is_valid_label_name(k)) {
            throw std::logic_error("metric '" + std::string(name) + "': invalid label name '" + k + "'");
        }
        if (type == metric_type::histogram && k == "le") {
            throw std::logic_error("histogram '" + std::string(name) + "': label name 'le' is reserved");
        }
        for (std::size_t j = 0; j < i; ++j) {
            if (l[j].first == k) {
                throw std::logic_error("metric '" + std::string(name) + "': duplicate label name '" + k + "'");
            }
        }
    }
}

bool same_label_names(labels const& a, labels const& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                      [](auto const& x, auto const& y) { return x.first == y.first; });
}

} // namespace

bool is_valid_metric_name(std::string_view name) { return is_valid_name(name, true); }

bool is_valid_label_name(std::string_view name) {
    return is_valid_name(name, false) && !(name.size() >= 2 && name[0] == '_' && name[1] == '_');
}

void counter::inc(double v) noexcept {
    // A counter only goes up: Prometheus reads any decrease as a process
    // restart and rate() would report a bogus spike. Negative and NaN
    // increments are dropped.
    if (v > 0) {
        atomic_add(value_, v);
    }
}
void gauge::inc(double v) noexcept { atomic_add(value_, v); }

histogram::histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), buckets_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
    if (std::any_of(bounds_.begin(), bounds_.end(), [](double b) { return !std::isfinite(b); })) {
        throw std::logic_error("histogram bounds must be finite (+Inf is implicit)");
    }
    if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
        std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end()) {
        throw std::logic_error("histogram bounds must be strictly increasing");
    }
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        buckets_[i].store(0, std::memory_order_relaxed);
    }
}

void histogram::observe(double v) noexcept {
    // `le` buckets are inclusive upper bounds, hence lower_bound. NaN compares
    // false with everything and would land in the first bucket: count it in
    // +Inf only, so the finite buckets stay truthful.
    auto idx = bounds_.size();
    if (!std::isnan(v)) {
        idx = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    }
    buckets_[idx].fetch_add(1, std::memory_order_relaxed);
    atomic_add(sum_, v);
}

std::vector<std::uint64_t> histogram::cumulative_counts() const {
    std::vector<std::uint64_t> out(bounds_.size() + 1);
    std::uint64_t acc = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        acc += buckets_[i].load(std::memory_order_relaxed);
        out[i] = acc;
    }
    return out;
}

std::uint64_t histogram::count() const noexcept {
    std::uint64_t acc = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        acc += buckets_[i].load(std::memory_order_relaxed);
    }
    return acc;
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
    if (!(start > 0) || !(factor > 1) || count < 1) {
        throw std::logic_error("exponential_buckets needs start > 0, factor > 1, count >= 1");
    }
    std::vector<double> out;
    out.reserve(static_cast<std::size_t>(count));
    double v = start;
    for (int i = 0; i < count; ++i) {
        out.push_back(v);
        v *= factor;
    }
    return out;
}

struct registry::family {
    std::string name;
    std::string help;
    metric_type type;
    std::vector<double> bounds;
    labels label_names; // the first series' labels; only the names matter
    bool label_names_known = false;
    // Series in registration order (one kind per family), and where each
    // label set is among them: a fleet of 10,000 databases registers tens
    // of thousands of series, and a linear search per registration made
    // every pipeline start slower than the one before.
    std::vector<std::pair<labels, std::unique_ptr<metrics::counter>>> counters;
    std::vector<std::pair<labels, std::unique_ptr<metrics::gauge>>> gauges;
    std::vector<std::pair<labels, std::unique_ptr<metrics::histogram>>> histograms;
    std::map<labels, std::size_t> index;
};

namespace {

// The series of `series` with labels `l`, made by `make` when new.
template <typename T, typename Make>
T& series_of(std::vector<std::pair<labels, std::unique_ptr<T>>>& series, std::map<labels, std::size_t>& index,
             labels const& l, Make make) {
    auto const [it, added] = index.try_emplace(l, series.size());
    if (added) {
        series.emplace_back(l, make());
    }
    return *series[it->second].second;
}

} // namespace

registry::registry() = default;
registry::~registry() = default;

registry::family& registry::family_for(std::string_view name, std::string_view help, metric_type type,
                                       labels const& l) {
    check_names(name, l, type);
    auto it = families_.find(name);
    if (it == families_.end()) {
        auto f = std::make_unique<family>();
        f->name = std::string(name);
        f->help = std::string(help);
        f->type = type;
        it = families_.emplace(std::string(name), std::move(f)).first;
    } else if (it->second->type != type || it->second->help != help) {
        throw std::logic_error("metric '" + std::string(name) + "' registered twice with different type or help");
    }
    auto& f = *it->second;
    if (!f.label_names_known) {
        f.label_names = l;
        f.label_names_known = true;
    } else if (!same_label_names(f.label_names, l)) {
        // Series of one family with different label names confuse every
        // query that aggregates over the family.
        throw std::logic_error("metric '" + std::string(name) + "' registered with different label names");
    }
    return f;
}

counter& registry::add_counter(std::string_view name, std::string_view help, labels const& l) {
    std::lock_guard lock(mutex_);
    auto& f = family_for(name, help, metric_type::counter, l);
    return series_of(f.counters, f.index, l, [] { return std::make_unique<metrics::counter>(); });
}

gauge& registry::add_gauge(std::string_view name, std::string_view help, labels const& l) {
    std::lock_guard lock(mutex_);
    auto& f = family_for(name, help, metric_type::gauge, l);
    return series_of(f.gauges, f.index, l, [] { return std::make_unique<metrics::gauge>(); });
}

histogram& registry::add_histogram(std::string_view name, std::string_view help, std::vector<double> const& upper_bounds,
                               labels const& l) {
    std::lock_guard lock(mutex_);
    auto& f = family_for(name, help, metric_type::histogram, l);
    if (f.histograms.empty()) {
        f.bounds = upper_bounds;
    } else if (f.bounds != upper_bounds) {
        throw std::logic_error("histogram '" + std::string(name) + "' registered with different buckets");
    }
    return series_of(f.histograms, f.index, l, [&] { return std::make_unique<metrics::histogram>(upper_bounds); });
}

void registry::on_collect(std::function<void()> fn) {
    std::lock_guard lock(mutex_);
    collectors_.push_back(std::move(fn));
}

std::string registry::expose() const {
    std::vector<std::function<void()>> collectors;
    {
        std::lock_guard lock(mutex_);
        collectors = collectors_;
    }
    for (auto const& fn : collectors) {
        fn();
    }
    std::lock_guard lock(mutex_);
    std::string out;
    out.reserve(4096);
    for (auto const& [name, f] : families_) {
        out += "# HELP ";
        out += name;
        out += ' ';
        out += escape_help(f->help);
        out += "\n# TYPE ";
        out += name;
        switch (f->type) {
        case metric_type::counter:
            out += " counter\n";
            for (auto const& [l, c] : f->counters) {
                out += name;
                out += label_text(l);
                out += ' ';
                out += format_value(c->value());
                out += '\n';
            }
            break;
        case metric_type::gauge:
            out += " gauge\n";
            for (auto const& [l, g] : f->gauges) {
                out += name;
                out += label_text(l);
                out += ' ';
                out += format_value(g->value());
                out += '\n';
            }
            break;
        case metric_type::histogram:
            out += " histogram\n";
            for (auto const& [l, h] : f->histograms) {
                auto counts = h->cumulative_counts();
                auto const& bounds = h->upper_bounds();
                for (std::size_t i = 0; i < bounds.size(); ++i) {
                    out += name;
                    out += "_bucket";
                    out += label_text(l, "le", format_value(bounds[i]));
                    out += ' ';
                    out += std::to_string(counts[i]);
                    out += '\n';
                }
                out += name;
                out += "_bucket";
                out += label_text(l, "le", "+Inf");
                out += ' ';
                out += std::to_string(counts.back());
                out += '\n';
                out += name;
                out += "_sum";
                out += label_text(l);
                out += ' ';
                out += format_value(h->sum());
                out += '\n';
                out += name;
                out += "_count";
                out += label_text(l);
                out += ' ';
                out += std::to_string(counts.back());
                out += '\n';
            }
            break;
        }
    }
    return out;
}

std::string escape_label_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        switch (c) {
        case '\\':
            out += "\\\\";
            break;
        case '"':
            out += "\\\"";
            break;
        case '\n':
            out += "\\n";
            break;
        default:
            out += c;
        }
    }
    return out;
}

std::string escape_help(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        switch (c) {
        case '\\':
            out += "\\\\";
            break;
        case '\n':
            out += "\\n";
            break;
        default:
            out += c;
        }
    }
    return out;
}

std::string format_value(double v) {
    if (std::isnan(v)) {
        return "NaN";
    }
    if (std::isinf(v)) {
        return v > 0 ? "+Inf" : "-Inf";
    }
    if (v == 0) {
        return "0"; // also for -0.0, which would otherwise print as "-0"
    }
    if (v == std::floor(v) && std::fabs(v) < 1e15) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.0f", v);
        return buf;
    }
    // Shortest text that parses back to the same double: 0.1 stays "0.1"
    // (printf's %.17g would write 0.10000000000000001, correct but ugly in
    // `le` labels that people type into queries).
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, res.ptr);
}

} // namespace metrics
