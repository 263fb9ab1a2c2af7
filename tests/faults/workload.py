"""The writer: creates, updates, soft-deletes (doc_type "<type>-Deleted") and
hard-deletes documents in several databases, straight to pouchdb-server
(never through the bridge's links), and logs every revision it was told
about with the time it learned it. It survives pouchdb-server restarts: a
write whose answer was lost is resolved by reading the document back."""

import http.client
import json
import random
import threading
import time
import urllib.parse

DOC_TYPES = ("CommCareCase", "XFormInstance", "CommCareUser", "Location")


class Writer:
    def __init__(self, couch_port, databases, seed, rate_per_s):
        self.port = couch_port
        self.databases = databases
        self.rng = random.Random(seed)
        self.period = 1.0 / rate_per_s
        self.revs = []  # (unix time, db, id, rev) of every acknowledged or read-back revision
        self.ops = {"create": 0, "update": 0, "soft_delete": 0, "hard_delete": 0}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = None
        self._conn = None

    def create_databases(self):
        for db in self.databases:
            status, body = self._request("PUT", "/" + db)
            if status not in (201, 412):
                raise RuntimeError(f"PUT /{db} -> {status} {body}")

    def start(self):
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _request(self, method, path, body=None):
        for attempt in range(2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                self._conn.request(method, path, body=json.dumps(body) if body is not None else None,
                                   headers={"Content-Type": "application/json"})
                r = self._conn.getresponse()
                data = r.read().decode()
                return r.status, data
            except (OSError, http.client.HTTPException):
                self._conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _log(self, db, doc_id, rev):
        self.revs.append((time.time(), db, doc_id, rev))

    def _loop(self):
        live = {}  # (db, id) -> (rev, doc_type); docs the writer may still change
        n = 0
        while not self._stop.is_set():
            time.sleep(self.period)
            db = self.rng.choice(self.databases)
            op = self.rng.random()
            mine = [k for k in live if k[0] == db] if live else []
            try:
                if op < 0.5 or len(mine) < 5:
                    n += 1
                    doc_id = f"doc-{n}"
                    doc_type = self.rng.choice(DOC_TYPES)
                    self._put(live, db, doc_id, None, doc_type, "create")
                else:
                    key = self.rng.choice(mine)
                    rev, doc_type = live[key]
                    if op < 0.8:
                        self._put(live, db, key[1], rev, doc_type, "update")
                    elif op < 0.9:
                        self._put(live, db, key[1], rev, doc_type + "-Deleted", "soft_delete")
                        live.pop(key, None)  # a soft-deleted doc is left alone
                    else:
                        path = f"/{db}/{urllib.parse.quote(key[1])}?rev={rev}"
                        status, body = self._request("DELETE", path)
                        if status in (200, 201):
                            self._log(db, key[1], json.loads(body)["rev"])
                            self.ops["hard_delete"] += 1
                        else:
                            self.errors += 1
                            self._resync(live, key)
                        live.pop(key, None)
            except (OSError, http.client.HTTPException, ValueError):
                # pouchdb-server is down or restarting: whatever was written
                # is read back later; CouchDB stays the source of truth.
                # A document whose update was lost stays in `live` with its
                # old rev: the next write to it gets 409 and resyncs.
                self.errors += 1
                time.sleep(0.5)

    def _put(self, live, db, doc_id, rev, doc_type, op):
        doc = {"doc_type": doc_type, "domain": "faults", "n": self.rng.randrange(1 << 30)}
        if doc_type.startswith("CommCareCase"):
            doc["type"] = "patient"
        if doc_type.startswith("XForm"):
            doc["xmlns"] = "http://example.org/form"
        if rev:
            doc["_rev"] = rev
        status, body = self._request("PUT", f"/{db}/{urllib.parse.quote(doc_id)}", doc)
        if status in (200, 201):
            new_rev = json.loads(body)["rev"]
            self._log(db, doc_id, new_rev)
            live[(db, doc_id)] = (new_rev, doc_type)
            self.ops[op] += 1
        else:  # 409: an earlier write whose answer was lost did land
            self.errors += 1
            self._resync(live, (db, doc_id))

    def _resync(self, live, key):
        db, doc_id = key
        status, body = self._request("GET", f"/{db}/{urllib.parse.quote(doc_id)}")
        if status == 200:
            doc = json.loads(body)
            self._log(db, doc_id, doc["_rev"])
            if doc.get("doc_type", "").endswith("-Deleted"):
                live.pop(key, None)
            else:
                live[key] = (doc["_rev"], doc.get("doc_type", "CommCareCase"))
        else:
            live.pop(key, None)
