#include "bridge/tail.hpp"

#include "couch/document_store.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

namespace bridge {

namespace {

struct rk_deleter {
    void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};

boost::json::object to_line(rd_kafka_message_t const* m) {
    boost::json::object line;
    line["topic"] = rd_kafka_topic_name(m->rkt);
    line["partition"] = m->partition;
    line["offset"] = m->offset;
    line["key"] = m->key ? std::string(static_cast<char const*>(m->key), m->key_len) : std::string();
    boost::json::object headers;
    rd_kafka_headers_t* hdrs = nullptr;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name = nullptr;
        const void* val = nullptr;
        size_t size = 0;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
            headers[name] = std::string(static_cast<char const*>(val), size);
        }
    }
    line["headers"] = std::move(headers);
    std::string value(static_cast<char const*>(m->payload), m->len);
    boost::system::error_code ec;
    auto parsed = boost::json::parse(value, ec);
    line["value"] = ec ? boost::json::value(value) : parsed;
    return line;
}

// Resolves and prints a batch of lines, in order, through the document
// store. Returns the number of documents that could not be fetched.
std::size_t print_with_documents(std::vector<boost::json::object>& lines, couch::document_store& store,
                                 std::size_t batch, std::ostream& out, std::ostream& err) {
    // Per database: the ids to fetch and, per line, where its answer lands.
    std::map<std::string, std::vector<std::string>> ids_by_db;
    for (auto& line : lines) {
        auto const* v = line.at("value").if_object();
        auto const* type = v ? v->if_contains("data_source_type") : nullptr;
        auto const* db = v ? v->if_contains("data_source_name") : nullptr;
        auto const* id = v ? v->if_contains("document_id") : nullptr;
        if (type == nullptr || !type->is_string() || db == nullptr || !db->is_string() || id == nullptr ||
            !id->is_string()) {
            line["document"] = {{"status", "no_store"},
                                {"reason", "not a ChangeMeta (data_source_type, data_source_name, document_id)"}};
        } else if (type->as_string() != "couch") {
            line["document"] = {{"status", "no_store"},
                                {"reason", "data_source_type '" + std::string(type->as_string()) +
                                               "' is not a store this tool reads (couch)"}};
        } else {
            ids_by_db[std::string(db->as_string())].emplace_back(id->as_string());
        }
    }
    std::map<std::pair<std::string, std::string>, boost::json::object> answers;
    std::size_t errors = 0;
    for (auto& [db, ids] : ids_by_db) {
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        for (std::size_t first = 0; first < ids.size(); first += batch) {
            auto const last = std::min(ids.size(), first + batch);
            std::vector<std::string> chunk(ids.begin() + static_cast<std::ptrdiff_t>(first),
                                           ids.begin() + static_cast<std::ptrdiff_t>(last));
            auto result = store.fetch(db, chunk);
            if (!result.error.empty()) {
                err << "tail: cannot fetch " << chunk.size() << " document(s) of database '" << db
                    << "': " << result.error << '\n';
                for (auto const& id : chunk) {
                    answers[{db, id}] = {{"status", "error"}, {"error", result.error}};
                }
                continue;
            }
            for (auto& d : result.docs) {
                boost::json::object a;
                switch (d.state) {
                case couch::doc_state::found:
                    a["status"] = "found";
                    a["doc"] = std::move(d.doc);
                    break;
                case couch::doc_state::deleted:
                    a["status"] = "deleted";
                    if (!d.doc.is_null()) {
                        a["doc"] = std::move(d.doc);
                    }
                    break;
                case couch::doc_state::missing:
                    a["status"] = "missing";
                    break;
                }
                answers[{db, d.id}] = std::move(a);
            }
        }
    }
    for (auto& line : lines) {
        if (!line.contains("document")) {
            auto const& v = line.at("value").as_object();
            auto const& answer = answers.at({std::string(v.at("data_source_name").as_string()),
                                             std::string(v.at("document_id").as_string())});
            errors += answer.at("status") == "error" ? 1 : 0;
            line["document"] = answer;
        }
        out << boost::json::serialize(line) << '\n';
    }
    out << std::flush;
    lines.clear();
    return errors;
}

} // namespace

int run_tail(tail_options const& options, std::ostream& out, std::ostream& err) {
    char errstr[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", options.brokers.c_str(), errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", "couch-kafka-bridge-tail", errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        err << "tail: " << errstr << '\n';
        return 1;
    }
    for (auto const& [name, value] : options.properties) {
        if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            err << "tail: kafka property '" << name << "': " << errstr << '\n'; // the value may be a secret
            return 1;
        }
    }
    std::unique_ptr<rd_kafka_t, rk_deleter> rk(rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        err << "tail: " << errstr << '\n';
        return 1;
    }
    // Partitions are assigned explicitly (no group coordination needed) once
    // each topic exists, incrementally: assigning the whole list again would
    // restart the topics found earlier from the beginning (duplicate lines).
    std::set<std::string> assigned;
    std::size_t printed = 0;
    std::unique_ptr<couch::document_store> store;
    if (options.fetch_docs) {
        try {
            store = std::make_unique<couch::document_store>(*options.fetch_docs);
        } catch (std::exception const& e) {
            err << "tail: " << e.what() << '\n';
            return 2;
        }
    }
    std::vector<boost::json::object> batch; // read, not yet resolved and printed
    std::size_t fetch_errors = 0;
    auto last_progress = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - last_progress < options.timeout) {
        if (assigned.size() < options.topics.size()) {
            auto* added = rd_kafka_topic_partition_list_new(8);
            for (auto const& topic : options.topics) {
                if (assigned.count(topic)) {
                    continue;
                }
                rd_kafka_topic_t* t = rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr);
                const rd_kafka_metadata_t* md = nullptr;
                if (rd_kafka_metadata(rk.get(), 0, t, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
                    md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0) {
                    for (int p = 0; p < md->topics[0].partition_cnt; ++p) {
                        rd_kafka_topic_partition_list_add(added, topic.c_str(), p)->offset =
                            RD_KAFKA_OFFSET_BEGINNING;
                    }
                    assigned.insert(topic);
                }
                if (md) {
                    rd_kafka_metadata_destroy(md);
                }
                rd_kafka_topic_destroy(t);
            }
            if (added->cnt > 0) {
                if (rd_kafka_error_t* e = rd_kafka_incremental_assign(rk.get(), added)) {
                    err << "tail: " << rd_kafka_error_string(e) << '\n';
                    rd_kafka_error_destroy(e);
                }
            }
            rd_kafka_topic_partition_list_destroy(added);
        }
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 200);
        if (!m || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            // Nothing more right now: resolve what is waiting.
            if (store && !batch.empty()) {
                fetch_errors += print_with_documents(batch, *store, options.fetch_batch, out, err);
            }
            if (m) {
                rd_kafka_message_destroy(m);
            }
            continue;
        }
        if (m->err) {
            err << "tail: " << rd_kafka_message_errstr(m) << '\n';
            rd_kafka_message_destroy(m);
            continue;
        }
        auto line = to_line(m);
        rd_kafka_message_destroy(m);
        last_progress = std::chrono::steady_clock::now();
        ++printed;
        bool const enough = options.max_records != 0 && printed >= options.max_records;
        if (store) {
            batch.push_back(std::move(line));
            if (batch.size() >= options.fetch_batch || enough) {
                fetch_errors += print_with_documents(batch, *store, options.fetch_batch, out, err);
            }
        } else {
            out << boost::json::serialize(line) << '\n' << std::flush;
        }
        if (enough) {
            break;
        }
    }
    if (store && !batch.empty()) {
        fetch_errors += print_with_documents(batch, *store, options.fetch_batch, out, err);
    }
    rd_kafka_consumer_close(rk.get());
    if (options.max_records != 0 && printed < options.max_records) {
        err << "tail: " << printed << " of " << options.max_records << " records within the timeout\n";
        return 1;
    }
    if (fetch_errors > 0) {
        err << "tail: " << fetch_errors << " record(s) whose document could not be fetched\n";
        return 1;
    }
    return 0;
}

} // namespace bridge
