// What a parsed configuration turns into: the librdkafka properties of its
// Kafka flags, and its description for --print-config (secrets masked).
#include "bridge/config.hpp"

#include "common/redact.hpp"

#include <algorithm>
#include <iterator>
#include <sstream>

namespace bridge {

std::vector<std::pair<std::string, std::string>> kafka_client_properties(config const& c) {
    std::vector<std::pair<std::string, std::string>> out;
    auto add = [&out](char const* name, std::string const& value) {
        if (!value.empty()) {
            out.emplace_back(name, value);
        }
    };
    add("security.protocol", c.kafka_security_protocol);
    add("sasl.mechanism", c.kafka_sasl_mechanism);
    add("sasl.username", c.kafka_sasl_username);
    add("sasl.password", c.kafka_sasl_password);
    add("ssl.ca.location", c.kafka_ca_file);
    for (auto const& p : c.kafka_properties) {
        auto eq = p.find('=');
        out.emplace_back(p.substr(0, eq), p.substr(eq + 1));
    }
    return out;
}

std::vector<std::pair<std::string, std::string>> catch_up_lane_properties(config const& c) {
    constexpr std::size_t partitions_covered = 200;
    constexpr std::size_t librdkafka_max = 10000; // batch.num.messages' default and our ceiling
    auto const batch = std::clamp<std::size_t>(c.max_in_flight / partitions_covered, 1, librdkafka_max);
    std::vector<std::pair<std::string, std::string>> out{{"batch.num.messages", std::to_string(batch)}};
    auto client = kafka_client_properties(c);
    out.insert(out.end(), std::make_move_iterator(client.begin()), std::make_move_iterator(client.end()));
    out.emplace_back("linger.ms", std::to_string(c.kafka_catch_up_linger.count()));
    return out;
}

std::string describe(config const& c) {
    std::ostringstream out;
    auto masked = [](std::string const& s) { return s.empty() ? std::string{} : std::string("***"); };
    auto list = [](std::vector<std::string> const& v) {
        std::string s;
        for (auto const& x : v) {
            s += s.empty() ? "" : ",";
            s += x;
        }
        return s;
    };
    std::vector<std::string> props;
    for (auto const& p : c.kafka_properties) {
        auto eq = p.find('=');
        auto key = p.substr(0, eq);
        bool secret = key.find("password") != std::string::npos || key.find("secret") != std::string::npos ||
                      key.find("sasl.oauthbearer.config") != std::string::npos;
        props.push_back(secret ? key + "=***" : p);
    }
    out << "couch-url = " << common::redact_url(c.couch_url) << '\n'
        << "couch-user = " << c.couch_user << '\n'
        << "couch-password = " << masked(c.couch_password) << '\n'
        << "couch-auth = " << c.couch_auth << '\n'
        << "couch-ca-file = " << c.couch_ca_file << '\n'
        << "couch-tls-verify = " << (c.couch_tls_verify ? "true" : "false") << '\n'
        << "couch-heartbeat = " << c.couch_heartbeat.count() << '\n'
        << "couch-read-coalesce-us = " << c.couch_read_coalesce.count() << '\n'
        << "couch-max-connecting = " << c.couch_max_connecting << '\n'
        << "on-recreate = " << c.on_recreate << '\n'
        << "db = " << list(c.databases) << '\n'
        << "db-pattern = " << list(c.db_patterns) << '\n'
        << "exclude-db-pattern = " << list(c.exclude_db_patterns) << '\n'
        << "discovery-interval = " << c.discovery_interval.count() << '\n'
        << "max-open-feeds = " << c.max_open_feeds << '\n'
        << "idle-close = " << c.idle_close.count() << '\n'
        << "kafka-brokers = " << c.kafka_brokers << '\n'
        << "kafka-cluster-change = " << c.kafka_cluster_change << '\n'
        << "kafka-property = " << list(props) << '\n'
        << "kafka-security-protocol = " << c.kafka_security_protocol << '\n'
        << "kafka-sasl-mechanism = " << c.kafka_sasl_mechanism << '\n'
        << "kafka-sasl-username = " << c.kafka_sasl_username << '\n'
        << "kafka-sasl-password = " << masked(c.kafka_sasl_password) << '\n'
        << "kafka-ca-file = " << c.kafka_ca_file << '\n'
        << "create-topics = " << (c.create_topics ? "true" : "false") << '\n'
        << "topic-partitions = " << c.topic_partitions << '\n'
        << "topic-replication = " << c.topic_replication << '\n'
        << "routing = " << c.routing << '\n'
        << "payload = " << c.payload << '\n'
        << "deletion-memory = " << (c.deletion_memory ? "true" : "false") << '\n'
        << "on-unpublishable = " << c.on_unpublishable << '\n'
        << "dlq-topic = " << c.dlq_topic << '\n'
        << "include-doc-types = " << list(c.include_doc_types) << '\n'
        << "exclude-doc-types = " << list(c.exclude_doc_types) << '\n'
        << "selector = " << c.selector << '\n'
        << "doc-ids = " << c.doc_ids_file << '\n'
        << "filter = " << c.filter << '\n'
        << "default-topic = " << c.default_topic << '\n'
        << "route-design-docs = " << (c.route_design_docs ? "true" : "false") << '\n'
        << "route-missing-doc-type = " << (c.route_missing_doc_type ? "true" : "false") << '\n'
        << "checkpoint-dir = " << c.checkpoint_dir << '\n'
        << "source-name = " << c.source_name << '\n'
        << "initial-since = " << c.initial_since << '\n'
        << "checkpoint-interval = " << c.checkpoint_interval.count() << '\n'
        << "checkpoint-store = " << c.checkpoint_store << '\n'
        << "checkpoint-topic = " << c.checkpoint_topic << '\n'
        << "checkpoint-migrate = " << (c.checkpoint_migrate ? "true" : "false") << '\n'
        << "delivery = " << c.delivery << '\n'
        << "transactional-id = " << c.transactional_id << '\n'
        << "commit-interval = " << c.commit_interval.count() << '\n'
        << "group = " << c.group << '\n'
        << "assignment-topic = " << c.assignment_topic << '\n'
        << "command-topic = " << c.command_topic << '\n'
        << "assignment-partitions = " << c.assignment_partitions << '\n'
        << "group-session-timeout = " << c.group_session_timeout.count() << '\n'
        << "shutdown-timeout = " << c.shutdown_timeout.count() << '\n'
        << "kafka-catch-up-linger-ms = " << c.kafka_catch_up_linger.count() << '\n'
        << "max-in-flight = " << c.max_in_flight << '\n'
        << "max-in-flight-bytes = " << c.max_in_flight_bytes << '\n'
        << "http-listen = " << c.http_listen << '\n'
        << "io-threads = " << c.io_threads << '\n'
        << "admin-token = " << masked(c.admin_token) << '\n'
        << "log-format = " << c.log_format << '\n'
        << "log-level = " << c.log_level << '\n';
    return out.str();
}

} // namespace bridge
