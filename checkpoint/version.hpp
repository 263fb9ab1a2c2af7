#pragma once

#include <string>

namespace checkpoint {

// The version of the RocksDB library linked at run time (e.g. "7.8.3").
std::string rocksdb_version();

} // namespace checkpoint
