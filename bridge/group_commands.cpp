#include "bridge/group_commands.hpp"

#include "kafka/producer.hpp"
#include "kafka/topic_follower.hpp"
#include "metrics/registry.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

#include <atomic>
#include <future>
#include <random>
#include <thread>

namespace json = boost::json;

namespace bridge {

namespace {

char const* op_name(admin_command::op o) {
    switch (o) {
    case admin_command::op::follow:
        return "follow";
    case admin_command::op::remove:
        return "remove";
    case admin_command::op::pause:
        return "pause";
    case admin_command::op::resume:
        return "resume";
    case admin_command::op::rewind:
        return "rewind";
    }
    return "?";
}

std::optional<admin_command::op> op_of(std::string_view s) {
    for (auto o : {admin_command::op::follow, admin_command::op::remove, admin_command::op::pause,
                   admin_command::op::resume, admin_command::op::rewind}) {
        if (s == op_name(o)) {
            return o;
        }
    }
    return std::nullopt;
}

std::string error_body(std::string const& error, std::string const& reason) {
    return json::serialize(json::object{{"error", error}, {"reason", reason}}) + "\n";
}

// Whether a command carries a start position (applied once, by the owner).
bool starts(admin_command const& c) {
    return c.what == admin_command::op::rewind || (c.what == admin_command::op::follow && !c.since.empty());
}

} // namespace

struct group_commands::record {
    std::string id;
    admin_command c;
};

struct group_commands::impl {
    // The producer of commands and acknowledgements, with a thread of its
    // own for its delivery reports (the admin API waits on an event-loop
    // thread).
    boost::asio::io_context reports;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work =
        boost::asio::make_work_guard(reports);
    std::unique_ptr<kafka::producer> producer;
    std::thread reporter;
    std::unique_ptr<kafka::topic_follower> follower;

    std::mutex mutex;
    std::condition_variable changed;
    bool caught_up = false;
    std::map<std::string, record> latest; // database -> its latest command
    std::map<std::string, std::string> acked; // database -> id of the last start position applied
    std::map<std::string, fleet::outcome> outcomes; // command id -> outcome (local or the owner's)
    std::uint64_t next = 0;
    std::string prefix; // of this instance's command ids

    metrics::counter* written = nullptr;
    metrics::counter* applied = nullptr;
    metrics::counter* timed_out = nullptr;

    ~impl() {
        follower.reset();
        producer.reset();
        work.reset();
        reports.stop();
        if (reporter.joinable()) {
            reporter.join();
        }
    }

    // Produces and waits for the acknowledgement; the error, if any.
    std::string produce(std::string key, std::string value, std::string const& topic) {
        kafka::record r;
        r.topic = topic;
        r.key = std::move(key);
        r.value = std::move(value);
        auto done = std::make_shared<std::promise<std::string>>();
        auto f = done->get_future();
        auto ec = producer->try_produce(r, boost::asio::system_executor(), [done](kafka::delivery_report const& d) {
            done->set_value(d.ec ? d.ec.message() : std::string());
        });
        if (ec) {
            return ec.message();
        }
        if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
            return "not acknowledged within 10 s (are the brokers reachable?)";
        }
        return f.get();
    }
};

std::string command_topic(config const& cfg) {
    return cfg.command_topic.empty() ? "couch-bridge-commands." + cfg.group : cfg.command_topic;
}

group_commands::group_commands(group_commands_config cfg, fleet& databases, std::function<bool(std::string const&)> owns,
                               metrics::registry& registry)
    : cfg_(std::move(cfg)), fleet_(databases), owns_(std::move(owns)), impl_(std::make_unique<impl>()) {
    auto& s = *impl_;
    s.producer = std::make_unique<kafka::producer>(s.reports.get_executor(),
                                                   kafka::producer_config{cfg_.bootstrap_servers, cfg_.properties, {}},
                                                   registry);
    s.reporter = std::thread([&s] { s.reports.run(); });
    std::random_device rd;
    s.prefix = cfg_.instance + "-" + std::to_string(rd()) + "-";
    char const* help = "Admin-API commands of the group (group mode), by result";
    s.written = &registry.add_counter("couch_bridge_group_commands_total", help, {{"result", "written"}});
    s.applied = &registry.add_counter("couch_bridge_group_commands_total", help, {{"result", "applied_start"}});
    s.timed_out = &registry.add_counter("couch_bridge_group_commands_total", help, {{"result", "unanswered"}});
}

group_commands::~group_commands() = default;

void group_commands::start() {
    auto& s = *impl_;
    s.follower = std::make_unique<kafka::topic_follower>(
        kafka::topic_reader_config{cfg_.bootstrap_servers, cfg_.properties}, cfg_.topic,
        [this](kafka::stored_record&& r) {
            auto const slash = r.key.find('/');
            if (!r.value || slash == std::string::npos) {
                return; // a tombstone, or not ours
            }
            auto const kind = r.key.substr(0, slash);
            auto const db = r.key.substr(slash + 1);
            boost::system::error_code ec;
            auto v = json::parse(*r.value, ec);
            if (ec || !v.is_object()) {
                spdlog::warn("group commands: record at offset {} of {} is not a JSON object; skipped", r.offset,
                             cfg_.topic);
                return;
            }
            auto const& o = v.as_object();
            auto str = [&o](char const* k) {
                auto const* x = o.if_contains(k);
                return x != nullptr && x->is_string() ? std::string(x->as_string()) : std::string();
            };
            if (kind == "ack") {
                std::lock_guard lock(impl_->mutex);
                impl_->acked[db] = str("id");
                auto const* status = o.if_contains("status");
                impl_->outcomes[str("id")] =
                    fleet::outcome{status != nullptr && status->is_int64() ? static_cast<unsigned>(status->as_int64())
                                                                          : 200u,
                                   str("body")};
                impl_->changed.notify_all();
                return;
            }
            auto what = op_of(str("op"));
            if (kind != "cmd" || !what) {
                spdlog::warn("group commands: record {} at offset {} of {} is not a command; skipped", r.key,
                             r.offset, cfg_.topic);
                return;
            }
            record rec{str("id"), admin_command{*what, db, str("since"), str("options")}};
            bool replaying = false;
            {
                std::lock_guard lock(impl_->mutex);
                replaying = !impl_->caught_up;
            }
            apply(rec, replaying);
        },
        [this] {
            {
                std::lock_guard lock(impl_->mutex);
                impl_->caught_up = true;
                impl_->changed.notify_all();
            }
            reassess();
        });
    s.follower->start(std::chrono::seconds(30));
    std::unique_lock lock(s.mutex);
    if (!s.changed.wait_for(lock, std::chrono::seconds(60), [&s] { return s.caught_up; })) {
        throw std::runtime_error("cannot read the command topic " + cfg_.topic + " to its end within 60 s");
    }
}

void group_commands::apply(record const& r, bool replaying) {
    auto const& c = r.c;
    fleet::outcome out{200, {}};
    // The desired state: every instance keeps it.
    switch (c.what) {
    case admin_command::op::follow:
        out = fleet_.follow(c.database, "", c.options);
        break;
    case admin_command::op::remove:
        out = fleet_.remove(c.database);
        break;
    case admin_command::op::pause:
        out = fleet_.pause(c.database);
        break;
    case admin_command::op::resume:
        out = fleet_.resume(c.database);
        break;
    case admin_command::op::rewind:
        break;
    }
    if (!replaying) {
        spdlog::info("group command {} {} {}{}: {}", r.id, op_name(c.what), c.database,
                     c.since.empty() ? "" : " since=" + c.since, out.status);
    }
    std::lock_guard lock(impl_->mutex);
    impl_->latest[c.database] = r;
    if (!starts(c)) {
        impl_->outcomes[r.id] = std::move(out);
        impl_->changed.notify_all();
        return;
    }
    if (!replaying) {
        apply_start_locked(r);
    }
}

// A start position: only the owner applies it, once.
void group_commands::apply_start_locked(record const& r) {
    auto const& c = r.c;
    if (impl_->acked[c.database] == r.id || !owns_(c.database)) {
        return;
    }
    auto out = c.what == admin_command::op::rewind ? fleet_.rewind(c.database, c.since)
                                                   : fleet_.follow(c.database, c.since, c.options);
    impl_->acked[c.database] = r.id;
    impl_->outcomes[r.id] = out;
    impl_->applied->inc();
    impl_->changed.notify_all();
    spdlog::info("group command {}: {} {} since={} applied here (the owner): {}", r.id, op_name(c.what), c.database,
                 c.since, out.status);
    json::object ack{{"id", r.id}, {"status", out.status}, {"body", out.json}, {"by", cfg_.instance}};
    // Written off the lock's thread would reorder it after a newer
    // command; the follower thread owns this order, so write it here.
    if (auto err = impl_->produce("ack/" + c.database, json::serialize(ack), cfg_.topic); !err.empty()) {
        spdlog::warn("group command {}: the acknowledgement was not written ({}); an instance that takes {} over "
                     "applies it again",
                     r.id, err, c.database);
    }
}

void group_commands::reassess() {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->caught_up) {
        return;
    }
    for (auto const& [db, r] : impl_->latest) {
        if (starts(r.c)) {
            apply_start_locked(r);
        }
    }
}

fleet::outcome group_commands::submit(admin_command const& c) {
    auto& s = *impl_;
    std::string id;
    {
        std::lock_guard lock(s.mutex);
        id = s.prefix + std::to_string(++s.next);
    }
    json::object v{{"id", id}, {"op", op_name(c.what)}, {"since", c.since}, {"options", c.options},
                   {"from", cfg_.instance},
                   {"at_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count()}};
    if (auto err = s.produce("cmd/" + c.database, json::serialize(v), cfg_.topic); !err.empty()) {
        return {503, error_body("unavailable", "the command could not be written to " + cfg_.topic + ": " + err)};
    }
    s.written->inc();
    std::unique_lock lock(s.mutex);
    if (s.changed.wait_for(lock, cfg_.answer_timeout, [&] { return s.outcomes.contains(id); })) {
        auto out = s.outcomes[id];
        s.outcomes.erase(id);
        return out;
    }
    s.timed_out->inc();
    return {202, json::serialize(json::object{
                     {"accepted", true},
                     {"command", id},
                     {"applied", false},
                     {"reason", "the instance that owns " + c.database +
                                    " has not applied it yet (no instance owns it now, or it is busy); it applies "
                                    "it when it reads it"}}) +
                     "\n"};
}

} // namespace bridge
