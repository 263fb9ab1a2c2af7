#pragma once

#include <string>

namespace kafka {

// The version of the librdkafka library linked at run time (e.g. "2.0.2").
std::string librdkafka_version();

} // namespace kafka
