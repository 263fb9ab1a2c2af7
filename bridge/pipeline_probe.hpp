#pragma once

// The metrics of one pipeline, shared by the files that make up
// bridge::pipeline (pipeline.cpp, pipeline_delivery.cpp, pipeline_status.cpp).
// Internal: include only from those.

#include "bridge/pipeline.hpp"
#include "metrics/registry.hpp"

#include <string>

namespace bridge {

// This pipeline's own metrics (labelled database=<db>). The feed, producer and
// checkpoint modules have probes of their own.
struct pipeline::probe {
    probe(metrics::registry& r, std::string const& db)
        : registry(r),
          db_labels{{"database", db}},
          skipped_design(r.add_counter("couch_bridge_records_skipped_total",
                                       "Changes deliberately not published, by reason",
                                       {{"database", db}, {"reason", "design_doc"}})),
          skipped_no_type(r.add_counter("couch_bridge_records_skipped_total",
                                        "Changes deliberately not published, by reason",
                                        {{"database", db}, {"reason", "missing_doc_type"}})),
          skipped_filter(r.add_counter("couch_bridge_records_skipped_total",
                                       "Changes deliberately not published, by reason",
                                       {{"database", db}, {"reason", "doc_type_filter"}})),
          tombstones_recalled(r.add_counter("couch_bridge_tombstones_total",
                                            "Hard deletes (tombstones without doc_type), by how they were routed",
                                            {{"database", db}, {"how", "remembered"}})),
          tombstones_unknown(r.add_counter("couch_bridge_tombstones_total",
                                           "Hard deletes (tombstones without doc_type), by how they were routed",
                                           {{"database", db}, {"how", "no_memory"}})),
          memory_errors(r.add_counter("couch_bridge_deletion_memory_errors_total",
                                      "Failed writes of the hard-delete memory", db_labels)),
          produce_errors(r.add_counter("couch_bridge_produce_errors_total",
                                       "Records whose produce or delivery failed (the pipeline rewinds)", db_labels)),
          rewinds(r.add_counter("couch_bridge_pipeline_rewinds_total",
                                "Times the pipeline went back to its checkpoint after a delivery failure", db_labels)),
          in_flight(r.add_gauge("couch_bridge_in_flight_records", "Records produced and not yet acknowledged",
                                db_labels)),
          in_flight_bytes(r.add_gauge("couch_bridge_in_flight_bytes", "Bytes of records not yet acknowledged",
                                      db_labels)),
          backpressure(r.add_counter("couch_bridge_backpressure_waits_total",
                                     "Times the pipeline stopped reading because its in-flight window was full",
                                     db_labels)),
          last_change(r.add_gauge("couch_bridge_last_change_timestamp_seconds",
                                  "Unix time of the last change read from the feed", db_labels)),
          ready(r.add_gauge("couch_bridge_pipeline_ready", "1 when the pipeline is connected and not failing",
                            db_labels)),
          // One series for the process (no database label): 30 buckets per
          // database would weigh on /metrics with a thousand databases.
          row_ack(r.add_histogram("couch_bridge_row_ack_latency_seconds",
                                  "Time from a change row handed out by the feed (parsed from the socket) to its "
                                  "acknowledgement by Kafka: the bridge's own added latency",
                                  metrics::exponential_buckets(0.0001, 1.5, 30))),
          lane_switches(r.add_counter("couch_bridge_kafka_lane_switches_total",
                                      "Times a pipeline moved its records between the following producer and the "
                                      "catch-up producer (--kafka-catch-up-linger-ms), after draining the other")) {}

    metrics::registry& registry;
    metrics::labels db_labels;
    metrics::counter& skipped_design;
    metrics::counter& skipped_no_type;
    metrics::counter& skipped_filter;
    metrics::counter& tombstones_recalled;
    metrics::counter& tombstones_unknown;
    metrics::counter& memory_errors; // registered here (0 from the start), counted by checkpoint::deletion_memory
    metrics::counter& produce_errors;
    metrics::counter& rewinds;
    metrics::gauge& in_flight;
    metrics::gauge& in_flight_bytes;
    metrics::counter& backpressure;
    metrics::gauge& last_change;
    metrics::gauge& ready;
    metrics::histogram& row_ack;
    metrics::counter& lane_switches; // one series for the process, like row_ack
};

} // namespace bridge
