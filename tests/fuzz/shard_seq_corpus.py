#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_shard_seq from the CouchDB 3.4.3 recordings.

usage: python3 tests/fuzz/shard_seq_corpus.py   (from the repository root)

Each seed is one mode byte and a payload (see tests/fuzz/shard_seq_fuzz.cpp):
'c' + a seq's text, 'a' + its inflated term (after the 131 byte), 'b' the same
term (the harness compresses it).
"""
import base64
import pathlib
import re
import zlib

DATA = pathlib.Path("tests/data/couchdb-3.4.3")
OUT = pathlib.Path("tests/data/couch/shard-seq-corpus")
PICKS = [  # (recording, key, occurrence)
    ("17a_db_info_before_recreate.http", "update_seq", 0),
    ("17a_db_info_before_recreate.http", "purge_seq", 0),
    ("14e_db_info_q1.http", "update_seq", 0),
    ("14e_db_info_q1.http", "purge_seq", 0),
    ("20a_changes_q8_seq_interval.http", "seq", 0),
    ("20a_changes_q8_seq_interval.http", "last_seq", 0),
    ("06a_changes_before_delete.http", "last_seq", 0),
    ("15a_db_updates_normal_since0.http", "last_seq", 0),
]


def term_of(seq):
    opaque = seq.split("-", 1)[1]
    raw = base64.urlsafe_b64decode(opaque + "=" * (-len(opaque) % 4))
    assert raw[0] == 131
    return zlib.decompress(raw[6:]) if raw[1] == 80 else raw[1:]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, key, nth in PICKS:
        text = (DATA / name).read_text(encoding="latin-1")
        seq = re.findall(r'"%s":"([^"]+)"' % key, text)[nth]
        stem = "%s_%s" % (name[:3], key)
        (OUT / (stem + ".text")).write_bytes(b"c" + seq.encode())
        (OUT / (stem + ".term")).write_bytes(b"a" + term_of(seq))
        (OUT / (stem + ".zterm")).write_bytes(b"b" + term_of(seq))


if __name__ == "__main__":
    main()
