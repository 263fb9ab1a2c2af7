#include "checkpoint/version.hpp"

#include <rocksdb/version.h>

namespace checkpoint {

std::string rocksdb_version() { return rocksdb::GetRocksVersionAsString(true); }

} // namespace checkpoint
