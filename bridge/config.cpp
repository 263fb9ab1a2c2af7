#include "bridge/config.hpp"

#include "common/version.hpp"

#include <CLI/CLI.hpp>

#include <iostream>
#include <regex>

namespace bridge {

namespace {

std::string env_name(std::string const& flag) {
    std::string out = "COUCH_BRIDGE_";
    for (char c : flag) {
        out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return out;
}

// Validators that name the flag at fault (CLI11 prefixes the option name).
CLI::Validator const key_value{[](std::string& s) -> std::string {
                                   auto eq = s.find('=');
                                   if (eq == std::string::npos || eq == 0) {
                                       return "expected key=value, got '" + s + "'";
                                   }
                                   return {};
                               },
                               "KEY=VALUE"};

CLI::Validator const routing_spec{[](std::string& s) -> std::string {
                                      if (s == "commcare") {
                                          return {};
                                      }
                                      if (s.rfind("prefix:", 0) == 0) {
                                          return s.size() > 7 ? std::string{} : "prefix:<p> needs a non-empty prefix";
                                      }
                                      if (s.empty()) {
                                          return "expected commcare, prefix:<p> or a JSON file path";
                                      }
                                      return {};
                                  },
                                  "commcare|prefix:<p>|FILE"};

CLI::Validator const listen_address{[](std::string& s) -> std::string {
                                        auto colon = s.rfind(':');
                                        if (colon == std::string::npos || colon + 1 == s.size()) {
                                            return "expected HOST:PORT, got '" + s + "'";
                                        }
                                        for (auto i = colon + 1; i < s.size(); ++i) {
                                            if (!std::isdigit(static_cast<unsigned char>(s[i]))) {
                                                return "expected HOST:PORT, got '" + s + "'";
                                            }
                                        }
                                        return {};
                                    },
                                    "HOST:PORT"};

// A valid ECMAScript regular expression (--db-pattern, --exclude-db-pattern).
CLI::Validator const regex_pattern{[](std::string& s) -> std::string {
                                       try {
                                           std::regex re(s, std::regex::ECMAScript);
                                       } catch (std::regex_error const& e) {
                                           return "'" + s + "' is not a valid ECMAScript regular expression: " +
                                                  e.what();
                                       }
                                       return {};
                                   },
                                   "REGEX"};

} // namespace

parse_result parse_command_line(int argc, char const* const* argv) {
    parse_result result;
    config& c = result.cfg;

    CLI::App app{"couch-kafka-bridge: follows CouchDB _changes feeds and publishes one ChangeMeta record per change "
                 "to Kafka, with durable per-database checkpoints (at-least-once, never loss).",
                 "couch-kafka-bridge"};
    app.set_version_flag("--version", std::string(common::project_name) + " " + common::version);
    app.set_config("--config", "", "Read options from a TOML/INI file (flags and environment win over it)");
    app.option_defaults()->always_capture_default();

    auto opt = [&](std::string const& name, auto& target, std::string const& help) {
        return app.add_option("--" + name, target, help)->envname(env_name(name));
    };
    auto flag = [&](std::string const& name, bool& target, std::string const& help) {
        return app.add_flag("--" + name, target, help)->envname(env_name(name));
    };

    auto* group_couch = "CouchDB";
    opt("couch-url", c.couch_url, "CouchDB base URL (credentials may be given as user:password@host)")
        ->group(group_couch);
    opt("couch-user", c.couch_user, "CouchDB user name")->group(group_couch);
    opt("couch-password", c.couch_password, "CouchDB password (prefer the environment twin)")->group(group_couch);
    opt("couch-auth", c.couch_auth, "Authentication: basic or cookie (POST /_session, renewed on 401)")
        ->check(CLI::IsMember({"basic", "cookie"}))
        ->group(group_couch);
    opt("couch-ca-file", c.couch_ca_file, "CA bundle for HTTPS certificate verification")->group(group_couch);
    opt("couch-tls-verify", c.couch_tls_verify, "Verify the server certificate over HTTPS (true/false)")
        ->group(group_couch);
    app.add_option_function<int>(
           "--couch-heartbeat", [&c](int ms) { c.couch_heartbeat = std::chrono::milliseconds(ms); },
           "Milliseconds between continuous-feed heartbeats; a feed silent for twice this long is reconnected")
        ->envname(env_name("couch-heartbeat"))
        ->check(CLI::Range(100, 300000))
        ->default_str("10000")
        ->group(group_couch);
    app.add_option_function<int>(
           "--couch-read-coalesce-us", [&c](int us) { c.couch_read_coalesce = std::chrono::microseconds(us); },
           "While a feed's rows arrive more than twice as often, wait about this many microseconds between its "
           "reads, so that a wake-up handles many rows (CPU per change at a CouchDB's pace); a row waits at most "
           "1.5 times this before it is read; 5 times this while catching up. 0: read every row at once")
        ->envname(env_name("couch-read-coalesce-us"))
        ->check(CLI::Range(0, 100000))
        ->default_str("2000")
        ->group(group_couch);
    opt("couch-max-connecting", c.couch_max_connecting,
        "Connection attempts in flight at once against CouchDB, over all databases (spreads reconnects when "
        "the server is in trouble)")
        ->check(CLI::Range(1, 10000))
        ->group(group_couch);
    opt("on-recreate", c.on_recreate,
        "A database deleted and re-created under its name: restart (publish the new incarnation from 0) or fail "
        "(stop it until the checkpoint is reset)")
        ->check(CLI::IsMember({"restart", "fail"}))
        ->group(group_couch);
    opt("db", c.databases, "A database to follow (repeatable; the environment twin takes a comma-separated list)")
        ->delimiter(',')
        ->group(group_couch);
    // Discovery (bridge/discovery.hpp).
    opt("db-pattern", c.db_patterns,
        "Follow every database whose whole name matches this ECMAScript regex, as databases are created and "
        "deleted (repeatable; names starting with _ never match)")
        ->check(regex_pattern)
        ->group(group_couch);
    opt("exclude-db-pattern", c.exclude_db_patterns,
        "Never follow a database matched by --db-pattern whose whole name matches this regex (repeatable)")
        ->check(regex_pattern)
        ->group(group_couch);
    app.add_option_function<int>(
           "--discovery-interval", [&c](int ms) { c.discovery_interval = std::chrono::milliseconds(ms); },
           "Milliseconds between _all_dbs polls, where the server has no usable _db_updates")
        ->envname(env_name("discovery-interval"))
        ->check(CLI::Range(100, 86400000))
        ->default_str("10000")
        ->group(group_couch);
    opt("max-open-feeds", c.max_open_feeds,
        "At most this many continuous feeds open at once; beyond it only recently changed databases keep one "
        "(0: no cap)")
        ->check(CLI::Range(0, 1000000))
        ->group(group_couch);
    app.add_option_function<int>(
           "--idle-close", [&c](int ms) { c.idle_close = std::chrono::milliseconds(ms); },
           "Milliseconds without a change after which a database's feed is closed, when more databases are "
           "followed than --max-open-feeds")
        ->envname(env_name("idle-close"))
        ->check(CLI::Range(100, 86400000))
        ->default_str("300000")
        ->group(group_couch);

    auto* group_kafka = "Kafka";
    opt("kafka-brokers", c.kafka_brokers, "Bootstrap servers host:port,... or 'embedded' (in-process cluster)")
        ->group(group_kafka);
    opt("kafka-property", c.kafka_properties, "A librdkafka property k=v passed through (repeatable)")
        ->check(key_value)
        ->group(group_kafka);
    app.add_option_function<int>(
           "--kafka-catch-up-linger-ms", [&c](int ms) { c.kafka_catch_up_linger = std::chrono::milliseconds(ms); },
           "linger.ms of a second producer for the records of catching-up feeds: fewer, larger produce requests "
           "(less CPU per change), while the first producer, left to following feeds, lingers 1 ms (latency). "
           "Its batches also close after --max-in-flight / 200 records. "
           "0: one producer with linger.ms 5 for everything; never with --delivery exactly-once")
        ->envname(env_name("kafka-catch-up-linger-ms"))
        ->check(CLI::Range(0, 60000))
        ->default_str("250")
        ->group(group_kafka);
    opt("kafka-security-protocol", c.kafka_security_protocol,
        "security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl")
        ->transform(CLI::IsMember({"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"}, CLI::ignore_case))
        ->group(group_kafka);
    opt("kafka-sasl-mechanism", c.kafka_sasl_mechanism, "sasl.mechanism, e.g. SCRAM-SHA-512, SCRAM-SHA-256, PLAIN")
        ->group(group_kafka);
    opt("kafka-sasl-username", c.kafka_sasl_username, "sasl.username")->group(group_kafka);
    opt("kafka-sasl-password", c.kafka_sasl_password, "sasl.password (prefer the environment twin)")
        ->group(group_kafka);
    opt("kafka-ca-file", c.kafka_ca_file, "ssl.ca.location: CA bundle (PEM) that signs the brokers' certificates")
        ->check(CLI::ExistingFile)
        ->group(group_kafka);
    opt("kafka-cluster-change", c.kafka_cluster_change,
        "When the checkpoints belong to another Kafka cluster: refuse to start, restart (publish every database "
        "from the start again), or keep (the topics were mirrored)")
        ->check(CLI::IsMember({"refuse", "restart", "keep"}))
        ->group(group_kafka);
    flag("create-topics", c.create_topics, "Create missing topics at startup through the admin API")
        ->group(group_kafka);
    opt("topic-partitions", c.topic_partitions, "Partitions of topics created by --create-topics")
        ->check(CLI::Range(1, 100000))
        ->group(group_kafka);
    opt("topic-replication", c.topic_replication, "Replication factor of topics created by --create-topics")
        ->check(CLI::Range(1, 100))
        ->group(group_kafka);

    auto* group_routing = "Routing";
    opt("routing", c.routing, "Topic routing: commcare, prefix:<p> (topic = p + doc_type) or a JSON file")
        ->check(routing_spec)
        ->group(group_routing);
    opt("default-topic", c.default_topic, "Topic for doc types the routing does not name")->group(group_routing);
    opt("payload", c.payload,
        "Record value: stub (ChangeMeta), stub+doc (ChangeMeta with the document as CouchDB sent it), doc (the "
        "document alone)")
        ->check(CLI::IsMember({"stub", "stub+doc", "doc"}))
        ->group(group_routing);
    opt("deletion-memory", c.deletion_memory,
        "Remember each published document's doc_type and domain so that its hard delete (a tombstone without "
        "doc_type) goes to the same topic with them (true/false)")
        ->group(group_routing);
    opt("on-unpublishable", c.on_unpublishable,
        "A record Kafka can never take (too large, rejected for good): dlq (a stand-in to --dlq-topic), skip "
        "(count and log), stop (keep retrying; the database stalls)")
        ->check(CLI::IsMember({"dlq", "skip", "stop"}))
        ->group(group_routing);
    opt("dlq-topic", c.dlq_topic, "Dead-letter topic for --on-unpublishable dlq")->group(group_routing);
    opt("include-doc-types", c.include_doc_types,
        "Publish only these doc types (repeatable or comma-separated; client-side)")
        ->delimiter(',')
        ->group(group_routing);
    opt("exclude-doc-types", c.exclude_doc_types, "Never publish these doc types (repeatable or comma-separated)")
        ->delimiter(',')
        ->group(group_routing);
    opt("selector", c.selector, "CouchDB 2+ Mango selector (JSON) applied by CouchDB (filter=_selector)")
        ->group(group_routing);
    opt("doc-ids", c.doc_ids_file,
        "File of document ids (one per line, or a JSON array) applied by CouchDB (filter=_doc_ids)")
        ->group(group_routing);
    opt("filter", c.filter, "Design-document filter ddoc/name applied by CouchDB")->group(group_routing);
    flag("route-design-docs", c.route_design_docs, "Publish design documents instead of skipping them")
        ->group(group_routing);
    flag("route-missing-doc-type", c.route_missing_doc_type,
         "Publish documents without a doc_type (to the default topic) instead of skipping them")
        ->group(group_routing);

    auto* group_ckpt = "Checkpoints";
    auto* checkpoint_dir =
        opt("checkpoint-dir", c.checkpoint_dir,
            "RocksDB directory holding each database's position (with --kafka-brokers embedded and no "
            "--checkpoint-dir: a throw-away directory, since the embedded cluster's records vanish at exit)")
            ->group(group_ckpt);
    opt("source-name", c.source_name, "Name of this CouchDB source in checkpoint keys (default: URL without "
                                      "credentials)")
        ->group(group_ckpt);
    opt("initial-since", c.initial_since, "Where a database without a checkpoint starts: 0 or now")
        ->check(CLI::IsMember({"0", "now"}))
        ->group(group_ckpt);
    auto* interval = app.add_option_function<int>(
                             "--checkpoint-interval",
                             [&c](int ms) { c.checkpoint_interval = std::chrono::milliseconds(ms); },
                             "Milliseconds between durable checkpoint flushes")
                         ->envname(env_name("checkpoint-interval"))
                         ->check(CLI::Range(10, 3600000))
                         ->default_str("1000")
                         ->group(group_ckpt);
    (void)interval;
    opt("checkpoint-store", c.checkpoint_store,
        "Where positions live: rocksdb (--checkpoint-dir) or kafka (the compacted --checkpoint-topic)")
        ->check(CLI::IsMember({"rocksdb", "kafka"}))
        ->group(group_ckpt);
    opt("checkpoint-topic", c.checkpoint_topic,
        "The compacted topic of --checkpoint-store kafka (created when missing: 1 partition, compacted)")
        ->group(group_ckpt);
    flag("checkpoint-migrate", c.checkpoint_migrate,
         "With --checkpoint-store kafka: copy the positions of --checkpoint-dir into the topic first (databases "
         "the topic knows already keep the topic's position)")
        ->group(group_ckpt);
    opt("delivery", c.delivery,
        "at-least-once, or exactly-once: records and checkpoints in one Kafka transaction (needs "
        "--checkpoint-store kafka and consumers with isolation.level=read_committed)")
        ->check(CLI::IsMember({"at-least-once", "exactly-once"}))
        ->group(group_ckpt);
    opt("transactional-id", c.transactional_id,
        "Exactly-once: the producer's transactional.id; a second bridge with the same id fences this one "
        "(default: couch-kafka-bridge-<source name>); in group mode the prefix of the per-partition ids "
        "<prefix>-<partition> (default: the group name)")
        ->group(group_ckpt);
    opt("group", c.group,
        "Group mode: bridges started with the same NAME share the databases through the Kafka consumer group "
        "NAME (needs --checkpoint-store kafka)")
        ->group(group_ckpt);
    opt("assignment-topic", c.assignment_topic,
        "Group mode: the control topic whose partitions are the units of ownership (default "
        "couch-bridge-assign.<group>; created when missing, holds no data)")
        ->group(group_ckpt);
    opt("command-topic", c.command_topic,
        "Group mode: the compacted topic through which the admin API of any instance changes a database "
        "(default couch-bridge-commands.<group>; created when missing)")
        ->group(group_ckpt);
    opt("assignment-partitions", c.assignment_partitions,
        "Group mode: partitions of a new assignment topic (a database belongs to murmur2(source/database) mod P)")
        ->check(CLI::Range(1, 10000))
        ->group(group_ckpt);
    app.add_option_function<int>(
           "--group-session-timeout", [&c](int ms) { c.group_session_timeout = std::chrono::milliseconds(ms); },
           "Group mode: ms without a heartbeat after which the group gives a member's databases to the others")
        ->envname(env_name("group-session-timeout"))
        ->check(CLI::Range(1000, 300000))
        ->default_str("10000")
        ->group(group_ckpt);
    app.add_option_function<int>(
           "--commit-interval", [&c](int ms) { c.commit_interval = std::chrono::milliseconds(ms); },
           "Exactly-once: milliseconds between transaction commits (each commits records and checkpoints)")
        ->envname(env_name("commit-interval"))
        ->check(CLI::Range(10, 60000))
        ->default_str("100")
        ->group(group_ckpt);
    app.add_option_function<int>(
           "--shutdown-timeout", [&c](int ms) { c.shutdown_timeout = std::chrono::milliseconds(ms); },
           "Milliseconds to wait for in-flight acknowledgements at shutdown")
        ->envname(env_name("shutdown-timeout"))
        ->check(CLI::Range(0, 3600000))
        ->default_str("30000")
        ->group(group_ckpt);

    opt("max-in-flight", c.max_in_flight,
        "Per database: records produced and not yet acknowledged before reading pauses")
        ->check(CLI::Range(std::size_t{1}, std::size_t{10000000}))
        ->group(group_ckpt);
    opt("max-in-flight-bytes", c.max_in_flight_bytes,
        "Per database: bytes produced and not yet acknowledged before reading pauses")
        ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 40))
        ->group(group_ckpt);

    auto* group_ops = "Operations";
    opt("http-listen", c.http_listen, "Address of the /metrics, /healthz, /readyz and /status server")
        ->check(listen_address)
        ->group(group_ops);
    opt("io-threads", c.io_threads,
        "Threads running the event loop (0: one per core, at most 4); librdkafka and RocksDB have their own")
        ->check(CLI::Range(0, 64))
        ->group(group_ops);
    opt("admin-token", c.admin_token,
        "Bearer token the admin API (/databases) requires; without it the API answers loopback clients only "
        "(prefer the environment twin)")
        ->group(group_ops);
    opt("log-format", c.log_format, "Log format: text or json")
        ->check(CLI::IsMember({"text", "json"}))
        ->group(group_ops);
    opt("log-level", c.log_level, "Log level: trace, debug, info, warn, error, critical, off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
        ->group(group_ops);
    flag("print-config", c.print_config, "Print the effective configuration (secrets masked) and exit")
        ->group(group_ops);

    // Options of the whole program may also follow a subcommand
    // (`checkpoints list --checkpoint-dir X`): what a subcommand does not
    // know falls through to its parent. Subcommands inherit the setting.
    app.fallthrough();

    auto* ckpt_cmd = app.add_subcommand(
        "checkpoints", "Inspect or change a stopped bridge's checkpoints (uses --checkpoint-dir)");
    ckpt_cmd->require_subcommand(1, 1);
    struct checkpoint_options {
        std::string db;
        std::string seq;
        std::string source;
    };
    checkpoint_options ck;
    auto source_opt = [&ck](CLI::App* cmd) {
        cmd->add_option("--source", ck.source,
                        "Which source's checkpoints (needed only when the store holds more than one)");
    };
    auto* ck_list = ckpt_cmd->add_subcommand("list", "Show every database's checkpoint (seq, age, written time)");
    source_opt(ck_list);
    auto* ck_set = ckpt_cmd->add_subcommand("set", "Move one database's checkpoint (rewind or skip ahead)");
    ck_set->add_option("--db", ck.db, "The database")->required();
    ck_set->add_option("--seq", ck.seq, "The seq's JSON text: '\"4-g1AAAA...\"' (with the quotes) or 42")
        ->required();
    source_opt(ck_set);
    auto* ck_delete = ckpt_cmd->add_subcommand(
        "delete", "Forget one database's checkpoint (it starts again per --initial-since)");
    ck_delete->add_option("--db", ck.db, "The database")->required();
    source_opt(ck_delete);

    auto* tail_cmd = app.add_subcommand(
        "tail", "Print the records of Kafka topics (from the beginning) as JSON lines, using --kafka-brokers");
    tail_cmd->add_option("--topic", result.tail_topics, "A topic to read (repeatable)")->required();
    tail_cmd->add_option("--max-records", result.tail_max_records, "Stop after this many records (0: no limit)");
    tail_cmd->add_option("--timeout-ms", result.tail_timeout_ms, "Stop after this long without a new record");
    tail_cmd->add_flag("--fetch-docs", result.tail_fetch_docs,
                       "Resolve each record to its document through the store it names (data_source_type couch, "
                       "database data_source_name on --couch-url, with the --couch-* credentials) and print it, "
                       "or missing/deleted");
    tail_cmd->add_option("--fetch-batch", result.tail_fetch_batch, "Most document ids per _bulk_get request")
        ->check(CLI::Range(1, 10000));
    for (auto* cmd : {ckpt_cmd, ck_list, ck_set, ck_delete, tail_cmd}) {
        cmd->footer("Options of the whole program (--checkpoint-dir, --kafka-brokers, --couch-url, ...) may be given "
                    "before or after the subcommand: see couch-kafka-bridge --help.");
    }

    try {
        app.parse(argc, argv);
    } catch (CLI::ParseError const& e) {
        result.what = command::help_or_version_shown;
        result.exit_code = app.exit(e);
        return result;
    }
    c.checkpoint_dir_given = checkpoint_dir->count() > 0;
    if (*tail_cmd) {
        result.what = command::tail;
    }
    if (*ckpt_cmd) {
        result.what = command::checkpoints;
        // The checkpoint module's own argument form: verb, then --name value.
        auto& args = result.checkpoint_args;
        for (auto* verb : {ck_list, ck_set, ck_delete}) {
            if (*verb) {
                args.push_back(verb->get_name());
            }
        }
        auto add = [&args](char const* name, std::string const& value) {
            if (!value.empty()) {
                args.push_back(name);
                args.push_back(value);
            }
        };
        add("--db", ck.db);
        add("--seq", ck.seq);
        add("--source", ck.source);
    }
    return result;
}

} // namespace bridge
