#include "bridge/startup.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace bridge {

// --selector: a JSON object, normalized; "" when not given. Throws
// std::invalid_argument naming the flag.
std::string selector_text(std::string const& s) {
    if (s.empty()) {
        return {};
    }
    boost::system::error_code ec;
    auto v = boost::json::parse(s, ec);
    if (ec || !v.is_object()) {
        throw std::invalid_argument("--selector must be a JSON object (a Mango selector), e.g. "
                                    "'{\"doc_type\":\"CommCareCase\"}'");
    }
    return boost::json::serialize(v);
}

// --doc-ids FILE: a JSON array of strings, or one id per line. Throws
// std::invalid_argument naming the file.
std::vector<std::string> read_doc_ids(std::string const& path) {
    std::vector<std::string> ids;
    if (path.empty()) {
        return ids;
    }
    std::ifstream in(path);
    if (!in) {
        throw std::invalid_argument("--doc-ids: cannot read " + path + ": " + std::strerror(errno));
    }
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto const first = text.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && text[first] == '[') {
        boost::system::error_code ec;
        auto v = boost::json::parse(text, ec);
        if (ec || !v.is_array()) {
            throw std::invalid_argument("--doc-ids: " + path + " starts like a JSON array but is not one");
        }
        for (auto const& x : v.as_array()) {
            if (!x.is_string()) {
                throw std::invalid_argument("--doc-ids: " + path + ": every id must be a string");
            }
            ids.emplace_back(x.as_string());
        }
    } else {
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
                line.pop_back();
            }
            if (!line.empty()) {
                ids.push_back(line);
            }
        }
    }
    if (ids.empty()) {
        throw std::invalid_argument("--doc-ids: " + path + " holds no document id");
    }
    return ids;
}

throwaway_dir::throwaway_dir() {
    auto base = std::filesystem::temp_directory_path() / "couch-kafka-bridge-checkpoints-XXXXXX";
    std::string templ = base.string();
    if (::mkdtemp(templ.data()) == nullptr) {
        throw std::runtime_error("cannot create a throw-away checkpoint directory under " +
                                 base.parent_path().string() + ": " + std::strerror(errno));
    }
    path_ = templ;
}

throwaway_dir::~throwaway_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

cluster_bound_writer::cluster_bound_writer(checkpoint::store& store, cluster_fn cluster_of, std::string const& verified)
    : store_(store), cluster_of_(std::move(cluster_of)), recorded_(!verified.empty()) {}

boost::system::error_code cluster_bound_writer::write(
    std::vector<std::pair<checkpoint::key, checkpoint::position>> const& entries) {
    std::lock_guard lock(mutex_);
    if (!recorded_) {
        auto const id = cluster_of_(std::chrono::milliseconds(0));
        if (id.empty()) {
            detail_ = "the Kafka cluster id is not known yet (are the brokers reachable?); checkpoints are "
                      "written once it is";
            return checkpoint::make_error_code(checkpoint::store_errc::io);
        }
        if (auto ec = store_.put_meta("kafka_cluster_id", id)) {
            detail_.clear();
            return ec;
        }
        spdlog::info("Kafka cluster id {} recorded with the checkpoints", id);
        recorded_ = true;
    }
    detail_.clear();
    return store_.write(entries);
}

std::string cluster_bound_writer::last_error_detail() const {
    std::lock_guard lock(mutex_);
    return detail_.empty() ? store_.last_error_detail() : detail_;
}

bool check_kafka_cluster(checkpoint::store& store, std::string const& cluster, std::string const& policy) {
    auto const stored = store.get_meta("kafka_cluster_id");
    if (stored && *stored == cluster) {
        return true;
    }
    auto const positions = store.list();
    if (stored && !positions.empty()) {
        if (policy == "refuse") {
            spdlog::error("the checkpoints in {} were acknowledged by Kafka cluster {}, but the brokers given are "
                          "cluster {}: the records they cover are not in this cluster. Refusing to start. Choose: "
                          "--kafka-cluster-change=restart publishes every database from the start again into this "
                          "cluster; --kafka-cluster-change=keep trusts the positions (only if the topics were "
                          "mirrored from {} to {})",
                          store.dir(), *stored, cluster, *stored, cluster);
            return false;
        }
        if (policy == "restart") {
            for (auto const& [k, pos] : positions) {
                if (auto ec = store.erase(k)) {
                    throw std::runtime_error("cannot drop the checkpoint of " + k.database + ": " + ec.message());
                }
            }
            spdlog::warn("Kafka cluster changed from {} to {} (--kafka-cluster-change=restart): dropped {} "
                         "checkpoint(s); every database starts again as if new",
                         *stored, cluster, positions.size());
        } else {
            spdlog::warn("Kafka cluster changed from {} to {} (--kafka-cluster-change=keep): keeping {} "
                         "checkpoint(s); records they cover must already be in the new cluster",
                         *stored, cluster, positions.size());
        }
    } else if (!stored && !positions.empty()) {
        spdlog::warn("the checkpoints in {} carry no Kafka cluster id (written by an earlier version): adopting "
                     "them for cluster {}",
                     store.dir(), cluster);
    }
    if (auto ec = store.put_meta("kafka_cluster_id", cluster)) {
        throw std::runtime_error("cannot record the Kafka cluster id in " + store.dir() + ": " + ec.message());
    }
    return true;
}

} // namespace bridge
