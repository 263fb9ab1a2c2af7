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
           change of both, and catch-up / plain read. Then the bridge
           following live changes (200/s x 1 and 500/s x 10 databases) once
           caught up: CPU per change and row->ack latency over a window.
  fleet    (not run by default; bench/fleet.py) discovery of 10,000 databases
           by pattern under --max-open-feeds: time until every database has a
           checkpoint, memory, connections to the source, and the latency of
           a write to an idle database.
The pace scenario is in pace.py (a mixin of Runner), fleet in fleet.py, the
readings of /proc and /metrics in measure.py, the tables in report.py.
Figures come from /proc (CPU: utime+stime; memory: VmRSS/VmHWM) and from the
bridge's /metrics; timing windows start at the first row read, so process
startup is not counted. Nothing here passes or fails on a timing: a scenario
fails only when the bridge does not deliver everything it was given.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import fleet
from measure import (CKPT_WRITES, ROWS_READ, Scenario_failed, cpu_seconds, delivered, end_process, free_port,
                     log, memory_kib, scrape)
from pace import Pace
from report import (fmt, met, main_table, ckpt_table, micro_table, pace_table, memory_table,
                    machine_and_versions, write_report)

SIZES = {
    "full": dict(source_dbs=4, source_changes=250_000, baseline_changes=5_000, idle_dbs=1000, idle_changes=5,
                 idle_settle_s=10, idle_window_s=30, ckpt_dbs=[1, 10, 100], ckpt_total=200_000,
                 ckpt_live_interval_ms=100, ckpt_live_window_s=15, micro_min_time=0.5,
                 # (label, row rate per database or 0 for unpaced, databases, changes per database)
                 paces=[("full speed", 0, 1, 200_000), ("10,000/s x 1", 10000, 1, 100_000),
                        ("6,000/s x 1", 6000, 1, 60_000),
                        ("500/s x 10", 500, 10, 5_000), ("200/s x 1", 200, 1, 4_000),
                        ("10/s x 100", 10, 100, 100)],
                 # (label, --live-interval-ms, databases): the bridge following
                 # live changes, measured over follow_window_s once caught up
                 follows=[("following 200/s x 1", 5, 1), ("following 500/s x 10", 2, 10)],
                 follow_backlog=100, follow_settle_s=2, follow_window_s=10,
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
                  follows=[("following 200/s x 1", 5, 1), ("following 500/s x 10", 2, 10)],
                  follow_backlog=20, follow_settle_s=0.5, follow_window_s=2,
                  memory=[("stub, 1 MiB docs, 8 MiB window", "stub", 1 << 20, 8 << 20, 20),
                          ("stub+doc, 0.9 MiB docs, 8 MiB window", "stub+doc", 900_000, 8 << 20, 20)],
                  fleet_dbs=60, fleet_changes=3, fleet_max_open_feeds=10, fleet_idle_close_ms=1000,
                  fleet_latency_writes=5, fleet_idle_window_s=2),
}


class Runner(Pace):
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
        end_process(proc, timeout=timeout)
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
        wall, _ = self.plain_read(url, names)
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
