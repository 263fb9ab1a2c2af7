"""The independent checker: what CouchDB says happened against what Kafka
holds, read with kafka-python (not the bridge's librdkafka code) on the
broker's DIRECT listener, never through the lab's faulty links."""

import datetime
import json
import subprocess
import urllib.parse
import urllib.request

from kafka import KafkaConsumer, TopicPartition


def couch_changes(couch_url, databases):
    """{(db, id): (current rev, deleted)} from each database's _changes."""
    out = {}
    for db in databases:
        with urllib.request.urlopen(f"{couch_url}/{urllib.parse.quote(db)}/_changes", timeout=60) as r:
            body = json.loads(r.read())
        for row in body["results"]:
            out[(db, row["id"])] = (row["changes"][0]["rev"], bool(row.get("deleted")))
    return out


def couch_update_seq(couch_url, db):
    with urllib.request.urlopen(f"{couch_url}/{urllib.parse.quote(db)}", timeout=10) as r:
        return json.loads(r.read())["update_seq"]


def parse_timestamp(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _record(value, key, headers, topic, partition, offset):
    """A record's dict, and whether its key/headers agree with its value."""
    v = json.loads(value)
    rec = {"db": v["data_source_name"], "id": v["document_id"], "rev": v["document_rev"],
           "deletion": v["is_deletion"], "published": parse_timestamp(v["publish_timestamp"]), "topic": topic,
           "partition": partition, "offset": offset}
    ok = key == rec["id"] and headers.get("database") == rec["db"] and headers.get("rev") == rec["rev"]
    return rec, ok


def kafka_records(bootstrap, topic_prefix, read_committed_binary=None):
    """Every record of the topics starting with topic_prefix, from the
    beginning to the end offsets as of now: a list of dicts with db, id, rev
    (from the value; headers are checked against it) and publish time.
    With read_committed_binary (exactly-once runs) Kafka is read through it,
    with isolation.level=read_committed: kafka-python 2.0.2 would return the
    records of aborted transactions too."""
    if read_committed_binary:
        out = subprocess.run([read_committed_binary, bootstrap, topic_prefix], check=True, capture_output=True,
                             text=True, timeout=600).stdout
        records, header_mismatches = [], 0
        for line in out.splitlines():
            r = json.loads(line)
            if r["topic"].endswith("checkpoints"):
                continue  # the bridge's own positions, not records
            rec, ok = _record(r["value"], r["key"], r["headers"], r["topic"], r["partition"], r["offset"])
            header_mismatches += 0 if ok else 1
            records.append(rec)
        return records, header_mismatches
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             request_timeout_ms=60000, api_version_auto_timeout_ms=30000)
    try:
        topics = sorted(t for t in consumer.topics() if t.startswith(topic_prefix))
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not parts:
            return [], 0
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records, header_mismatches = [], 0
        remaining = {tp for tp in parts if end[tp] > 0}
        idle = 0
        while remaining and idle < 60:
            batch = consumer.poll(timeout_ms=1000, max_records=5000)
            idle = 0 if batch else idle + 1
            for tp, msgs in batch.items():
                for m in msgs:
                    if tp.topic.endswith("checkpoints"):
                        continue  # the bridge's own positions (exactly-once runs), not records
                    headers = {k: val.decode() for k, val in (m.headers or [])}
                    rec, ok = _record(m.value, m.key.decode() if m.key is not None else None, headers, tp.topic,
                                      tp.partition, m.offset)
                    header_mismatches += 0 if ok else 1
                    records.append(rec)
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        if remaining:
            raise RuntimeError(f"could not read Kafka to its end offsets: {sorted(str(t) for t in remaining)}")
        return records, header_mismatches
    finally:
        consumer.close()


def check(changes, records, writer_revs):
    """Compares; returns a dict of findings.

    lost: a (db, id, current rev) of _changes with no record.
    duplicates: records beyond the first for the same (db, id, rev).
    phantoms: records naming a document that is not in _changes at all, or
    a revision neither CouchDB nor the writer ever showed.
    stale_last: (db, id, current rev) whose record is followed, in the same
    topic partition, by a record of an older revision: a subscriber that
    applies records in order ends on the old one. (A document whose
    revisions went to different topics is only compared within the topic
    of its current revision: Kafka orders nothing across topics.)"""
    seen = {}
    for r in records:
        seen.setdefault((r["db"], r["id"], r["rev"]), []).append(r)
    expected = {(db, doc_id, rev) for (db, doc_id), (rev, _) in changes.items()}
    lost = sorted(expected - set(seen))
    known_revs = {(db, doc_id, rev) for _, db, doc_id, rev in writer_revs} | expected
    phantoms = sorted(k for k in seen if (k[0], k[1]) not in changes or k not in known_revs)
    duplicates = {k: v for k, v in seen.items() if len(v) > 1}
    return {"expected": len(expected), "records": len(records), "unique": len(seen), "lost": lost,
            "phantoms": phantoms, "duplicates": duplicates,
            "duplicate_count": sum(len(v) - 1 for v in duplicates.values()),
            "stale_last": stale_last(changes, records)}


def stale_last(changes, records):
    """See check(): the documents whose last record in the partition of
    their current revision names another revision."""
    last = {}  # (db, id, topic, partition) -> (offset, rev) of its last record
    for r in records:
        k = (r["db"], r["id"], r["topic"], r["partition"])
        if k not in last or r["offset"] > last[k][0]:
            last[k] = (r["offset"], r["rev"])
    current_in = {}  # (db, id) -> the (topic, partition)s holding a record of its current rev
    for r in records:
        rev = changes.get((r["db"], r["id"]), (None, False))[0]
        if r["rev"] == rev:
            current_in.setdefault((r["db"], r["id"]), set()).add((r["topic"], r["partition"]))
    return sorted((db, doc_id, changes[(db, doc_id)][0]) for (db, doc_id), where in current_in.items()
                  if any(last[(db, doc_id, t, p)][1] != changes[(db, doc_id)][0] for t, p in where))
