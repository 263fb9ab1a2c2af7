#include "kafka/version.hpp"

#include <librdkafka/rdkafka.h>

namespace kafka {

std::string librdkafka_version() { return rd_kafka_version_str(); }

} // namespace kafka
