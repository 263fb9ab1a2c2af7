#!/usr/bin/python3
"""End to end over HTTP: runs the real couch-kafka-bridge (embedded Kafka)
against the test CouchDB-protocol server and checks its operations endpoints
the way Prometheus and an orchestrator see them: the whole /metrics output
read back by prometheus_client (an independent parser; every family typed,
the standard process metrics and build info present), /healthz, /readyz,
/status as JSON naming the database, 404 for unknown paths, and a clean exit
on SIGTERM.

Environment: CKB_BRIDGE_BINARY; CKB_TEST_COUCH_URL, else the couch_server
fixture's <CKB_TEST_STATE_DIR>/couch.env.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families

BRIDGE_BINARY = os.environ.get("CKB_BRIDGE_BINARY", "")
DEADLINE_S = 120  # safety net for a loaded machine, never a performance bound


def couch_url():
    url = os.environ.get("CKB_TEST_COUCH_URL")
    if url:
        return url.rstrip("/")
    state = os.environ.get("CKB_TEST_STATE_DIR", "")
    try:
        with open(os.path.join(state, "couch.env"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("CKB_TEST_COUCH_URL="):
                    return line.split("=", 1)[1].strip().rstrip("/")
    except OSError:
        pass
    raise RuntimeError("no test CouchDB: set CKB_TEST_COUCH_URL or run through ctest (couch_server fixture)")


def http(method, url, timeout=30):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8")


def free_port():
    # The bridge needs a port on its command line; a just-released ephemeral
    # port is the usual compromise (another process taking it in between
    # would fail the test loudly, not silently).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BridgeEndpointsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BRIDGE_BINARY or not os.access(BRIDGE_BINARY, os.X_OK):
            raise RuntimeError(f"CKB_BRIDGE_BINARY={BRIDGE_BINARY!r} is not an executable")
        cls.couch = couch_url()
        cls.db = "ckb-deploy-" + uuid.uuid4().hex[:12]
        status, _, body = http("PUT", f"{cls.couch}/{cls.db}")
        if status not in (201, 202):
            raise RuntimeError(f"cannot create database {cls.db}: {status} {body}")
        cls.tmp = tempfile.mkdtemp(prefix="ckb-deploy-")
        cls.port = free_port()
        cls.base = f"http://127.0.0.1:{cls.port}"
        cls.log = open(os.path.join(cls.tmp, "bridge.log"), "w+", encoding="utf-8")
        cls.proc = subprocess.Popen(
            [BRIDGE_BINARY, f"--couch-url={cls.couch}", f"--db={cls.db}", "--kafka-brokers=embedded",
             f"--checkpoint-dir={cls.tmp}/checkpoints", f"--http-listen=127.0.0.1:{cls.port}"],
            stdout=cls.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            if cls.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {cls.proc.returncode}:\n{cls.bridge_log()}")
            try:
                if http("GET", cls.base + "/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge never answered /healthz:\n{cls.bridge_log()}")
            time.sleep(0.2)

    @classmethod
    def bridge_log(cls):
        cls.log.flush()
        cls.log.seek(0)
        return cls.log.read()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.proc.poll() is None:
                cls.proc.kill()
                cls.proc.wait()
        finally:
            cls.log.close()
            http("DELETE", f"{cls.couch}/{cls.db}")
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_1_metrics_whole_output_parses_with_types_and_standard_families(self):
        status, headers, body = http("GET", self.base + "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        families = {f.name: f for f in text_string_to_metric_families(body)}
        for name, fam in families.items():
            with self.subTest(family=name):
                self.assertNotEqual(fam.type, "unknown", f"{name} has no TYPE line")
                self.assertTrue(fam.documentation, f"{name} has no HELP text")
                self.assertTrue(name.startswith(("couch_bridge_", "process_")), f"{name} lacks the namespace")
        # Every sample line of the text came back as a sample (nothing dropped).
        sample_lines = [l for l in body.splitlines() if l and not l.startswith("#")]
        self.assertEqual(len(sample_lines), sum(len(f.samples) for f in families.values()))
        for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                     "process_open_fds", "process_max_fds", "process_start_time_seconds"):
            self.assertIn(name, families)
        self.assertGreater(families["process_resident_memory_bytes"].samples[0].value, 0)
        start = families["process_start_time_seconds"].samples[0].value
        self.assertLess(abs(time.time() - start), 3600)
        info = families["couch_bridge_build_info"].samples[0]
        self.assertEqual(info.value, 1)
        self.assertEqual(set(info.labels), {"version", "librdkafka", "rocksdb"})
        # Counters follow the naming convention.
        for name, fam in families.items():
            if fam.type == "counter":
                self.assertTrue(all(s.name.endswith(("_total", "_created")) for s in fam.samples), name)

    def test_2_status_readyz_and_unknown_paths(self):
        status, headers, body = http("GET", self.base + "/status")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("application/json"))
        doc = json.loads(body)
        self.assertIn(self.db, json.dumps(doc), "/status does not name the followed database")
        status, _, _ = http("GET", self.base + "/readyz")
        self.assertIn(status, (200, 503))
        self.assertEqual(http("GET", self.base + "/no-such-endpoint")[0], 404)
        self.assertEqual(http("POST", self.base + "/metrics")[0], 405)

    def test_3_sigterm_exits_cleanly(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.fail("bridge did not exit after SIGTERM:\n" + self.bridge_log())
        self.assertEqual(code, 0, self.bridge_log())


if __name__ == "__main__":
    import sys
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
