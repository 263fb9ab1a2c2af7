#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kafka {

// MurmurHash2 exactly as Apache Kafka's Java client computes it
// (org.apache.kafka.common.utils.Utils.murmur2): seed 0x9747b28c, 4-byte
// little-endian blocks, the tail mixed in from its highest byte down. Written
// here from the algorithm on purpose, independent of librdkafka: group mode
// places databases with it, and tests check where librdkafka's
// "murmur2_random" partitioner puts a key. Returns the hash as Java's signed
// int would hold it.
inline std::int32_t java_murmur2(std::string_view data) {
    std::uint32_t const m = 0x5bd1e995u;
    int const r = 24;
    auto const len = static_cast<std::uint32_t>(data.size());
    std::uint32_t h = 0x9747b28cu ^ len;
    auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(data[i])); };
    std::size_t const blocks = data.size() / 4;
    for (std::size_t i = 0; i < blocks; ++i) {
        std::size_t const i4 = i * 4;
        std::uint32_t k = byte(i4) | (byte(i4 + 1) << 8) | (byte(i4 + 2) << 16) | (byte(i4 + 3) << 24);
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    std::size_t const tail = blocks * 4;
    switch (data.size() % 4) {
    case 3:
        h ^= byte(tail + 2) << 16;
        [[fallthrough]];
    case 2:
        h ^= byte(tail + 1) << 8;
        [[fallthrough]];
    case 1:
        h ^= byte(tail);
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return static_cast<std::int32_t>(h);
}

// The partition Kafka's default partitioner (and librdkafka's
// murmur2_random, for a non-null key) picks:
// (Utils.murmur2(key) & 0x7fffffff) % partitions.
inline std::int32_t java_partition_for_key(std::string_view key, std::int32_t partitions) {
    auto positive = static_cast<std::uint32_t>(java_murmur2(key)) & 0x7fffffffu;
    return static_cast<std::int32_t>(positive % static_cast<std::uint32_t>(partitions));
}

} // namespace kafka
