#!/usr/bin/python3
"""A real Prometheus scrapes the real bridge.

Runs couch-kafka-bridge against the test CouchDB-protocol server and the real
Kafka broker, starts Debian's `prometheus` on a free port with a 1 s scrape
interval pointing at the bridge, waits until /api/v1/targets shows the target
up, then writes documents in two batches and checks through /api/v1/query:
- couch_bridge_records_published_total equals what the test published, after
  each batch;
- the raw samples step from the first batch's count to the total, so the
  increase inside a window spanning the second batch is exactly its size;
- rate() over that window times the window lies between that increase and
  Prometheus' largest extrapolation of it (window / sampled interval), both
  taken from the samples' own timestamps (no wall-clock bound).

Environment: CKB_BRIDGE_BINARY; CKB_TEST_COUCH_URL / CKB_TEST_KAFKA_BROKERS,
else the fixtures' files in CKB_TEST_STATE_DIR; PROMETHEUS (default
/usr/bin/prometheus).
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
import urllib.parse
import urllib.request
import uuid

BRIDGE_BINARY = os.environ.get("CKB_BRIDGE_BINARY", "")
PROMETHEUS = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")
DEADLINE_S = 180  # safety net for a loaded machine, never a performance bound
FIRST_BATCH = 7
SECOND_BATCH = 12


def fixture_value(name, env_file):
    value = os.environ.get(name)
    if value:
        return value.rstrip("/")
    state = os.environ.get("CKB_TEST_STATE_DIR", "")
    try:
        with open(os.path.join(state, env_file), encoding="utf-8") as f:
            for line in f:
                if line.startswith(name + "="):
                    return line.split("=", 1)[1].strip().rstrip("/")
    except OSError:
        pass
    raise RuntimeError(f"set {name} or run through ctest (fixture file {env_file})")


def http(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, method=method, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, predicate, on_timeout=lambda: ""):
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{on_timeout()}")
        time.sleep(0.3)


class PrometheusScrapesTheBridge(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BRIDGE_BINARY or not os.access(BRIDGE_BINARY, os.X_OK):
            raise RuntimeError(f"CKB_BRIDGE_BINARY={BRIDGE_BINARY!r} is not an executable")
        if not os.access(PROMETHEUS, os.X_OK):
            raise RuntimeError(f"{PROMETHEUS} is missing: run scripts/install-deps.sh (Debian package prometheus)")
        cls.procs = []
        cls.logs = []
        cls.tmp = tempfile.mkdtemp(prefix="ckb-prometheus-")
        cls.couch = fixture_value("CKB_TEST_COUCH_URL", "couch.env")
        brokers = fixture_value("CKB_TEST_KAFKA_BROKERS", "kafka.env")
        cls.db = "ckb-prom-" + uuid.uuid4().hex[:12]
        status, body = http("PUT", f"{cls.couch}/{cls.db}")
        if status not in (201, 202):
            raise RuntimeError(f"cannot create database {cls.db}: {status} {body}")

        bridge_port = free_port()
        cls.bridge_log = os.path.join(cls.tmp, "bridge.log")
        cls.bridge = cls.spawn([BRIDGE_BINARY, f"--couch-url={cls.couch}", f"--db={cls.db}",
                                f"--kafka-brokers={brokers}", "--create-topics",
                                f"--checkpoint-dir={cls.tmp}/checkpoints",
                                f"--http-listen=127.0.0.1:{bridge_port}"], cls.bridge_log)

        cls.prom_port = free_port()
        cls.prom = f"http://127.0.0.1:{cls.prom_port}"
        config = os.path.join(cls.tmp, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: couch-kafka-bridge\n    scrape_interval: 1s\n"
                    "    scrape_timeout: 1s\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{bridge_port}']\n")
        cls.prom_log = os.path.join(cls.tmp, "prometheus.log")
        cls.spawn([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={cls.tmp}/tsdb",
                   f"--web.listen-address=127.0.0.1:{cls.prom_port}", "--log.level=warn"], cls.prom_log)

    @classmethod
    def spawn(cls, argv, log_path):
        log = open(log_path, "w+", encoding="utf-8")
        cls.logs.append(log)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        cls.procs.append(proc)
        return proc

    @classmethod
    def tearDownClass(cls):
        for proc in cls.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in cls.logs:
            log.close()
        http("DELETE", f"{cls.couch}/{cls.db}")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def logs_text(self):
        out = []
        for path in (self.bridge_log, self.prom_log):
            with open(path, encoding="utf-8", errors="replace") as f:
                out.append(f"--- {os.path.basename(path)} (last lines)\n" + "".join(f.readlines()[-40:]))
        return "\n".join(out)

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        status, body = http("GET", f"{self.prom}/api/v1/query?" + urllib.parse.urlencode(params))
        self.assertEqual(status, 200, body)
        doc = json.loads(body)
        self.assertEqual(doc["status"], "success", body)
        return doc["data"]

    def published(self):
        """The bridge's published-records total for the test database, as Prometheus has it now."""
        try:
            data = self.query(f'sum(couch_bridge_records_published_total{{database="{self.db}"}})')
        except (OSError, AssertionError):
            return None
        if not data["result"]:
            return None
        return float(data["result"][0]["value"][1])

    def put_docs(self, prefix, n):
        for i in range(n):
            status, body = http("PUT", f"{self.couch}/{self.db}/{prefix}-{i}",
                                {"doc_type": "CommCareCase", "domain": "prom", "type": "patient"})
            self.assertEqual(status, 201, body)

    def test_scrape_and_query(self):
        def target_up():
            try:
                status, body = http("GET", f"{self.prom}/api/v1/targets", timeout=5)
            except OSError:
                return None
            if status != 200:
                return None
            active = json.loads(body)["data"]["activeTargets"]
            ours = [t for t in active if t["labels"].get("job") == "couch-kafka-bridge"]
            return ours[0] if ours and ours[0]["health"] == "up" else None

        target = wait_until("the bridge target to be up in /api/v1/targets", target_up, self.logs_text)
        self.assertTrue(target["scrapeUrl"].endswith("/metrics"), target)
        self.assertEqual(target["lastError"], "")

        self.put_docs("first", FIRST_BATCH)
        wait_until(f"published total {FIRST_BATCH}", lambda: self.published() == FIRST_BATCH, self.logs_text)
        self.put_docs("second", SECOND_BATCH)
        total = FIRST_BATCH + SECOND_BATCH
        wait_until(f"published total {total}", lambda: self.published() == total, self.logs_text)

        # The one series (database, topic=case) and its raw samples.
        series = f'couch_bridge_records_published_total{{database="{self.db}"}}'
        data = self.query(series)
        self.assertEqual(len(data["result"]), 1, data)
        self.assertEqual(data["result"][0]["metric"]["topic"], "case")
        samples = self.query(series + "[10m]")["result"][0]["values"]
        points = [(float(t), float(v)) for t, v in samples]
        self.assertEqual([v for _, v in points], sorted(v for _, v in points), "a counter went down")
        last_first = max(t for t, v in points if v == FIRST_BATCH)
        first_total = min(t for t, v in points if v == total)
        self.assertLess(last_first, first_total)

        # A window from just before the last first-batch sample to the first
        # sample at the total: its raw increase is the second batch exactly.
        at = first_total
        window_ms = int((at - last_first) * 1000) + 500
        in_window = [(float(t), float(v)) for t, v in
                     self.query(f"{series}[{window_ms}ms]", at=at)["result"][0]["values"]]
        self.assertEqual(in_window[0][1], FIRST_BATCH, in_window)
        self.assertEqual(in_window[-1][1], total, in_window)
        raw_increase = in_window[-1][1] - in_window[0][1]
        self.assertEqual(raw_increase, SECOND_BATCH)

        rate = self.query(f"rate({series}[{window_ms}ms])", at=at)["result"]
        self.assertEqual(len(rate), 1, rate)
        extrapolated = float(rate[0]["value"][1]) * window_ms / 1000.0
        sampled = in_window[-1][0] - in_window[0][0]
        # Prometheus extrapolates the raw increase towards the window's edges,
        # never beyond the whole window.
        self.assertGreaterEqual(extrapolated, raw_increase - 1e-6)
        self.assertLessEqual(extrapolated, raw_increase * (window_ms / 1000.0) / sampled + 1e-6)


if __name__ == "__main__":
    import sys
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
