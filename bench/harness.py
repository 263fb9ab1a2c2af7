#!/usr/bin/env python3
"""Scenario runner of bench/run (issue #7). Standard library only.

Runs, side by side on one machine and one Kafka broker:
  source   bench-source read by plain HTTP clients (curl): the ceiling of the
           synthetic source, to show it is not the bottleneck;
  micro    Google Benchmark microbenchmarks of the per-row hot path;
  bridge   the bridge following K databases x N changes from 0 until every
           record is acknowledged: changes/s, bridge CPU us/change, peak RSS,
           durable checkpoint writes/s;
  baseline the pillowtop-style Python publisher on the same source and broker;
  idle     the bridge following many databases that only send heartbeats:
           resident memory and CPU share of one core;
  ckpt     durable checkpoint writes/s at several database counts, during
           catch-up (high throughput) and while following live changes (low).
  pace     bench-source --couchdb-like (a chunk per row, opaque ~130-character
           seqs, rows paced per database like a real CouchDB) at full speed,
           10,000/s x 1 (faster than a real CouchDB served here), 6,000/s x 1,
           500/s x 10 and 10/s x 100 databases: a plain read
           (curl) of the paced feed, then the bridge catching up on it; CPU per
           change of both, and catch-up / plain read.
  fleet    (not run by default; bench/fleet.py) discovery of 10,000 databases
           by pattern under --max-open-feeds: time until every database has a
           checkpoint, memory, connections to the source, and the latency of
           a write to an idle database.
Figures come from /proc (CPU: utime+stime; memory: VmRSS/VmHWM) and from the
bridge's /metrics; timing windows start at the first row read, so process
startup is not counted. Nothing here passes or fails on a timing: a scenario
fails only when the bridge does not deliver everything it was given.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import fleet

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Metric families read from the bridge's /metrics (summed over labels).
ROWS_READ = "couch_bridge_couch_rows_read_total"
PUBLISHED = "couch_bridge_records_published_total"
SKIPPED = "couch_bridge_records_skipped_total"
PRODUCED = "couch_bridge_kafka_produced_total"
CKPT_WRITES = "couch_bridge_checkpoint_writes_total"
ROW_ACK = "couch_bridge_row_ack_latency_seconds"

SIZES = {
    "full": dict(source_dbs=4, source_changes=250_000, baseline_changes=5_000, idle_dbs=1000, idle_changes=5,
                 idle_settle_s=10, idle_window_s=30, ckpt_dbs=[1, 10, 100], ckpt_total=200_000,
                 ckpt_live_interval_ms=100, ckpt_live_window_s=15, micro_min_time=0.5,
                 # (label, row rate per database or 0 for unpaced, databases, changes per database)
                 paces=[("full speed", 0, 1, 200_000), ("10,000/s x 1", 10000, 1, 100_000),
                        ("6,000/s x 1", 6000, 1, 60_000),
                        ("500/s x 10", 500, 10, 5_000), ("200/s x 1", 200, 1, 4_000),
                        ("10/s x 100", 10, 100, 100)],
                 # (label, payload, document bytes, --max-in-flight-bytes, changes)
                 memory=[("stub, 1 MiB docs, 8 MiB window", "stub", 1 << 20, 8 << 20, 300),
                         ("stub, 1 MiB docs, 64 MiB window", "stub", 1 << 20, 64 << 20, 300),
                         ("stub+doc, 0.9 MiB docs, 8 MiB window", "stub+doc", 900_000, 8 << 20, 300),
                         ("stub+doc, 0.9 MiB docs, 64 MiB window", "stub+doc", 900_000, 64 << 20, 300)],
                 fleet_dbs=10_000, fleet_changes=5, fleet_max_open_feeds=100, fleet_idle_close_ms=300_000,
                 fleet_latency_writes=100, fleet_idle_window_s=10),
    "smoke": dict(source_dbs=2, source_changes=3_000, baseline_changes=300, idle_dbs=20, idle_changes=5,
                  idle_settle_s=1, idle_window_s=2, ckpt_dbs=[1, 5], ckpt_total=4_000,
                  ckpt_live_interval_ms=100, ckpt_live_window_s=2, micro_min_time=0.01,
                  paces=[("full speed", 0, 1, 5_000), ("10,000/s x 1", 10000, 1, 5_000),
                         ("6,000/s x 1", 6000, 1, 3_000),
                         ("500/s x 10", 500, 10, 250), ("200/s x 1", 200, 1, 200),
                         ("10/s x 100", 10, 100, 5)],
                  memory=[("stub, 1 MiB docs, 8 MiB window", "stub", 1 << 20, 8 << 20, 20),
                          ("stub+doc, 0.9 MiB docs, 8 MiB window", "stub+doc", 900_000, 8 << 20, 20)],
                  fleet_dbs=60, fleet_changes=3, fleet_max_open_feeds=10, fleet_idle_close_ms=1000,
                  fleet_latency_writes=5, fleet_idle_window_s=2),
}

GOALS = {
    "changes_per_s": 100_000,
    "cpu_us_per_change": 10.0,
    "ratio": 50.0,
    "idle_rss_mib": 256.0,
    "idle_cpu_pct": 2.0,
}


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a process (seconds), from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds(pid):
    """cutime + cstime: CPU of waited-for children (curl readers)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def memory_kib(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def context_switches(pid):
    """Voluntary + involuntary context switches of every live thread of a
    process, from /proc/<pid>/task/*/status (threads gone are not counted)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def scrape(port):
    """Sums every sample of each metric family (labels ignored)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        sums[m.group(1)] = sums.get(m.group(1), 0.0) + value
    return sums


def scrape_histogram(port, name):
    """The cumulative bucket counts of histogram `name` (summed over its
    other labels), as a sorted list of (upper bound, count)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    buckets = {}
    pattern = re.compile(r'^%s_bucket\{(?:.*,)?le="([^"]+)"(?:,.*)?\}\s+(\S+)' % re.escape(name))
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    return sorted(buckets.items())


def histogram_quantile(q, before, after):
    """The q-quantile of the observations made between two scrapes of one
    histogram, interpolated linearly inside its bucket (as Prometheus'
    histogram_quantile does); None when nothing was observed."""
    old = dict(before)
    delta = [(le, c - old.get(le, 0.0)) for le, c in after]
    if not delta or delta[-1][1] <= 0:
        return None
    rank = q * delta[-1][1]
    lower, below = 0.0, 0.0
    for le, c in delta:
        if c >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (c - below) if c > below else 1.0)
        lower, below = le, c
    return lower


def delivered(m):
    """Rows the bridge is done with: acknowledged by Kafka, or skipped by rule."""
    return m.get(PUBLISHED, m.get(PRODUCED, 0.0)) + m.get(SKIPPED, 0.0)


class Scenario_failed(Exception):
    pass


class Runner:
    def __init__(self, args):
        self.args = args
        self.size = dict(SIZES[args.mode])
        self.work = tempfile.mkdtemp(prefix="ckb-bench-")
        self.procs = []
        self.results = {}

    # -- processes ---------------------------------------------------------

    def start_source(self, name, databases, changes, extra=()):
        port_file = os.path.join(self.work, name + ".port")
        logf = open(os.path.join(self.work, name + ".log"), "w")
        cmd = [self.args.source_binary, "--databases", str(databases), "--changes", str(changes),
               "--port-file", port_file, "--seed", "42"] + list(extra)
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Scenario_failed("bench-source did not start; see %s.log" % name)
            time.sleep(0.02)
        with open(port_file) as f:
            port = int(f.read())
        return proc, "http://127.0.0.1:%d" % port

    def start_bridge(self, name, couch_url, databases, variant=None):
        http_port = free_port()
        ckpt = os.path.join(self.work, name + "-checkpoints")
        logf = open(os.path.join(self.work, name + ".log"), "w")
        binary, extra = (variant["binary"], variant["args"]) if variant else (self.args.bridge_binary, [])
        cmd = [binary, "--couch-url", couch_url, "--kafka-brokers", self.args.brokers,
               "--checkpoint-dir", ckpt, "--initial-since", "0", "--http-listen", "127.0.0.1:%d" % http_port,
               "--log-level", "warn"]
        for db in databases:
            cmd += ["--db", db]
        # Extra bridge flags for A/B runs (e.g. CKB_BENCH_BRIDGE_ARGS="--io-threads 1").
        cmd += os.environ.get("CKB_BENCH_BRIDGE_ARGS", "").split() + extra
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise Scenario_failed("the bridge exited with %s at startup; see %s/%s.log"
                                      % (proc.returncode, self.work, name))
            try:
                scrape(http_port)
                return proc, http_port
            except OSError:
                if time.monotonic() > deadline:
                    raise Scenario_failed("the bridge's /metrics did not answer within 120 s")
                time.sleep(0.05)

    def stop(self, proc, timeout=120):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def cleanup(self):
        for p in list(self.procs):
            self.stop(p, timeout=30)
        if not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)

    def wait_delivered(self, proc, port, total, stall_s=120):
        """Polls /metrics until `total` rows are delivered. Returns the
        window (first poll that saw a row read .. the poll that saw them all)
        as dicts of time, CPU, metrics."""
        first = None
        last_progress = time.monotonic()
        last_done = -1.0
        while True:
            if proc.poll() is not None:
                raise Scenario_failed("the bridge exited with %s during the run" % proc.returncode)
            now = time.monotonic()
            m = scrape(port)
            cpu = cpu_seconds(proc.pid)
            done = delivered(m)
            if first is None and m.get(ROWS_READ, 0.0) > 0:
                first = dict(t=now, cpu=cpu, m=m)
            if done >= total:
                return first or dict(t=now, cpu=cpu, m=m), dict(t=now, cpu=cpu, m=m)
            if done > last_done:
                last_done, last_progress = done, now
            elif now - last_progress > stall_s:
                raise Scenario_failed("no progress for %d s: %d of %d delivered, %d rows read"
                                      % (stall_s, done, total, m.get(ROWS_READ, 0)))
            time.sleep(0.1)

    # -- scenarios ---------------------------------------------------------

    def scenario_source_and_bridge(self):
        s = self.size
        dbs, n = s["source_dbs"], s["source_changes"]
        total = dbs * n
        source, url = self.start_source("source", dbs, n)
        names = ["bench-%04d" % i for i in range(dbs)]

        # The source's ceiling: one curl per database, all at once.
        log("source ceiling: %d databases x %d changes read by curl" % (dbs, n))
        cpu0 = cpu_seconds(source.pid)
        t0 = time.monotonic()
        readers = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null",
                                     "%s/%s/_changes?include_docs=true&feed=normal" % (url, db)]) for db in names]
        for r in readers:
            if r.wait() != 0:
                raise Scenario_failed("curl could not read the source")
        wall = time.monotonic() - t0
        src_cpu = cpu_seconds(source.pid) - cpu0
        self.results["source"] = dict(changes=total, changes_per_s=total / wall,
                                      source_cpu_us_per_change=src_cpu * 1e6 / total)

        log("bridge throughput: %d databases x %d changes" % (dbs, n))
        bridge, port = self.start_bridge("bridge-throughput", url, names)
        src_cpu0 = cpu_seconds(source.pid)
        first, last = self.wait_delivered(bridge, port, total)
        src_cpu = cpu_seconds(source.pid) - src_cpu0
        changes = delivered(last["m"]) - delivered(first["m"])
        secs = last["t"] - first["t"]
        mem = memory_kib(bridge.pid)
        rc = self.stop(bridge)
        self.results["bridge"] = dict(
            changes=total, window_changes=changes, seconds=secs,
            changes_per_s=changes / secs if secs > 0 else None,
            cpu_us_per_change=(last["cpu"] - first["cpu"]) * 1e6 / changes if changes else None,
            peak_rss_mib=mem.get("VmHWM", 0) / 1024,
            ckpt_writes_per_s=(last["m"].get(CKPT_WRITES, 0) - first["m"].get(CKPT_WRITES, 0)) / secs
            if secs > 0 else None,
            source_cpu_us_per_change=src_cpu * 1e6 / total,
            exit_code=rc)

        nb = s["baseline_changes"]
        log("baseline: pillowtop-style Python publisher, %d changes" % nb)
        out = subprocess.run(
            [self.args.python, self.args.baseline, "--couch-url", url, "--db", names[0], "--kafka-brokers",
             self.args.brokers, "--checkpoint-file", os.path.join(self.work, "baseline.ckpt"), "--stop-after",
             str(nb), "--topic-prefix", "baseline-"],
            check=True, stdout=subprocess.PIPE, text=True, timeout=3600)
        b = json.loads(out.stdout.strip().splitlines()[-1])
        b["peak_rss_mib"] = b.pop("peak_rss_kib", 0) / 1024
        b["ckpt_writes_per_s"] = b["checkpoints"] / b["seconds"] if b["seconds"] else None
        self.results["baseline"] = b
        self.stop(source)

    def scenario_idle(self):
        s = self.size
        dbs, n = s["idle_dbs"], s["idle_changes"]
        log("idle: %d databases, %d changes each, then heartbeats only" % (dbs, n))
        source, url = self.start_source("source-idle", dbs, n)
        bridge, port = self.start_bridge("bridge-idle", url, ["bench-%04d" % i for i in range(dbs)])
        self.wait_delivered(bridge, port, dbs * n)
        time.sleep(s["idle_settle_s"])
        cpu0, t0 = cpu_seconds(bridge.pid), time.monotonic()
        m0 = scrape(port)
        time.sleep(s["idle_window_s"])
        cpu1, t1 = cpu_seconds(bridge.pid), time.monotonic()
        m1 = scrape(port)
        mem = memory_kib(bridge.pid)
        stats = json.load(urllib.request.urlopen(url + "/_bench/stats", timeout=10))
        rc = self.stop(bridge)
        self.stop(source)
        self.results["idle"] = dict(
            databases=dbs, window_s=t1 - t0, cpu_pct=(cpu1 - cpu0) / (t1 - t0) * 100,
            rss_mib=mem.get("VmRSS", 0) / 1024, peak_rss_mib=mem.get("VmHWM", 0) / 1024,
            ckpt_writes_per_s=(m1.get(CKPT_WRITES, 0) - m0.get(CKPT_WRITES, 0)) / (t1 - t0),
            open_feeds=stats.get("idle_continuous_feeds"), exit_code=rc)

    def scenario_checkpoints(self):
        s = self.size
        rows = []
        for dbs in s["ckpt_dbs"]:
            n = max(1, s["ckpt_total"] // dbs)
            interval = s["ckpt_live_interval_ms"]
            log("checkpoints: %d databases x %d changes, then one live change per %d ms per database"
                % (dbs, n, interval))
            source, url = self.start_source("source-ckpt-%d" % dbs, dbs, n,
                                            ["--live-interval-ms", str(interval)])
            bridge, port = self.start_bridge("bridge-ckpt-%d" % dbs, url, ["bench-%04d" % i for i in range(dbs)])
            first, last = self.wait_delivered(bridge, port, dbs * n)
            secs = max(last["t"] - first["t"], 1e-9)
            high = dict(databases=dbs, phase="catch-up",
                        changes_per_s=(delivered(last["m"]) - delivered(first["m"])) / secs,
                        ckpt_writes_per_s=(last["m"].get(CKPT_WRITES, 0) - first["m"].get(CKPT_WRITES, 0)) / secs)
            m0, t0 = scrape(port), time.monotonic()
            time.sleep(s["ckpt_live_window_s"])
            m1, t1 = scrape(port), time.monotonic()
            low = dict(databases=dbs, phase="live",
                       changes_per_s=(delivered(m1) - delivered(m0)) / (t1 - t0),
                       ckpt_writes_per_s=(m1.get(CKPT_WRITES, 0) - m0.get(CKPT_WRITES, 0)) / (t1 - t0))
            self.stop(bridge)
            self.stop(source)
            rows += [high, low]
        self.results["checkpoints"] = rows

    def plain_read(self, url, names):
        """Reads every database's whole _changes feed with one curl each, all
        at once, discarding the bytes. Returns (seconds, curl CPU seconds)."""
        cpu0 = children_cpu_seconds(os.getpid())
        t0 = time.monotonic()
        readers = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null",
                                     "%s/%s/_changes?include_docs=true&feed=normal" % (url, db)]) for db in names]
        for r in readers:
            if r.wait() != 0:
                raise Scenario_failed("curl could not read the source")
        return time.monotonic() - t0, children_cpu_seconds(os.getpid()) - cpu0

    @staticmethod
    def rows_served(url):
        with urllib.request.urlopen(url + "/_bench/stats", timeout=10) as r:
            return json.load(r)["rows_served"]

    def variants(self):
        """The bridges to compare (--variant NAME=BINARY [ARGS]); without
        any, the one bridge binary under the name ""."""
        out = []
        for v in self.args.variant:
            name, _, rest = v.partition("=")
            words = rest.split()
            if not name or not words:
                raise ValueError("--variant wants NAME=BINARY [ARGS], not %r" % v)
            out.append(dict(name=name, binary=words[0], args=words[1:]))
        return out or [dict(name="", binary=self.args.bridge_binary, args=[])]

    def scenario_pace(self):
        rows = []
        variants = self.variants()
        for index, (label, rate, dbs, n) in enumerate(self.size["paces"]):
            total = dbs * n
            log("pace %s: %d databases x %d changes, CouchDB framing" % (label, dbs, n))
            source, url = self.start_source("source-pace-%d-%d" % (rate, dbs), dbs, n,
                                            ["--couchdb-like", "--row-rate", str(rate)])
            names = ["bench-%04d" % i for i in range(dbs)]
            read_s, read_cpu = self.plain_read(url, names)
            read_rate = total / read_s if read_s > 0 else None
            # Variants take turns on the same source (each reads every feed
            # from 0), in alternating order from one pace to the next, so
            # that a drift of the machine's speed does not favour one.
            order = variants if index % 2 == 0 else list(reversed(variants))
            for variant in order:
                tag = "-" + variant["name"] if variant["name"] else ""
                row = self.pace_bridge(rate, dbs, total, source, url, names, variant, tag)
                row.update(pace=label, rate=rate, databases=dbs, changes=total, variant=variant["name"],
                           read_changes_per_s=read_rate, read_cpu_us_per_change=read_cpu * 1e6 / total)
                row["ratio"] = row["bridge_changes_per_s"] / read_rate \
                    if row["bridge_changes_per_s"] and read_rate else None
                rows.append(row)
            self.stop(source)
        # Keep the table grouped by pace, in the variants' given order.
        names_order = [v["name"] for v in variants]
        rows.sort(key=lambda r: ([p[0] for p in self.size["paces"]].index(r["pace"]),
                                 names_order.index(r["variant"])))
        self.results["pace"] = rows

    def pace_bridge(self, rate, dbs, total, source, url, names, variant, tag):
        """One bridge catching up on the paced source from 0: its figures."""
        served0 = self.rows_served(url)
        source_pid = source.pid
        bridge, port = self.start_bridge("bridge-pace-%d-%d%s" % (rate, dbs, tag), url, names, variant)
        perf = None
        # 6,000/s is reported; 500/s (the many-databases pace) is recorded
        # too, for perf report on the kept work directory.
        if self.args.perf and rate in (6000, 500):
            perf = self.start_perf(bridge.pid, "perf-pace-%d%s" % (rate, tag))
        src_cpu0 = cpu_seconds(source_pid)
        # The window starts when the source has served the bridge a row,
        # not at the bridge's first rows-read count: at 10/s x 100 that
        # counter first moved near the end of the feeds (a window of
        # 0.2 s for 10 s of work in the first run).
        deadline = time.monotonic() + 120
        while self.rows_served(url) <= served0:
            if bridge.poll() is not None or time.monotonic() > deadline:
                raise Scenario_failed("the bridge read nothing from the paced source")
            time.sleep(0.02)
        start = dict(t=time.monotonic(), cpu=cpu_seconds(bridge.pid), m=scrape(port))
        switches0 = context_switches(bridge.pid)
        # Latency is taken over the rows after the first tenth: the first
        # records of a fresh producer wait for its broker connection, its
        # producer id and the topics' metadata (up to a second), which says
        # nothing about the steady state.
        lat0 = []
        while True:
            if bridge.poll() is not None:
                raise Scenario_failed("the bridge exited with %s during the run" % bridge.returncode)
            if delivered(scrape(port)) >= total / 10:
                lat0 = scrape_histogram(port, ROW_ACK)
                break
            time.sleep(0.02)
        _, last = self.wait_delivered(bridge, port, total)
        switches = context_switches(bridge.pid) - switches0
        lat1 = scrape_histogram(port, ROW_ACK)
        first = start
        src_cpu = cpu_seconds(source_pid) - src_cpu0
        if perf and rate != 6000:
            self.finish_perf(perf)
        elif perf:
            self.results["perf_6000"] = self.finish_perf(perf)
            self.results["perf_6000"]["variant"] = variant["name"]
        changes = delivered(last["m"]) - delivered(first["m"])
        secs = last["t"] - first["t"]
        rc = self.stop(bridge)
        bridge_rate = changes / secs if secs > 0 else None
        p50, p99 = histogram_quantile(0.5, lat0, lat1), histogram_quantile(0.99, lat0, lat1)
        return dict(
            bridge_changes_per_s=bridge_rate,
            bridge_cpu_us_per_change=(last["cpu"] - first["cpu"]) * 1e6 / changes if changes else None,
            switches_per_change=switches / changes if changes else None,
            latency_p50_ms=p50 * 1e3 if p50 is not None else None,
            latency_p99_ms=p99 * 1e3 if p99 is not None else None,
            source_cpu_us_per_change=src_cpu * 1e6 / changes if changes else None, exit_code=rc)

    def start_perf(self, pid, name):
        """`perf record -g` on the bridge until finish_perf(); None when perf
        is missing or not permitted here."""
        if not shutil.which("perf"):
            log("perf not found (scripts/install-deps.sh --bench installs it); no profile")
            return None
        data = os.path.join(self.work, name + ".data")
        logf = open(os.path.join(self.work, name + ".log"), "w")
        proc = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", data,
                                 "-p", str(pid)], stdout=logf, stderr=subprocess.STDOUT)
        time.sleep(0.3)
        if proc.poll() is not None:
            log("perf record could not start; see %s/%s.log" % (self.work, name))
            return None
        return proc, data

    def finish_perf(self, perf):
        proc, data = perf
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        report = ["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none"]
        by_symbol = subprocess.run(report + ["--sort", "dso,symbol", "--percent-limit", "1.5"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=300).stdout
        by_dso = subprocess.run(report + ["--sort", "dso", "--percent-limit", "0.5"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=300).stdout
        inclusive = subprocess.run(["perf", "report", "-i", data, "--children", "--stdio", "-g", "none",
                                    "--sort", "symbol", "--percent-limit", "4"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=300).stdout

        def keep(text):
            # perf pads with empty srcline columns ("-  -"); drop them.
            return [re.sub(r"(\s+-)+\s*$", "", l.rstrip()) for l in text.splitlines()
                    if l.strip() and not l.startswith("#")]
        return dict(symbols=keep(by_symbol)[:25], dsos=keep(by_dso)[:12], inclusive=keep(inclusive)[:30])

    def scenario_memory(self):
        """Peak RSS while catching up one database of large documents, per
        payload mode and in-flight byte window (issue #16's memory bound)."""
        rows = []
        for label, payload, doc_bytes, window, n in self.size["memory"]:
            log("memory %s: %d changes" % (label, n))
            source, url = self.start_source("source-mem-%s-%d" % (payload.replace("+", ""), window), 1, n,
                                            ["--pool", "8", "--doc-min-bytes", str(doc_bytes),
                                             "--doc-max-bytes", str(doc_bytes), "--couchdb-like"])
            variant = dict(name="", binary=self.args.bridge_binary,
                           args=["--payload", payload, "--max-in-flight-bytes", str(window),
                                 "--kafka-property", "message.max.bytes=1000000"])
            bridge, port = self.start_bridge("bridge-mem-%s-%d" % (payload.replace("+", ""), window), url,
                                             ["bench-0000"], variant)
            base = memory_kib(bridge.pid)
            first, last = self.wait_delivered(bridge, port, n)
            mem = memory_kib(bridge.pid)
            rc = self.stop(bridge)
            self.stop(source)
            rows.append(dict(label=label, payload=payload, doc_bytes=doc_bytes, window_mib=window / (1 << 20),
                             changes=n, start_rss_mib=base.get("VmRSS", 0) / 1024,
                             peak_rss_mib=mem.get("VmHWM", 0) / 1024,
                             changes_per_s=n / (last["t"] - first["t"]) if last["t"] > first["t"] else None,
                             exit_code=rc))
        self.results["memory"] = rows

    def scenario_fleet(self):
        fleet.run(self, sys.modules[__name__])

    def scenario_micro(self):
        log("microbenchmarks")
        out = subprocess.run([self.args.micro_binary, "--benchmark_format=json",
                              "--benchmark_min_time=%g" % self.size["micro_min_time"]],
                             check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        rows = []
        for b in json.loads(out.stdout)["benchmarks"]:
            ips = b.get("items_per_second")
            rows.append(dict(name=b["name"], ns_per_item=1e9 / ips if ips else None,
                             mib_per_s=b["bytes_per_second"] / 2**20 if b.get("bytes_per_second") else None))
        self.results["micro"] = rows


# -- report ------------------------------------------------------------------

def fmt(v, digits=1):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "{:,.{d}f}".format(v, d=digits)
    return "{:,}".format(v)


def met(ok):
    return "yes" if ok else "**no**"


def main_table(r):
    b, base, idle = r.get("bridge"), r.get("baseline"), r.get("idle")
    ratio = b["changes_per_s"] / base["changes_per_s"] if b and base and base.get("changes_per_s") else None
    lines = ["| scenario | changes | changes/s | CPU µs/change | peak RSS MiB | durable writes/s | ratio to baseline |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    if "source" in r:
        s = r["source"]
        lines.append("| source ceiling (curl, source CPU) | %s | %s | %s | | | |"
                     % (fmt(s["changes"]), fmt(s["changes_per_s"], 0), fmt(s["source_cpu_us_per_change"], 2)))
    if b:
        lines.append("| bridge, %s | %s | %s | %s | %s | %s | %s× |"
                     % ("catch-up from 0", fmt(b["changes"]), fmt(b["changes_per_s"], 0),
                        fmt(b["cpu_us_per_change"], 2), fmt(b["peak_rss_mib"]), fmt(b["ckpt_writes_per_s"], 2),
                        fmt(ratio)))
    if base:
        lines.append("| baseline (pillowtop-style Python) | %s | %s | %s | %s | %s | 1× |"
                     % (fmt(base["changes"]), fmt(base["changes_per_s"], 0), fmt(base["cpu_us_per_change"], 1),
                        fmt(base["peak_rss_mib"]), fmt(base["ckpt_writes_per_s"], 2)))
    if idle:
        lines.append("| bridge, %d idle databases (%.0f s) | | | CPU %s%% of a core | RSS %s (peak %s) | %s | |"
                     % (idle["databases"], idle["window_s"], fmt(idle["cpu_pct"], 2), fmt(idle["rss_mib"]),
                        fmt(idle["peak_rss_mib"]), fmt(idle["ckpt_writes_per_s"], 2)))
    goals = ["| goal | target | measured | met |", "|---|---|---|---|"]
    if b:
        goals.append("| end-to-end changes/s | ≥ 100,000 | %s | %s |"
                     % (fmt(b["changes_per_s"], 0), met((b["changes_per_s"] or 0) >= GOALS["changes_per_s"])))
        goals.append("| bridge CPU per change | ≤ 10 µs | %s µs | %s |"
                     % (fmt(b["cpu_us_per_change"], 2),
                        met((b["cpu_us_per_change"] or 1e9) <= GOALS["cpu_us_per_change"])))
    if ratio is not None:
        goals.append("| ratio to the Python baseline | ≥ 50× | %s× | %s |" % (fmt(ratio), met(ratio >= GOALS["ratio"])))
    if idle:
        goals.append("| %d idle databases: resident memory | ≤ 256 MiB | %s MiB | %s |"
                     % (idle["databases"], fmt(idle["rss_mib"]), met(idle["peak_rss_mib"] <= GOALS["idle_rss_mib"])))
        goals.append("| %d idle databases: CPU | ≤ 2%% of a core | %s%% | %s |"
                     % (idle["databases"], fmt(idle["cpu_pct"], 2), met(idle["cpu_pct"] <= GOALS["idle_cpu_pct"])))
    return "\n".join(lines), "\n".join(goals)


def ckpt_table(rows):
    lines = ["| databases | phase | changes/s | durable writes/s |", "|---:|---|---:|---:|"]
    for c in rows:
        lines.append("| %d | %s | %s | %s |" % (c["databases"], c["phase"], fmt(c["changes_per_s"], 0),
                                                fmt(c["ckpt_writes_per_s"], 2)))
    return "\n".join(lines)


def micro_table(rows):
    lines = ["| microbenchmark | ns (CPU) per item | MiB/s |", "|---|---:|---:|"]
    for m in rows:
        lines.append("| %s | %s | %s |" % (m["name"], fmt(m["ns_per_item"], 0), fmt(m["mib_per_s"], 0)))
    return "\n".join(lines)


def pace_table(rows):
    variants = any(p.get("variant") for p in rows)
    head = ["pace", "databases", "changes"] + (["bridge"] if variants else []) + [
        "plain read changes/s", "plain read CPU µs/change", "bridge changes/s", "bridge CPU µs/change",
        "bridge context switches/change", "catch-up ÷ plain read", "row→ack p50 ms", "row→ack p99 ms",
        "source CPU µs/change"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for p in rows:
        cells = [p["pace"], "%d" % p["databases"], fmt(p["changes"])] + ([p.get("variant", "")] if variants else []) + [
            fmt(p["read_changes_per_s"], 0), fmt(p["read_cpu_us_per_change"], 2), fmt(p["bridge_changes_per_s"], 0),
            fmt(p["bridge_cpu_us_per_change"], 2), fmt(p.get("switches_per_change"), 2),
            "%s×" % fmt(p["ratio"], 2) if p["ratio"] is not None else "n/a",
            fmt(p.get("latency_p50_ms"), 2), fmt(p.get("latency_p99_ms"), 2),
            fmt(p["source_cpu_us_per_change"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(rows):
    lines = ["| catch-up of one database | changes | RSS at start MiB | peak RSS MiB | peak − start MiB | changes/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for m in rows:
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            m["label"], fmt(m["changes"]), fmt(m["start_rss_mib"]), fmt(m["peak_rss_mib"]),
            fmt(m["peak_rss_mib"] - m["start_rss_mib"]), fmt(m["changes_per_s"], 0)))
    return "\n".join(lines)


PACE_BEGIN = "<!-- pace:begin (written by bench/run --scenarios pace) -->"
PACE_END = "<!-- pace:end -->"
PACE_NOTES_BEGIN = "<!-- pace-notes:begin (kept by bench/run across runs) -->"
PACE_NOTES_END = "<!-- pace-notes:end -->"


def pace_section(args, runner, old):
    """The "At a real CouchDB's pace" section, between markers; the notes
    between the pace-notes markers of `old` (the previous report) are kept."""
    r = runner.results
    notes = "(No analysis yet.)"
    if PACE_NOTES_BEGIN in old and PACE_NOTES_END in old:
        notes = old.split(PACE_NOTES_BEGIN, 1)[1].split(PACE_NOTES_END, 1)[0].strip("\n")
    parts = [PACE_BEGIN, "## At a real CouchDB's pace", "",
             "Generated by `%s` (mode: %s) on %s UTC, all paces in one run on the same machine and broker."
             % (args.command, args.mode, datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")), "",
             "Source: `bench-source --couchdb-like --row-rate R`: CouchDB 3.4.3 framing (a normal feed flushes "
             "1490-byte chunks, so each ~1.5 KB row is about one chunk; a continuous feed sends a chunk per row), "
             "opaque `N-g1AAAA…` seqs of ~130 characters, each database paced to R rows/s (unpaced at full speed). "
             "Plain read: one `curl` per database reading `_changes?include_docs=true` to /dev/null, all at once; "
             "its CPU is curl's. Bridge: catch-up from 0 on the same source right after (its default `limit=2000` "
             "batches with `seq_interval=100`, so it also reads `null` seqs), measured as in the throughput "
             "scenario.", "",
             pace_table(r.get("pace", [])), ""]
    perf = r.get("perf_6000")
    if perf:
        parts += ["`perf record -e cpu-clock -F 999 -g` of the bridge%s during the 6,000/s catch-up (self time "
                  "by shared object, then by symbol above 1.5 %%):" % (
                      " `%s`" % perf["variant"] if perf.get("variant") else ""), "", "```"]
        parts += perf["dsos"] + [""] + perf["symbols"] + ["```", ""]
        parts += ["Inclusive (children) time by symbol above 4 %:", "", "```"] + perf.get("inclusive", []) + \
            ["```", ""]
    parts += [PACE_NOTES_BEGIN, notes, PACE_NOTES_END, "", PACE_END]
    return "\n".join(parts)


def splice_pace(text, section):
    """Puts `section` in place of the marked pace section of `text`, or
    before "## How it is measured", or at the end."""
    return fleet.splice_marked(text, PACE_BEGIN, PACE_END, section)


def run_text(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_and_versions(args):
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    boost = "unknown"
    try:
        with open("/usr/include/boost/version.hpp") as f:
            m = re.search(r'BOOST_LIB_VERSION "([^"]+)"', f.read())
            boost = m.group(1).replace("_", ".") if m else boost
    except OSError:
        pass
    pom = os.path.join(args.root, "tests/servers/kafka/pom.xml")
    kafka = "unknown"
    try:
        with open(pom) as f:
            m = re.search(r"<kafka.version>([^<]+)</kafka.version>", f.read())
            kafka = m.group(1) if m else kafka
    except OSError:
        pass
    git = run_text(["git", "-C", args.root, "rev-parse", "--short", "HEAD"])
    dirty = run_text(["git", "-C", args.root, "status", "--porcelain", "--untracked-files=no"])
    return [
        ("CPU", "%s, %d logical cores (nproc)" % (cpu_model, os.cpu_count())),
        ("memory", "%.1f GiB" % (mem_kib / 2**20)),
        ("kernel", platform.release()),
        ("compiler", run_text(["g++", "--version"]).splitlines()[0]),
        ("bridge", "%s (git %s%s), RelWithDebInfo -O2"
         % (run_text([args.bridge_binary, "--version"]).splitlines()[0], git, ", with local changes" if dirty else "")),
        ("librdkafka", run_text(["pkg-config", "--modversion", "rdkafka"])),
        ("Boost", boost),
        ("RocksDB", run_text(["dpkg-query", "-W", "-f=${Version}", "librocksdb-dev"])),
        ("Kafka broker", "Apache Kafka %s, KRaft single node (tests/servers/kafka-broker.sh)" % kafka),
        ("baseline", "Python %s, %s" % (run_text([args.python, "-c", "import platform;print(platform.python_version())"]),
                                        ", ".join(l for l in run_text([args.python, "-m", "pip", "freeze"]).splitlines()
                                                  if l.startswith(("kafka-python", "requests"))))),
    ]


NOTES_BEGIN = "<!-- notes:begin (kept by bench/run across runs) -->"
NOTES_END = "<!-- notes:end -->"


def write_report(args, runner, table, goals, machine):
    r = runner.results
    kept = ""
    old = ""
    if os.path.exists(args.output):
        with open(args.output) as f:
            old = f.read()
        if NOTES_BEGIN in old and NOTES_END in old:
            kept = old.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    fleet_sec = fleet.section(args.command, args.mode, r["fleet"], sys.modules[__name__]) if "fleet" in r \
        else fleet.kept_section(old)
    if set(r) <= {"pace", "perf_6000", "fleet"} and old:
        # Only the pace or fleet scenarios ran: update their sections, keep the rest.
        text = splice_pace(old, pace_section(args, runner, old)) if "pace" in r else old
        with open(args.output, "w") as f:
            f.write(fleet.splice(text, fleet_sec) if fleet_sec else text)
        return
    pace = pace_section(args, runner, old) if "pace" in r else ""
    if not pace and PACE_BEGIN in old and PACE_END in old:
        pace = PACE_BEGIN + old.split(PACE_BEGIN, 1)[1].split(PACE_END, 1)[0] + PACE_END
    s = runner.size
    parts = [
        "# Benchmarks",
        "",
        "Generated by `bench/run` (issue #7) on %s UTC. Figures are from one run, all scenarios side by side on "
        "the same machine, source and broker; compare ratios and CPU per change, not wall-clock absolutes."
        % datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
        "",
        "Command: `%s` (mode: %s)" % (args.command, args.mode),
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
    ]
    parts += ["| %s | %s |" % (k, v) for k, v in machine]
    parts += [
        "",
        "## Results",
        "",
        table,
        "",
        goals,
        "",
        "Sizes: throughput %d databases × %s changes (CommCare-shaped documents, 1–2 KB, `include_docs`); "
        "baseline %s changes of one database; idle %d databases × %d changes then heartbeats only, measured over "
        "%d s after %d s of settling."
        % (s["source_dbs"], fmt(s["source_changes"]), fmt(s["baseline_changes"]), s["idle_dbs"], s["idle_changes"],
           s["idle_window_s"], s["idle_settle_s"]),
        "",
        "### Checkpoint cost",
        "",
        "Durable writes (RocksDB `WriteBatch` with sync) per second while catching up (high throughput) and while "
        "following one live change per %d ms per database (low throughput):" % s["ckpt_live_interval_ms"],
        "",
        ckpt_table(r.get("checkpoints", [])),
        "",
        "### Microbenchmarks (Google Benchmark, `bench-micro`)",
        "",
        micro_table(r.get("micro", [])),
        "",
    ]
    if pace:
        parts += [pace, ""]
    if fleet_sec:
        parts += [fleet_sec, ""]
    parts += [
        "## How it is measured",
        "",
        "- Source: `bench-source` (bench/source), a Beast server generating CommCare-shaped documents from a seed "
        "into a pool before the first request; responses are chunks assembled by copying. Its ceiling row is "
        "plain `curl` readers, one per database, with the source's CPU per change.",
        "- Bridge: started with `--initial-since 0` and a fresh checkpoint directory; the window runs from the "
        "first poll (every 100 ms) of `/metrics` that shows a row read to the poll showing every row acknowledged "
        "by Kafka (`couch_bridge_records_published_total` + `couch_bridge_records_skipped_total`). CPU is "
        "utime+stime from `/proc/<pid>/stat` over that window divided by the changes delivered in it; peak RSS "
        "is `VmHWM`; durable writes/s is the change of `couch_bridge_checkpoint_writes_total` over the window.",
        "- Baseline: `bench/baseline/publisher.py` (requests streaming a continuous feed, kafka-python "
        "`acks=1` with a `flush()` after each send, a durable checkpoint every 100 changes), pinned in "
        "`bench/baseline/requirements.txt`, on the same source and broker.",
        "- Idle: CPU share = CPU seconds of the bridge over the window / window length; RSS is `VmRSS` at the end.",
        "- Raw results (JSON) are printed by `bench/run` at the end of the run.",
        "",
        "## Analysis",
        "",
        NOTES_BEGIN,
        kept or "(No analysis yet.)",
        NOTES_END,
        "",
    ]
    with open(args.output, "w") as f:
        f.write("\n".join(parts))


def main():
    p = argparse.ArgumentParser(description="bench/run's scenario runner")
    p.add_argument("--mode", choices=sorted(SIZES), default="full")
    p.add_argument("--root", required=True)
    p.add_argument("--bridge-binary", required=True)
    p.add_argument("--source-binary", required=True)
    p.add_argument("--micro-binary", required=True)
    p.add_argument("--python", required=True, help="the baseline's venv python")
    p.add_argument("--baseline", required=True)
    p.add_argument("--brokers", required=True)
    p.add_argument("--output", help="markdown report to write (none: only print)")
    p.add_argument("--command", default="bench/run")
    p.add_argument("--scenarios", default="micro,throughput,idle,checkpoints,pace")
    p.add_argument("--perf", action="store_true", help="profile the bridge with perf at the 6,000/s pace (reported) "
                   "and at 500/s (kept with --keep-work)")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=BINARY [ARGS]",
                   help="pace scenario: compare these bridges side by side (repeatable), e.g. "
                        "'before=/tmp/old/couch-kafka-bridge' 'after=build/release/bridge/couch-kafka-bridge'")
    p.add_argument("--size", action="append", default=[], metavar="KEY=VALUE",
                   help="override one size of the mode, e.g. source_changes=50000 (repeatable)")
    args = p.parse_args()

    runner = Runner(args)
    for item in args.size:
        key, _, value = item.partition("=")
        if key not in runner.size:
            p.error("unknown size %r; known: %s" % (key, ", ".join(sorted(runner.size))))
        runner.size[key] = json.loads(value)
    wanted = set(args.scenarios.split(","))
    failed = []
    try:
        for name, fn in [("micro", runner.scenario_micro), ("throughput", runner.scenario_source_and_bridge),
                         ("idle", runner.scenario_idle), ("checkpoints", runner.scenario_checkpoints),
                         ("pace", runner.scenario_pace), ("memory", runner.scenario_memory),
                         ("fleet", runner.scenario_fleet)]:
            if name not in wanted:
                continue
            try:
                fn()
            except (Scenario_failed, subprocess.SubprocessError, OSError, ValueError) as e:
                log("scenario %s FAILED: %s (work dir %s)" % (name, e, runner.work))
                failed.append(name)
                args.keep_work = True
                for proc in list(runner.procs):
                    runner.stop(proc, timeout=30)
    finally:
        runner.cleanup()

    table, goals = main_table(runner.results)
    print(table)
    print()
    print(goals)
    if "checkpoints" in runner.results:
        print()
        print(ckpt_table(runner.results["checkpoints"]))
    if "micro" in runner.results:
        print()
        print(micro_table(runner.results["micro"]))
    if "pace" in runner.results:
        print()
        print(pace_table(runner.results["pace"]))
    if "memory" in runner.results:
        print()
        print(memory_table(runner.results["memory"]))
    if "fleet" in runner.results:
        print()
        print(fleet.section(args.command, args.mode, runner.results["fleet"], sys.modules[__name__]))
    for line in runner.results.get("perf_6000", {}).get("symbols", []):
        print(line)
    print()
    print(json.dumps(runner.results, indent=1, default=str))
    if args.output:
        write_report(args, runner, table, goals, machine_and_versions(args))
        log("wrote " + args.output)
    if failed:
        log("failed scenarios: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
