#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bridge {

// The effective configuration of one bridge process, from flags, their
// COUCH_BRIDGE_<NAME> environment twins and an optional --config file
// (flags win over the environment, which wins over the file).
struct config {
    std::string couch_url = "http://127.0.0.1:5984";
    std::string couch_user;
    std::string couch_password;
    std::string couch_auth = "basic"; // basic | cookie
    std::string couch_ca_file;
    bool couch_tls_verify = true;
    std::vector<std::string> databases;
    // Continuous-feed heartbeat; the feed's watchdog declares a silent
    // connection dead after twice this long.
    std::chrono::milliseconds couch_heartbeat{10000};
    // Read coalescing of a busy feed (couch::feed_options::read_coalesce); 0: off.
    std::chrono::microseconds couch_read_coalesce{2000};
    int couch_max_connecting = 16;       // connection attempts in flight at once against the CouchDB server
    std::string on_recreate = "restart"; // restart | fail
    // Discovery: the databases whose whole name matches a pattern (ECMAScript)
    // and no exclude pattern are followed as they are created and deleted;
    // without _db_updates the server is polled every discovery_interval.
    std::vector<std::string> db_patterns, exclude_db_patterns;
    std::chrono::milliseconds discovery_interval{10000};
    // More followed databases than this: continuous feeds only for the
    // recently changed ones (0: no cap).
    int max_open_feeds = 100;
    // Beyond max_open_feeds, a feed silent this long is closed (the
    // database becomes `idle` until it changes).
    std::chrono::milliseconds idle_close{300000};

    std::string kafka_brokers = "embedded";
    std::vector<std::string> kafka_properties; // k=v, passed through to librdkafka
    // Convenience flags for a secured cluster, mapped onto librdkafka
    // properties (see kafka_client_properties); empty = librdkafka's default.
    std::string kafka_security_protocol; // plaintext | ssl | sasl_plaintext | sasl_ssl
    std::string kafka_sasl_mechanism;    // PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | ...
    std::string kafka_sasl_username;
    std::string kafka_sasl_password;
    std::string kafka_ca_file;
    bool create_topics = false;
    int topic_partitions = 3;
    int topic_replication = 1;
    // What to do when the checkpoints were acknowledged by another Kafka
    // cluster than the one connected now: refuse (start fails), restart
    // (drop them: every database starts again as if new), keep (trust them,
    // for topics mirrored to the new cluster).
    std::string kafka_cluster_change = "refuse";
    // linger.ms of a second producer that takes the records of catching-up
    // feeds (fewer, larger produce requests: less CPU per change), while the
    // following feeds keep the first one's short linger (latency). 0: one
    // producer for everything. Never with exactly-once (one transaction).
    // librdkafka lingers per partition, so at a CouchDB's pace the records
    // of a linger spread over every partition: 50 ms sent about 17 records
    // per request at 6,000 changes/s over 30 partitions. 250 ms sends about
    // 50 and halves the broker thread's CPU per change; longer saves a
    // little more, but the last records of a catch-up, and the first
    // following ones (the lane switch drains), wait that long
    // (docs/BENCHMARKS.md, issue 16, lever 14).
    std::chrono::milliseconds kafka_catch_up_linger{250};

    std::string routing = "commcare"; // commcare | prefix:<p> | path of a JSON file
    std::string payload = "stub";     // stub | stub+doc | doc
    bool deletion_memory = true;      // route hard deletes like the document they delete
    std::string on_unpublishable = "dlq"; // dlq | skip | stop
    std::string dlq_topic = "couch-bridge-dlq";
    std::vector<std::string> include_doc_types, exclude_doc_types;
    std::string selector;      // CouchDB 2+ Mango selector (JSON): filter=_selector
    std::string doc_ids_file;  // a file of document ids (one per line, or a JSON array): filter=_doc_ids
    std::string filter;        // a design-document filter, ddoc/name
    std::string default_topic = "meta";
    bool route_design_docs = false;
    bool route_missing_doc_type = false;

    std::string checkpoint_dir = "./checkpoints";
    bool checkpoint_dir_given = false; // set by flag, environment or file (else: throw-away on embedded Kafka)
    std::string source_name; // defaults to the CouchDB URL without credentials
    std::string initial_since = "0"; // 0 | now
    std::chrono::milliseconds checkpoint_interval{1000};
    // Where positions live: rocksdb (the checkpoint dir) or kafka (a
    // compacted topic; RocksDB then only holds small local state such as
    // the hard-delete memory, a cache).
    std::string checkpoint_store = "rocksdb";
    std::string checkpoint_topic = "couch-bridge-checkpoints";
    bool checkpoint_migrate = false; // copy the RocksDB positions into the topic once
    // at-least-once | exactly-once (transactions; needs checkpoint_store kafka)
    std::string delivery = "at-least-once";
    std::string transactional_id; // default: derived from the source name
    std::chrono::milliseconds commit_interval{100};
    // Group mode: several bridges share the databases through a Kafka
    // consumer group (empty: off).
    std::string group;
    std::string assignment_topic; // default couch-bridge-assign.<group>
    std::string command_topic;    // default couch-bridge-commands.<group>
    int assignment_partitions = 64;
    std::chrono::milliseconds group_session_timeout{10000};
    std::chrono::milliseconds shutdown_timeout{30000};
    // Per-database in-flight window: records and bytes produced but not yet
    // acknowledged by Kafka; reading pauses while either is reached.
    std::size_t max_in_flight = 20000;
    std::size_t max_in_flight_bytes = 64u << 20;

    std::string http_listen = "127.0.0.1:9108";
    int io_threads = 1; // threads running the event loop; 0: one per core, at most 4
    std::string admin_token; // the admin API needs "Authorization: Bearer <it>"; empty: loopback clients only
    std::string log_format = "text";
    std::string log_level = "info";

    bool print_config = false;
};

// What main() should do after parsing.
enum class command { run, help_or_version_shown, checkpoints, tail };

struct parse_result {
    command what = command::run;
    config cfg;
    std::vector<std::string> checkpoint_args; // for the `checkpoints` subcommand
    std::vector<std::string> tail_topics;     // for the `tail` subcommand
    std::size_t tail_max_records = 0;
    int tail_timeout_ms = 10000;
    bool tail_fetch_docs = false;
    std::size_t tail_fetch_batch = 100;
    int exit_code = 0;
};

// Parses argv (and the environment, and --config). Prints --help/--version
// and errors to stdout/stderr the CLI11 way and reports the exit code in the
// result. Throws nothing for user errors.
parse_result parse_command_line(int argc, char const* const* argv);

// The librdkafka properties of every Kafka client of this configuration, in
// the order to apply them: the convenience flags (security.protocol,
// sasl.mechanism, sasl.username, sasl.password, ssl.ca.location), then each
// --kafka-property, so that a property given explicitly wins.
std::vector<std::pair<std::string, std::string>> kafka_client_properties(config const& cfg);

// The properties of the catch-up producer (--kafka-catch-up-linger-ms), in
// order: batch.num.messages, then kafka_client_properties(), then its
// linger.ms. A batch closes after max_in_flight / 200 records (1 to 10,000):
// a database's window fills with records spread over up to 200 partitions
// before its batches would have to wait out the long linger, so a fast
// catch-up sends full batches instead of stalling. A --kafka-property
// batch.num.messages wins; a --kafka-property linger.ms is the following
// producer's.
std::vector<std::pair<std::string, std::string>> catch_up_lane_properties(config const& cfg);

// The effective configuration as text (one `key = value` per line), with the
// password and any credentials in URLs masked.
std::string describe(config const& cfg);

} // namespace bridge
