#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the CouchDB 3.4.3 recordings.

usage: python3 tests/fuzz/make_corpus.py   (from the repository root)

fuzz_shard_seq (tests/data/couch/shard-seq-corpus): one mode byte and a
payload (see tests/fuzz/shard_seq_fuzz.cpp): 'c' + a seq's text, 'a' + its
inflated term (after the 131 byte), 'b' the same term (the harness
compresses it).

fuzz_db_updates (tests/data/couch/db-updates-corpus): one mode byte (bit 0
continuous, bit 1 chunked, see tests/fuzz/db_updates_fuzz.cpp) and a
recorded response body with its chunked framing.

fuzz_all_dbs (tests/data/couch/all-dbs-corpus): one mode byte (the page size
is mode % 8 + 1, see tests/fuzz/all_dbs_fuzz.cpp) and recorded `_all_dbs`
bodies without their chunked framing, one page each, joined by 0xFF bytes.
"""
import base64
import pathlib
import re
import zlib

DATA = pathlib.Path("tests/data/couchdb-3.4.3")
SEQ_OUT = pathlib.Path("tests/data/couch/shard-seq-corpus")
DBU_OUT = pathlib.Path("tests/data/couch/db-updates-corpus")
SEQ_PICKS = [  # (recording, key)
    ("17a_db_info_before_recreate.http", "update_seq"),
    ("17a_db_info_before_recreate.http", "purge_seq"),
    ("14e_db_info_q1.http", "update_seq"),
    ("14e_db_info_q1.http", "purge_seq"),
    ("20a_changes_q8_seq_interval.http", "seq"),
    ("20a_changes_q8_seq_interval.http", "last_seq"),
    ("06a_changes_before_delete.http", "last_seq"),
    ("15a_db_updates_normal_since0.http", "last_seq"),
]
ADB_OUT = pathlib.Path("tests/data/couch/all-dbs-corpus")
ADB_PICKS = [  # (file name, page size, recordings: one page each)
    ("16a", 8, ["16a_all_dbs.http"]),
    ("16b", 2, ["16b_all_dbs_limit2.http"]),
    ("16b-16c", 2, ["16b_all_dbs_limit2.http", "16c_all_dbs_start_key.http"]),
]
DBU_PICKS = [  # (recording, continuous?)
    ("08b_db_updates_normal.http", False),
    ("08c_db_updates_continuous_heartbeat500.http", True),
    ("08d_db_updates_longpoll_since_now.http", False),
    ("15b_db_updates_continuous_since_now_live.http", True),
    ("15c_db_updates_normal_since_seq.http", False),
    ("15e_db_updates_continuous_burst.http", True),
    ("16c_all_dbs_start_key.http", False),
]


def term_of(seq):
    opaque = seq.split("-", 1)[1]
    raw = base64.urlsafe_b64decode(opaque + "=" * (-len(opaque) % 4))
    assert raw[0] == 131
    return zlib.decompress(raw[6:]) if raw[1] == 80 else raw[1:]


def dechunk(body):
    out = b""
    while True:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += body[:size]
        body = body[size + 2:]


def main():
    SEQ_OUT.mkdir(parents=True, exist_ok=True)
    for name, key in SEQ_PICKS:
        text = (DATA / name).read_text(encoding="latin-1")
        seq = re.findall(r'"%s":"([^"]+)"' % key, text)[0]
        stem = "%s_%s" % (name[:3], key)
        (SEQ_OUT / (stem + ".text")).write_bytes(b"c" + seq.encode())
        (SEQ_OUT / (stem + ".term")).write_bytes(b"a" + term_of(seq))
        (SEQ_OUT / (stem + ".zterm")).write_bytes(b"b" + term_of(seq))
    DBU_OUT.mkdir(parents=True, exist_ok=True)
    for name, continuous in DBU_PICKS:
        raw = (DATA / name).read_bytes()
        body = raw.split(b"\r\n\r\n", 1)[1]
        mode = 2 | (1 if continuous else 0)
        (DBU_OUT / name[:3].rstrip("_")).write_bytes(bytes([mode]) + body)
    ADB_OUT.mkdir(parents=True, exist_ok=True)
    for name, page_size, recordings in ADB_PICKS:
        pages = []
        for rec in recordings:
            head, body = (DATA / rec).read_bytes().split(b"\r\n\r\n", 1)
            pages.append(dechunk(body) if b"chunked" in head.lower() else body)
        (ADB_OUT / name).write_bytes(bytes([page_size - 1]) + b"\xff".join(pages))


if __name__ == "__main__":
    main()
