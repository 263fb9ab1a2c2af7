#!/usr/bin/env python3
"""bench/delivery.py: what exactly-once costs, measured side by side.

    python3 bench/delivery.py [--changes N] [--rounds R] [--latency-seconds S]
                              [--build-dir build/release] [--kafka-brokers B]

Runs the release binary of the bridge against the synthetic source
(bench-source, one database) and a real Kafka broker (its own, started with
tests/servers/kafka-broker.sh, unless --kafka-brokers is given):

  throughput  the same N changes published in three modes, alternating the
              modes over R rounds (the machine is noisy: the ratios come from
              the same run): at-least-once with RocksDB checkpoints,
              at-least-once with the Kafka checkpoint store, exactly-once.
              Reports changes/s and CPU microseconds per change (utime+stime
              of the bridge from its first row read to the last record
              delivered) and each mode's ratio to the first.
  latency     exactly-once at 200 writes/s (bench-source --live-interval-ms 5)
              with a read_committed consumer (the bridge's own `tail`):
              latency = arrival at the consumer - the record's
              publish_timestamp (the moment the bridge read the change).
              Reports p50, p99 and max.

Prints a Markdown table; nothing passes or fails on a timing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import cpu_seconds, delivered, end_process, free_port, scrape, ROWS_READ  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(os.path.basename(sys.argv[0]) + ": " + msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="ckb-delivery-")
        self.procs = []
        self.bridge = os.path.join(args.build_dir, "bridge", "couch-kafka-bridge")
        self.source_bin = os.path.join(args.build_dir, "bench", "source", "bench-source")

    def spawn(self, name, cmd):
        logf = open(os.path.join(self.work, name + ".log"), "w")
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop(self, p):
        return end_process(p)

    def source(self, name, changes, extra=(), databases=1):
        port_file = os.path.join(self.work, name + ".port")
        p = self.spawn(name, [self.source_bin, "--databases", str(databases), "--changes", str(changes),
                              "--port-file", port_file, "--seed", "42"] + list(extra))
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bench-source did not start")
            time.sleep(0.02)
        with open(port_file) as f:
            return p, "http://127.0.0.1:%d" % int(f.read())

    def start_bridge(self, name, url, mode, prefix, databases=("bench-0000",), extra=()):
        port = free_port()
        cmd = [self.bridge, "--couch-url", url, "--kafka-brokers", self.args.brokers,
               "--checkpoint-dir", os.path.join(self.work, name + "-ckpt"), "--http-listen", "127.0.0.1:%d" % port,
               "--log-level", "warn", "--routing", "prefix:%s-" % prefix, "--default-topic", prefix + "-meta",
               "--source-name", prefix] + list(extra)
        for db in databases:
            cmd += ["--db", db]
        if mode in ("alo-kafka", "eos"):
            cmd += ["--checkpoint-store", "kafka", "--checkpoint-topic", prefix + "-checkpoints"]
        if mode == "eos":
            cmd += ["--delivery", "exactly-once"]
        p = self.spawn(name, cmd)
        deadline = time.monotonic() + 120
        while True:
            if p.poll() is not None:
                raise RuntimeError("the bridge exited at startup (%s); see %s/%s.log" % (p.returncode, self.work, name))
            try:
                scrape(port)
                return p, port
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the bridge did not answer")
                time.sleep(0.05)

    def throughput(self, mode, rnd):
        n = self.args.changes
        prefix = "dlv-%s-%d-%d" % (mode, rnd, os.getpid())
        src, url = self.source("src-%s-%d" % (mode, rnd), n)
        bridge, port = self.start_bridge("bridge-%s-%d" % (mode, rnd), url, mode, prefix)
        first = None
        while True:
            if bridge.poll() is not None:
                raise RuntimeError("the bridge exited during the run")
            m = scrape(port)
            now, cpu = time.monotonic(), cpu_seconds(bridge.pid)
            if first is None and m.get(ROWS_READ, 0.0) > 0:
                first = (now, cpu, delivered(m))
            if delivered(m) >= n:
                last = (now, cpu, delivered(m))
                break
            time.sleep(0.05)
        self.stop(bridge)
        self.stop(src)
        changes = last[2] - first[2]
        secs = last[0] - first[0]
        return dict(mode=mode, round=rnd, changes_per_s=changes / secs, cpu_us=(last[1] - first[1]) * 1e6 / changes)

    def latency(self):
        secs = self.args.latency_seconds
        prefix = "dlv-latency-%d" % os.getpid()
        # Live changes only: the initial feed is one change, then one per 5 ms.
        src, url = self.source("src-latency", 1, ["--live-interval-ms", "5"])
        bridge, port = self.start_bridge("bridge-latency", url, "eos", prefix)
        topics = []
        # The two doc types of 85 % of the source's changes are the sample.
        for t in ["CommCareCase", "XFormInstance"]:
            topics += ["--topic", "%s-%s" % (prefix, t)]
        consumer = subprocess.Popen([self.bridge, "tail", "--kafka-brokers", self.args.brokers,
                                     "--timeout-ms", str((secs + self.args.warm_up_seconds + 30) * 1000)] + topics,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(consumer)
        lat = []
        # The first seconds create the topics and the first transaction's
        # partitions: startup, not the steady state measured here.
        warm_from = time.time() + self.args.warm_up_seconds
        stop_at = warm_from + secs

        def read():
            for line in consumer.stdout:
                arrived = time.time()
                try:
                    value = json.loads(line)["value"]
                    ts = value["publish_timestamp"]
                except (ValueError, KeyError, TypeError):
                    continue
                t = datetime.datetime.strptime(ts.rstrip("Z")[:26], "%Y-%m-%dT%H:%M:%S.%f")
                t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
                if warm_from <= t and arrived < stop_at:
                    lat.append(arrived - t)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(self.args.warm_up_seconds + secs + 2)
        m = scrape(port)
        self.stop(bridge)
        self.stop(src)
        consumer.kill()
        consumer.wait()
        lat.sort()
        if not lat:
            raise RuntimeError("the consumer saw no record")

        def pct(p):
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

        return dict(records=len(lat), rate=len(lat) / secs, p50_ms=pct(0.50), p99_ms=pct(0.99),
                    max_ms=lat[-1] * 1000,
                    commits=sum(v for k, v in m.items() if k.startswith("couch_bridge_transactions_total")))

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def own_broker(args):
    """Starts a Kafka broker of our own unless --kafka-brokers was given;
    returns its state dir (None when external) and sets args.brokers."""
    if args.brokers:
        return None
    state = tempfile.mkdtemp(prefix="ckb-bench-broker-")
    env = dict(os.environ)
    env.pop("CKB_TEST_KAFKA_BROKERS", None)
    subprocess.run(["bash", os.path.join(ROOT, "tests/servers/kafka-broker.sh"), "start", state], check=True,
                   env=env, stdout=sys.stderr)
    with open(os.path.join(state, "kafka.env")) as f:
        args.brokers = f.read().split("=", 1)[1].strip()
    return state


def stop_broker(state):
    if state:
        subprocess.run(["bash", os.path.join(ROOT, "tests/servers/kafka-broker.sh"), "stop", state],
                       stdout=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-seconds", type=int, default=30)
    ap.add_argument("--warm-up-seconds", type=int, default=5, help="records read before this are not sampled")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--kafka-brokers", dest="brokers", default="")
    args = ap.parse_args()
    state = own_broker(args)
    b = Bench(args)
    try:
        rows = []
        for rnd in range(args.rounds):
            for mode in ("alo-rocksdb", "alo-kafka", "eos"):
                log("throughput: %s, round %d, %d changes" % (mode, rnd + 1, args.changes))
                rows.append(b.throughput(mode, rnd))
        log("latency: exactly-once at 200 writes/s for %d s" % args.latency_seconds)
        lat = b.latency()
    finally:
        b.cleanup()
        stop_broker(state)
    if rows:
        throughput_table(rows, args.rounds)
    print("Exactly-once latency at 200 writes/s, read_committed consumer (`tail`), %d s after a %d s warm-up: %d "
          "records (%.0f/s), p50 %.0f ms, p99 %.0f ms, max %.0f ms; %d transactions in the whole run."
          % (args.latency_seconds, args.warm_up_seconds, lat["records"], lat["rate"], lat["p50_ms"], lat["p99_ms"],
             lat["max_ms"], lat["commits"]))


def throughput_table(rows, rounds):
    names = {"alo-rocksdb": "at-least-once, RocksDB checkpoints", "alo-kafka": "at-least-once, Kafka checkpoints",
             "eos": "exactly-once (Kafka checkpoints, transactions)"}
    print("| mode | changes/s (median of %d) | CPU µs/change (median) | rate ratio | CPU ratio |" % rounds)
    print("|---|---|---|---|---|")
    med = {}
    for mode in names:
        r = sorted(x["changes_per_s"] for x in rows if x["mode"] == mode)
        c = sorted(x["cpu_us"] for x in rows if x["mode"] == mode)
        med[mode] = (r[len(r) // 2], c[len(c) // 2])
    for mode, name in names.items():
        rate, cpu = med[mode]
        print("| %s | %.0f | %.1f | %.2f× | %.2f× |" % (name, rate, cpu, rate / med["alo-rocksdb"][0],
                                                        cpu / med["alo-rocksdb"][1]))
    print()
    print("Every round: " + ", ".join("%s %.0f/s %.1f µs" % (x["mode"], x["changes_per_s"], x["cpu_us"])
                                      for x in rows))
    print()


if __name__ == "__main__":
    main()
