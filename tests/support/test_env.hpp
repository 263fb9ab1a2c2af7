#pragma once

#include <string>

namespace test_support {

// Base URL of the CouchDB-protocol server for integration tests: the
// environment variable CKB_TEST_COUCH_URL if set, else what the couch_server
// ctest fixture wrote. Throws std::runtime_error with a hint when neither
// exists (run the test through ctest, or set the variable).
std::string couch_url();

// Bootstrap servers of the real Kafka broker: CKB_TEST_KAFKA_BROKERS, else
// what the kafka_broker fixture wrote. Throws like couch_url().
std::string kafka_brokers();

// A value of the kafka_secure_broker fixture (tests/servers/kafka-secure-broker.sh):
// CKB_TEST_KAFKA_SSL_BROKERS, CKB_TEST_KAFKA_SASL_SSL_BROKERS,
// CKB_TEST_KAFKA_CA_FILE, CKB_TEST_KAFKA_OTHER_CA_FILE,
// CKB_TEST_KAFKA_SASL_USER, CKB_TEST_KAFKA_SASL_PASSWORD; the environment
// variable of that name first. Throws like couch_url().
std::string secure_kafka(std::string const& key);

// Directory of checked-in test data (tests/data).
std::string data_dir();

// Reads a whole file; throws std::runtime_error naming the path on failure.
std::string read_file(std::string const& path);

// A fresh, empty, unique directory under the system temp dir.
std::string make_temp_dir(std::string const& prefix);

// A name unique within this machine and run, for databases and topics
// ("<prefix>-<pid>-<counter>-<random>"), lowercase so CouchDB accepts it.
std::string unique_name(std::string const& prefix);

} // namespace test_support
