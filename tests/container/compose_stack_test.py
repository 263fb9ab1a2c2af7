#!/usr/bin/python3
"""The appliance, really run: docker-compose.yml plus deploy/compose.test.yml
(stand-ins for the official CouchDB, Kafka and Prometheus images) brought up
on the Docker engine, driven only through the published host ports.

One scenario, in order: CouchDB healthy -> documents written -> the whole
stack healthy -> ChangeMeta records read back from Kafka with kcat and checked
field by field -> /readyz -> Prometheus scrapes the bridge and knows its
counter -> the bridge container is replaced and resumes from its checkpoint
volume without republishing -> `down` exits 0 after a clean SIGTERM shutdown.

Environment: CKB_SOURCE_DIR (repository root), CKB_COMPOSE (the compose
command, default docker-compose). The images must exist
(scripts/container-images.sh; the ctest fixture runs it). Host ports are
chosen free at run time and the project name is unique, so runs on the same
engine do not meet. On failure every container's log is printed.
"""
import base64
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

SOURCE_DIR = os.environ.get("CKB_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE = shlex.split(os.environ.get("CKB_COMPOSE", "docker-compose"))
SERVICES = ["couchdb", "kafka", "bridge", "prometheus"]  # Grafana is left out of the test stack
DB = "commcarehq"
FIELDS = ["document_id", "document_rev", "data_source_type", "data_source_name", "document_type", "document_subtype",
          "domain", "is_deletion", "publish_timestamp", "attempts", "original_publication_datetime",
          "associated_document_id"]
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def murmur2(data):
    """Kafka's Java partitioner hash (org.apache.kafka.common.utils.Utils.murmur2)."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) // 4
    for i in range(whole):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[4 * whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def java_partition(key, partitions):
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class StackBroken(AssertionError):
    """A failure that waiting longer cannot mend: eventually() stops at once."""


def eventually(what, probe, timeout, interval=1.0):
    """Calls probe() until it returns something truthy; fails naming `what`
    and the last result or error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except StackBroken:
            raise
        except Exception as e:  # noqa: BLE001 - reported below
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class Stack:
    """One compose project on the engine, driven through its host ports."""

    def __init__(self):
        self.project = f"ckbtest{os.getpid()}x{secrets.token_hex(3)}"
        self.password = secrets.token_hex(12)
        self.ports = {}
        while len(set(self.ports.values())) < 4:
            self.ports = {s: free_port() for s in ("COUCHDB", "KAFKA", "BRIDGE", "PROMETHEUS")}
        self.env = dict(os.environ, COUCHDB_USER="admin", COUCHDB_PASSWORD=self.password, COUCH_BRIDGE_DB=DB,
                        **{f"HOST_PORT_{k}": str(v) for k, v in self.ports.items()})
        self.base = COMPOSE + ["--ansi", "never", "-p", self.project, "-f", "docker-compose.yml", "-f",
                               "deploy/compose.test.yml"]

    def compose(self, *args, timeout=600, check=True):
        cmd = self.base + list(args)
        out = subprocess.run(cmd, cwd=SOURCE_DIR, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def container(self, service):
        ids = self.compose("ps", "-q", service).stdout.split()
        if len(ids) != 1:
            raise AssertionError(f"expected one container for {service}, found {ids}")
        return ids[0]

    def state(self, service, container=None):
        """The container's State, plus its RestartCount."""
        out = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}} {{json .State}}",
                              container or self.container(service)],
                             capture_output=True, text=True, timeout=60, check=True)
        restarts, _, state = out.stdout.partition(" ")
        return dict(json.loads(state), RestartCount=int(restarts))

    def wait_healthy(self, services, timeout=420):
        ids = {s: self.container(s) for s in services}

        def probe():
            states = {s: self.state(s, ids[s]) for s in services}
            for s, st in states.items():
                if st.get("RestartCount", 0) >= 3:
                    raise StackBroken(f"{s} keeps exiting (restarted {st['RestartCount']} times, "
                                      f"last exit {st.get('ExitCode')})")
                if not st.get("Running"):
                    raise AssertionError(f"{s} is not running (exit {st.get('ExitCode')})")
            health = {s: (st.get("Health") or {}).get("Status") for s, st in states.items()}
            return health if all(h == "healthy" for h in health.values()) else None

        eventually(f"healthy {', '.join(services)}", probe, timeout, interval=2)

    def dump_logs(self):
        out = self.compose("ps", check=False, timeout=120)
        print(out.stdout, out.stderr, file=sys.stderr)
        for s in SERVICES:
            logs = self.compose("logs", "--no-color", "--tail=150", s, check=False, timeout=120)
            print(f"----- {s} (last 150 lines) -----\n{logs.stdout}{logs.stderr}", file=sys.stderr)

    # --- CouchDB through its published port -----------------------------
    def couch(self, method, path, body=None, timeout=30):
        url = f"http://127.0.0.1:{self.ports['COUCHDB']}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{self.password}".encode()).decode())
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def put_doc(self, doc_id, doc):
        return self.couch("PUT", f"/{DB}/{urllib.parse.quote(doc_id, safe='')}", doc)["rev"]

    def delete_doc(self, doc_id, rev):
        return self.couch("DELETE", f"/{DB}/{urllib.parse.quote(doc_id, safe='')}?rev={rev}")["rev"]

    # --- Kafka through its published port, read with kcat ---------------
    def kcat(self, *args):
        cmd = ["kcat", "-b", f"127.0.0.1:{self.ports['KAFKA']}", "-X", "broker.address.family=v4"] + list(args)
        out = subprocess.run(cmd, capture_output=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.decode(errors='replace')}")
        return out.stdout

    def partition_counts(self):
        meta = json.loads(self.kcat("-L", "-J"))
        return {t["topic"]: len(t["partitions"]) for t in meta["topics"]}

    def records(self):
        """Every record of `DB` in every topic, from the beginning to the end
        (all topics, so that a record routed to an unexpected one is seen)."""
        out = []
        for topic in sorted(t for t in self.partition_counts() if not t.startswith("__")):
            for line in self.kcat("-C", "-t", topic, "-o", "beginning", "-e", "-q", "-J").splitlines():
                r = json.loads(line)
                h = r.get("headers") or []
                r["headers"] = dict(zip(h[0::2], h[1::2]))
                out.append(r)
        return [r for r in out if r["headers"].get("database") == DB]

    def wait_records(self, n, timeout=180):
        def probe():
            got = self.records()
            if len(got) > n:
                raise AssertionError(f"{len(got)} records, more than the {n} expected: {got}")
            return got if len(got) == n else None

        return eventually(f"{n} records of {DB}", probe, timeout, interval=2)

    # --- the bridge and Prometheus through their published ports ----------
    def http_get(self, service, path):
        url = f"http://127.0.0.1:{self.ports[service]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def bridge_status(self):
        status, body = self.http_get("BRIDGE", "/status")
        return json.loads(body)["databases"][DB] if status == 200 else None

    def prometheus(self, path):
        status, body = self.http_get("PROMETHEUS", path)
        if status != 200:
            raise AssertionError(f"Prometheus {path}: {status} {body}")
        return json.loads(body)["data"]


def find(records, doc_id, rev):
    hits = [r for r in records if r["key"] == doc_id and r["headers"].get("rev") == rev]
    if len(hits) != 1:
        raise AssertionError(f"expected one record of {doc_id} rev {rev}, found {len(hits)}")
    return hits[0]


class ComposeStackTest(unittest.TestCase):
    def check_change_meta(self, r, partitions):
        """The fields every ChangeMeta has (as tests/integration/publish_test.cpp checks them)."""
        meta = json.loads(r["payload"])
        self.assertEqual(sorted(meta), sorted(FIELDS))
        self.assertEqual(meta["document_id"], r["key"])
        self.assertEqual(meta["data_source_type"], "couch")
        self.assertEqual(meta["data_source_name"], DB)
        self.assertEqual(meta["attempts"], 0)
        self.assertIsNone(meta["associated_document_id"])
        self.assertRegex(meta["publish_timestamp"], TIMESTAMP)
        self.assertEqual(meta["original_publication_datetime"], meta["publish_timestamp"])
        self.assertEqual(r["headers"].get("rev"), meta["document_rev"])
        self.assertTrue(r["headers"].get("seq"))
        self.assertEqual(r["partition"], java_partition(r["key"], partitions[r["topic"]]),
                         f"{r['key']} is not on the Java partitioner's partition")
        return meta

    def test_stack(self):
        stack = Stack()
        failed = True
        try:
            self.run_scenario(stack)
            failed = False
        finally:
            if failed:
                stack.dump_logs()
                stack.compose("down", "--volumes", "--timeout", "60", check=False)

    def run_scenario(self, stack):
        t0 = time.monotonic()

        def step(what):
            print(f"[{time.monotonic() - t0:6.1f} s] {what}", flush=True)

        step(f"project {stack.project}, host ports {stack.ports}")

        # CouchDB first, so that the bridge starts on documents already there.
        stack.compose("up", "-d", "--no-build", "couchdb")
        stack.wait_healthy(["couchdb"])
        step("couchdb healthy")
        stack.couch("PUT", f"/{DB}")
        rev_case = stack.put_doc("case-1", {"doc_type": "CommCareCase", "domain": "demo", "type": "patient"})
        rev_form = stack.put_doc("form/1", {"doc_type": "XFormInstance", "domain": "demo",
                                            "xmlns": "http://openrosa.org/formdesigner/abc"})
        rev_user = stack.put_doc("user ü 100%", {"doc_type": "CommCareUser", "domain": "demo"})
        rev_domain = stack.put_doc("dom-1", {"doc_type": "Domain", "name": "demo"})
        rev_del_type = stack.put_doc("case-2", {"doc_type": "CommCareCase-Deleted", "domain": "demo",
                                                "type": "household"})
        stack.put_doc("_design/views", {"views": {}})
        stack.put_doc("no-type", {"domain": "demo"})

        stack.compose("up", "-d", "--no-build", *SERVICES)
        stack.wait_healthy(SERVICES)
        step("every service healthy")

        first = stack.wait_records(5)
        partitions = stack.partition_counts()
        step("5 records in Kafka")
        r = find(first, "case-1", rev_case)
        self.assertEqual(r["topic"], "case")
        m = self.check_change_meta(r, partitions)
        self.assertEqual((m["document_type"], m["document_subtype"], m["domain"], m["is_deletion"]),
                         ("CommCareCase", "patient", "demo", False))
        self.assertEqual(r["headers"].get("database"), DB)
        r = find(first, "form/1", rev_form)
        self.assertEqual(r["topic"], "form")
        self.assertEqual(self.check_change_meta(r, partitions)["document_subtype"],
                         "http://openrosa.org/formdesigner/abc")
        r = find(first, "user ü 100%", rev_user)
        self.assertEqual(r["topic"], "commcare-user")
        self.assertIsNone(self.check_change_meta(r, partitions)["document_subtype"])
        r = find(first, "dom-1", rev_domain)
        self.assertEqual(r["topic"], "domain")
        self.assertEqual(self.check_change_meta(r, partitions)["domain"], "demo")
        r = find(first, "case-2", rev_del_type)
        self.assertEqual(r["topic"], "case")
        self.assertTrue(self.check_change_meta(r, partitions)["is_deletion"])

        # While the bridge follows: an update and a hard delete.
        rev_case2 = stack.put_doc("case-1", {"_rev": rev_case, "doc_type": "CommCareCase", "domain": "demo",
                                             "type": "patient", "name": "B"})
        rev_form_del = stack.delete_doc("form/1", rev_form)
        second = stack.wait_records(7)
        step("7 records in Kafka")
        r = find(second, "case-1", rev_case2)
        self.assertFalse(self.check_change_meta(r, partitions)["is_deletion"])
        # A tombstone has no doc_type: the hard-delete memory routes it to the
        # topic of the document it deletes, with that document's type and domain.
        r = find(second, "form/1", rev_form_del)
        self.assertEqual(r["topic"], "form")
        m = self.check_change_meta(r, partitions)
        self.assertEqual((m["document_type"], m["domain"], m["is_deletion"]), ("XFormInstance", "demo", True))
        self.assertFalse({"_design/views", "no-type"} & {r["key"] for r in second}, "skipped documents were published")

        status, body = stack.http_get("BRIDGE", "/readyz")
        self.assertEqual(status, 200, f"/readyz: {body}")

        # Prometheus, on the compose network, scrapes the bridge every 15 s.
        def target_up():
            targets = stack.prometheus("/api/v1/targets")["activeTargets"]
            mine = [t for t in targets if t["labels"].get("job") == "couch-kafka-bridge"]
            return mine and all(t["health"] == "up" for t in mine)

        eventually("Prometheus to show the bridge target up", target_up, 180, interval=3)

        def published_counter():
            result = stack.prometheus("/api/v1/query?" + urllib.parse.urlencode(
                {"query": f'sum(couch_bridge_records_published_total{{database="{DB}"}})'}))["result"]
            return result and float(result[0]["value"][1]) == 7

        eventually("couch_bridge_records_published_total = 7 in Prometheus", published_counter, 180, interval=3)
        step("Prometheus: target up, couch_bridge_records_published_total = 7")

        # Replace the bridge container: stop (SIGTERM), remove, up again.
        old = stack.container("bridge")
        stack.compose("stop", "bridge")
        st = stack.state("bridge")
        self.assertEqual(st["ExitCode"], 0, "the bridge did not exit 0 on SIGTERM")
        stack.compose("rm", "-f", "bridge")
        stack.compose("up", "-d", "--no-build", "bridge")
        self.assertNotEqual(stack.container("bridge"), old, "the bridge container was not replaced")
        stack.wait_healthy(SERVICES)
        logs = stack.compose("logs", "--no-color", "bridge").stdout
        self.assertIn(f"db {DB}: resuming from checkpoint", logs)
        step("bridge replaced, resumed from its checkpoint")

        rev_new = stack.put_doc("case-3", {"doc_type": "CommCareCase", "domain": "demo", "type": "patient"})
        rev_loc = stack.put_doc("loc-1", {"doc_type": "Location", "domain": "demo"})
        update_seq = stack.couch("GET", f"/{DB}")["update_seq"]

        # Once the new bridge has checkpointed the database's last change,
        # everything it will ever publish for these changes is in Kafka.
        def caught_up():
            s = stack.bridge_status()
            return s and s["in_flight"] == 0 and str(s["checkpoint_seq"]) == str(update_seq)

        eventually(f"the bridge to checkpoint seq {update_seq}", caught_up, 180, interval=2)
        third = stack.records()
        keys = [(r["key"], r["headers"].get("rev")) for r in third]
        self.assertEqual(len(keys), len(set(keys)), "a record was republished after the restart")
        self.assertEqual(len(third), 9, f"expected 7 + 2 records, got {len(third)}")
        self.assertEqual(find(third, "case-3", rev_new)["topic"], "case")
        self.assertEqual(find(third, "loc-1", rev_loc)["topic"], "location")
        step("2 new records, nothing republished")

        # `down`: the bridge gets SIGTERM and must shut down cleanly. Its log
        # and exit code are collected while it stops, before removal.
        bridge = stack.container("bridge")
        waited = {}

        def wait_exit():
            out = subprocess.run(["docker", "wait", bridge], capture_output=True, text=True, timeout=300)
            waited["code"] = out.stdout.strip()

        follower = subprocess.Popen(["docker", "logs", "-f", bridge], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        waiter = threading.Thread(target=wait_exit)
        waiter.start()
        down = stack.compose("down", "--volumes", "--timeout", "60", check=False)
        waiter.join(timeout=300)
        final_log = follower.communicate(timeout=120)[0]
        self.assertEqual(down.returncode, 0, f"down failed:\n{down.stdout}\n{down.stderr}")
        self.assertEqual(waited.get("code"), "0", f"the bridge's exit code at down: {waited}")
        self.assertRegex(final_log, r"signal 15: stopping", final_log[-3000:])
        self.assertIn("checkpoints flushed", final_log)
        self.assertIn("stopped (exit 0)", final_log)
        self.assertNotIn("shutdown timeout", final_log)
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}"],
                              capture_output=True, text=True, timeout=60).stdout.split()
        self.assertEqual(left, [], "containers left after down")
        step("down exited 0 after a clean SIGTERM shutdown")


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
