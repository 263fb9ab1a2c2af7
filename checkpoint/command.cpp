#include "checkpoint/command.hpp"

#include "checkpoint/store.hpp"

#include "common/version.hpp"

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>

namespace checkpoint {

namespace {

constexpr int exit_ok = 0;
constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

char const* const usage_text =
    "usage: couch-kafka-bridge checkpoints <command> [--checkpoint-dir DIR]\n"
    "  list   [--source S]                       show every database's checkpoint\n"
    "  set    --db NAME --seq JSON [--source S]  move one database's checkpoint (rewind or skip ahead)\n"
    "  delete --db NAME [--source S]             forget one database's checkpoint\n"
    "The bridge must be stopped. --seq is the seq's JSON text: '\"4-g1AAAA...\"' (quoted) or 42.\n"
    "--source is needed only when the store holds checkpoints of more than one source.\n";

struct options {
    std::string verb;
    std::optional<std::string> db;
    std::optional<std::string> seq;
    std::optional<std::string> source;
};

// Parses `verb [--name value | --name=value]...`. Returns an error text, or
// empty when fine.
std::string parse(std::vector<std::string> const& args, options& o) {
    if (args.empty()) {
        return "missing command";
    }
    o.verb = args[0];
    for (std::size_t i = 1; i < args.size(); ++i) {
        std::string name = args[i];
        std::string value;
        if (auto eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
            value = name.substr(eq + 1);
            name.resize(eq);
        } else if (i + 1 < args.size()) {
            value = args[++i];
        } else {
            return "option " + name + " needs a value";
        }
        if (name == "--db") {
            o.db = value;
        } else if (name == "--seq") {
            o.seq = value;
        } else if (name == "--source") {
            o.source = value;
        } else {
            return "unknown option " + name;
        }
    }
    return {};
}

std::string format_time(std::int64_t unix_ms) {
    std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    if (gmtime_r(&secs, &tm) == nullptr) {
        return "?";
    }
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

// Which source a set/delete means: the one given, or the only one stored.
std::optional<std::string> resolve_source(options const& o, std::vector<std::pair<key, position>> const& all,
                                          std::ostream& err) {
    if (o.source) {
        return o.source;
    }
    std::set<std::string> sources;
    for (auto const& [k, p] : all) {
        sources.insert(k.source);
    }
    if (sources.size() == 1) {
        return *sources.begin();
    }
    if (sources.empty()) {
        err << "checkpoints: the store holds no checkpoint yet; say which source with --source "
               "(the CouchDB URL without credentials, or the bridge's --source-name)\n";
    } else {
        err << "checkpoints: the store holds checkpoints of " << sources.size()
            << " sources; say which with --source:\n";
        for (auto const& s : sources) {
            err << "  " << s << '\n';
        }
    }
    return std::nullopt;
}

int do_list(positions const& s, options const& o, std::ostream& out, clock_fn const& now) {
    auto all = s.list();
    auto const now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now().time_since_epoch()).count();
    out << "DATABASE\tSEQ\tAGE\tWRITTEN\tSOURCE\tVERSION\n";
    std::size_t shown = 0;
    for (auto const& [k, p] : all) {
        if (o.source && k.source != *o.source) {
            continue;
        }
        ++shown;
        out << k.database << '\t' << p.seq_json << '\t'
            << format_age(std::chrono::milliseconds(now_ms - p.written_unix_ms)) << '\t'
            << format_time(p.written_unix_ms) << '\t' << k.source << '\t' << p.bridge_version << '\n';
    }
    out << shown << " checkpoint(s)\n";
    // Positions are only valid for the Kafka cluster that acknowledged them
    // (a topic store lives in that cluster: nothing to show).
    if (auto const* local = dynamic_cast<store const*>(&s)) {
        auto const cluster = local->get_meta("kafka_cluster_id");
        out << "kafka cluster: " << (cluster ? *cluster : std::string("(not recorded)")) << '\n';
    } else {
        out << "store: " << s.where() << '\n';
    }
    return exit_ok;
}

int do_set(positions& s, options const& o, std::ostream& out, std::ostream& err, clock_fn const& now) {
    if (!o.db || o.db->empty() || !o.seq) {
        err << "checkpoints set: --db NAME and --seq JSON are required\n" << usage_text;
        return exit_usage;
    }
    if (!is_valid_seq_json(*o.seq)) {
        err << "checkpoints set: --seq " << *o.seq
            << " is not a JSON string or number; a CouchDB 2+ seq needs its quotes, e.g. --seq '\"4-g1AAAA...\"'\n";
        return exit_usage;
    }
    auto source = resolve_source(o, s.list(), err);
    if (!source) {
        return exit_usage;
    }
    key k{*source, *o.db};
    auto before = s.get(k);
    position p{*o.seq, std::chrono::duration_cast<std::chrono::milliseconds>(now().time_since_epoch()).count(),
               common::version};
    if (auto ec = s.write({{k, p}})) {
        err << "checkpoints set: " << ec.message() << ": " << s.last_error_detail() << '\n';
        return exit_failure;
    }
    out << "database " << k.database << " (source " << k.source << "): checkpoint "
        << (before ? "moved from " + before->seq_json + " to " : std::string("set to ")) << p.seq_json << '\n';
    return exit_ok;
}

int do_delete(positions& s, options const& o, std::ostream& out, std::ostream& err) {
    if (!o.db || o.db->empty() || o.seq) {
        err << "checkpoints delete: --db NAME is required (and --seq is not accepted)\n" << usage_text;
        return exit_usage;
    }
    auto source = resolve_source(o, s.list(), err);
    if (!source) {
        return exit_usage;
    }
    key k{*source, *o.db};
    auto before = s.get(k);
    if (!before) {
        err << "checkpoints delete: no checkpoint for database " << k.database << " (source " << k.source << ")\n";
        return exit_failure;
    }
    if (auto ec = s.erase(k)) {
        err << "checkpoints delete: " << ec.message() << ": " << s.last_error_detail() << '\n';
        return exit_failure;
    }
    out << "database " << k.database << " (source " << k.source << "): checkpoint " << before->seq_json
        << " deleted\n";
    return exit_ok;
}

} // namespace

std::string format_age(std::chrono::milliseconds age) {
    auto secs = age.count() < 0 ? 0 : age.count() / 1000;
    char buf[48];
    if (secs < 60) {
        std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(secs));
    } else if (secs < 3600) {
        std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(secs / 60),
                      static_cast<long long>(secs % 60));
    } else if (secs < 86400) {
        std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(secs / 3600),
                      static_cast<long long>(secs % 3600 / 60));
    } else {
        std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(secs / 86400),
                      static_cast<long long>(secs % 86400 / 3600));
    }
    return buf;
}

namespace {

// The checks that come before any store is opened; exit code, or -1 to go on.
int check_args(std::vector<std::string> const& args, options& o, std::ostream& out, std::ostream& err) {
    if (auto problem = parse(args, o); !problem.empty()) {
        err << "checkpoints: " << problem << '\n' << usage_text;
        return exit_usage;
    }
    if (o.verb == "help" || o.verb == "--help" || o.verb == "-h") {
        out << usage_text;
        return exit_ok;
    }
    if (o.verb != "list" && o.verb != "set" && o.verb != "delete") {
        err << "checkpoints: unknown command '" << o.verb << "'\n" << usage_text;
        return exit_usage;
    }
    if (o.verb == "list" && (o.db || o.seq)) {
        err << "checkpoints list: only --source is accepted\n" << usage_text;
        return exit_usage;
    }
    return -1;
}

int dispatch(positions& s, options const& o, std::ostream& out, std::ostream& err, clock_fn const& now) {
    if (o.verb == "list") {
        return do_list(s, o, out, now);
    }
    if (o.verb == "set") {
        return do_set(s, o, out, err, now);
    }
    return do_delete(s, o, out, err);
}

} // namespace

int run_checkpoints_command(std::function<std::unique_ptr<positions>()> const& open,
                            std::vector<std::string> const& args, std::ostream& out, std::ostream& err, clock_fn now) {
    if (!now) {
        now = [] { return std::chrono::system_clock::now(); };
    }
    options o;
    if (int code = check_args(args, o, out, err); code >= 0) {
        return code;
    }
    try {
        auto s = open();
        return dispatch(*s, o, out, err, now);
    } catch (std::exception const& e) {
        err << "checkpoints: " << e.what() << '\n';
        return exit_failure;
    }
}

int run_checkpoints_command(std::string const& dir, std::vector<std::string> const& args, std::ostream& out,
                            std::ostream& err, clock_fn now) {
    if (!now) {
        now = [] { return std::chrono::system_clock::now(); };
    }
    options o;
    if (int code = check_args(args, o, out, err); code >= 0) {
        return code;
    }
    // An admin typo must not create an empty store somewhere (open() would).
    std::error_code fs_ec;
    if (!std::filesystem::is_directory(dir, fs_ec)) {
        err << "checkpoints: checkpoint dir " << dir << " does not exist or is not a directory (see --checkpoint-dir)\n";
        return exit_failure;
    }
    try {
        auto s = store::open(dir);
        return dispatch(*s, o, out, err, now);
    } catch (store_error const& e) {
        if (e.kind() == store_errc::locked) {
            err << "checkpoints: refusing to touch the store while a bridge is running: " << e.what() << '\n';
        } else {
            err << "checkpoints: " << e.what() << '\n';
        }
        return exit_failure;
    }
}

int run_checkpoints_command(std::string const& dir, std::vector<std::string> const& args, std::ostream& out,
                            std::ostream& err) {
    return run_checkpoints_command(dir, args, out, err, clock_fn{});
}

} // namespace checkpoint
