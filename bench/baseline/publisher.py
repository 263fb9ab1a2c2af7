#!/usr/bin/env python3
"""The baseline for issue #7: a change publisher written the way CommCare HQ's
pillowtop publishes changes from CouchDB to Kafka.

What it copies from pillowtop, on purpose, because that is what is measured:
- the feed: one streaming `_changes?feed=continuous&include_docs=true` request
  read line by line with `requests` (`iter_lines`), one JSON parse per line;
- the record: a ChangeMeta dict turned into bytes with `json.dumps(...)`;
- the producer: kafka-python `KafkaProducer(acks=1, retries=3)` with a
  `key_serializer` of `str(key).encode()`, `send(topic, value, key=doc_id)`
  and a `flush()` after every send (pillowtop's ChangeProducer auto_flush);
- the checkpoint: the seq is saved every 100 changes (pillowtop's default
  checkpoint frequency); here a durable file write (write, fsync, rename),
  standing in for pillowtop's database row.

It follows one database (pillowtop runs one process per feed) and stops after
--stop-after changes, then prints one JSON line of figures on stdout:
changes, seconds, changes_per_s, cpu_seconds, cpu_us_per_change,
checkpoints.
"""

import argparse
import datetime
import json
import os
import resource
import sys
import time

import requests
from kafka import KafkaProducer

CASE_TYPES = {"CommCareCase", "CommCareCase-Deleted"}
_FORM_BASE = ["XFormInstance", "XFormArchived", "XFormDeprecated", "XFormDuplicate", "XFormError",
              "SubmissionErrorLog"]
FORM_TYPES = set(_FORM_BASE) | {t + "-Deleted" for t in _FORM_BASE} | {"HQSubmission"}
DOMAIN_TYPES = {"Domain", "Domain-Deleted", "Domain-DUPLICATE"}
# doc_type -> topic for the rest of the commcare profile (DESIGN section 4).
OTHER_TOPICS = {
    "CommCareUser": "commcare-user",
    "CommCareUser-Deleted": "commcare-user",
    "WebUser": "web-user",
    "Group": "group",
    "SyncLog": "synclog-sql",
    "Application": "app",
    "Location": "location",
}
DEFAULT_TOPIC = "meta"


def topic_for(doc_type):
    if doc_type in CASE_TYPES:
        return "case"
    if doc_type in FORM_TYPES:
        return "form"
    if doc_type in DOMAIN_TYPES:
        return "domain"
    return OTHER_TOPICS.get(doc_type, DEFAULT_TOPIC)


def utc_text(now):
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def change_meta(change, database):
    """The ChangeMeta dict pillowtop's change_meta_from_doc builds."""
    doc = change.get("doc") or {}
    doc_type = doc.get("doc_type")
    subtype = None
    if doc_type in CASE_TYPES:
        subtype = doc.get("type")
    elif doc_type in FORM_TYPES:
        subtype = doc.get("xmlns")
    domain = doc.get("name") if doc_type in DOMAIN_TYPES else doc.get("domain")
    is_deletion = bool(change.get("deleted")) or (
        doc_type is not None and (doc_type.endswith("-Deleted") or doc_type == "Domain-DUPLICATE"))
    rev = doc.get("_rev")
    if rev is None and change.get("changes"):
        rev = change["changes"][0].get("rev")
    now = utc_text(datetime.datetime.utcnow())
    return {
        "document_id": change["id"],
        "document_rev": rev,
        "data_source_type": "couch",
        "data_source_name": database,
        "document_type": doc_type,
        "document_subtype": subtype,
        "domain": domain,
        "is_deletion": is_deletion,
        "publish_timestamp": now,
        "attempts": 0,
        "original_publication_datetime": now,
        "associated_document_id": None,
    }


def save_checkpoint(path, seq):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"seq": seq}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path):
    try:
        with open(path) as f:
            return json.load(f)["seq"]
    except FileNotFoundError:
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--couch-url", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--kafka-brokers", required=True)
    p.add_argument("--checkpoint-file", required=True)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--stop-after", type=int, required=True, help="changes to publish before exiting")
    p.add_argument("--topic-prefix", default="", help="prepended to every topic (keeps runs apart)")
    p.add_argument("--heartbeat-ms", type=int, default=10000)
    args = p.parse_args()

    producer = KafkaProducer(
        bootstrap_servers=args.kafka_brokers,
        client_id="cchq-producer",
        retries=3,
        acks=1,
        key_serializer=lambda key: str(key).encode(),
    )
    since = load_checkpoint(args.checkpoint_file)
    published = 0
    checkpoints = 0
    last_seq = since
    started = time.monotonic()
    cpu_started = resource.getrusage(resource.RUSAGE_SELF)

    session = requests.Session()
    while published < args.stop_after:
        params = {"feed": "continuous", "include_docs": "true", "since": last_seq,
                  "heartbeat": args.heartbeat_ms}
        url = "%s/%s/_changes" % (args.couch_url.rstrip("/"), args.db)
        with session.get(url, params=params, stream=True, timeout=(10, 3 * args.heartbeat_ms / 1000)) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines(chunk_size=512):
                if not line:
                    continue  # heartbeat
                change = json.loads(line)
                if "last_seq" in change:
                    break  # the server ended the feed: reconnect from last_seq
                meta = change_meta(change, args.db)
                value = json.dumps(meta).encode("utf-8")
                producer.send(args.topic_prefix + topic_for(meta["document_type"]), value,
                              key=meta["document_id"])
                producer.flush()
                published += 1
                if change.get("seq") is not None:
                    last_seq = change["seq"]
                if published % args.checkpoint_every == 0:
                    save_checkpoint(args.checkpoint_file, last_seq)
                    checkpoints += 1
                if published >= args.stop_after:
                    break
    save_checkpoint(args.checkpoint_file, last_seq)
    checkpoints += 1
    elapsed = time.monotonic() - started
    cpu_now = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_now.ru_utime - cpu_started.ru_utime) + (cpu_now.ru_stime - cpu_started.ru_stime)
    producer.close()
    print(json.dumps({
        "changes": published,
        "seconds": round(elapsed, 3),
        "changes_per_s": round(published / elapsed, 1) if elapsed > 0 else None,
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_change": round(cpu * 1e6 / published, 1) if published else None,
        "checkpoints": checkpoints,
        "peak_rss_kib": cpu_now.ru_maxrss,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
