#!/usr/bin/env python3
"""bench/group.py: group mode (--group), measured.

    python3 bench/group.py [--databases 30] [--changes 5000] [--trials 10]
                           [--session-timeout-ms 6000] [--build-dir build/release]
                           [--delivery at-least-once|exactly-once]

Uses the release binary, the synthetic source (bench-source) and a Kafka
broker of its own (tests/servers/kafka-broker.sh):

  throughput  30 databases x N changes published by a group of 1, 2 and 3
              instances (--delivery, Kafka checkpoint store): changes/s
              from the first row read to the last record delivered, and CPU
              microseconds per change summed over the instances. On a 2-core
              machine this shows the overhead of splitting the work, not a
              speed-up.
  failover    3 instances on a live source (every database changes every
              100 ms); the instance running the most databases is killed
              with -9 and the time from the kill to the first record of one
              of its databases published by another instance is taken; the
              instance is started again and the group settles before the
              next trial. p50 and max over the trials.

Prints Markdown; nothing passes or fails on a timing.
"""

import argparse
import os
import re
import signal
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from delivery import Bench, ROOT, log, own_broker, stop_broker  # noqa: E402
from measure import ROWS_READ, cpu_seconds, delivered, scrape  # noqa: E402


def status(port):
    import json
    with urllib.request.urlopen("http://127.0.0.1:%d/status" % port, timeout=5) as r:
        return json.load(r)


def published_by_db(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^couch_bridge_records_published_total\{.*database="([^"]+)".*\}\s+(\S+)', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def group_args(args, group, prefix):
    # (the Kafka checkpoint store comes with both modes of start_bridge: alo-kafka and eos)
    return ["--group", group, "--assignment-partitions", "32", "--group-session-timeout",
            str(args.session_timeout_ms)]


def owners(ports):
    seen = {}
    for p in ports:
        try:
            for db in status(p)["databases"]:
                seen[db] = seen.get(db, 0) + 1
        except OSError:
            pass
    return seen


def settle(ports, n, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        o = owners(ports)
        if len(o) == n and all(v == 1 for v in o.values()):
            return
        time.sleep(0.1)
    raise RuntimeError("the group did not settle")


def throughput(b, args, members):
    names = ["bench-%04d" % i for i in range(args.databases)]
    prefix = "grp-tp-%d-%d" % (members, os.getpid())
    src, url = b.source("src-tp-%d" % members, args.changes, databases=args.databases)
    bridges = [b.start_bridge("tp-%d-%d" % (members, i), url, args.mode, prefix, names,
                              group_args(args, prefix, prefix)) for i in range(members)]
    total = args.databases * args.changes
    first = None
    while True:
        now = time.monotonic()
        ms = [scrape(port) for _, port in bridges]
        cpu = sum(cpu_seconds(p.pid) for p, _ in bridges)
        done = sum(delivered(m) for m in ms)
        if first is None and sum(m.get(ROWS_READ, 0.0) for m in ms) > 0:
            first = (now, cpu, done)
        if done >= total:
            last = (now, cpu, done)
            break
        time.sleep(0.05)
    for p, _ in bridges:
        b.stop(p)
    b.stop(src)
    changes = last[2] - first[2]
    return dict(members=members, changes_per_s=changes / (last[0] - first[0]),
                cpu_us=(last[1] - first[1]) * 1e6 / changes)


def failover(b, args):
    names = ["bench-%04d" % i for i in range(args.databases)]
    prefix = "grp-fo-%d" % os.getpid()
    src, url = b.source("src-fo", 1, ["--live-interval-ms", "100"], databases=args.databases)
    extra = group_args(args, prefix, prefix)
    inst = [b.start_bridge("fo-%d" % i, url, args.mode, prefix, names, extra) for i in range(3)]
    settle([p for _, p in inst], args.databases)
    times = []
    for trial in range(args.trials):
        counts = [(i, len(status(port)["databases"])) for i, (_, port) in enumerate(inst)]
        victim = max(counts, key=lambda x: x[1])[0]
        moved = set(status(inst[victim][1])["databases"])
        others = [port for i, (_, port) in enumerate(inst) if i != victim]
        base = {port: published_by_db(port) for port in others}
        proc = inst[victim][0]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        took = None
        while took is None:
            for port in others:
                now = published_by_db(port)
                if any(now.get(db, 0.0) > base[port].get(db, 0.0) for db in moved):
                    took = time.monotonic() - t0
                    break
            if time.monotonic() - t0 > 120:
                raise RuntimeError("no moved database was published within 120 s")
            time.sleep(0.05)
        times.append(took)
        log("failover trial %d: %d databases moved, first record after %.2f s" % (trial + 1, len(moved), took))
        inst[victim] = b.start_bridge("fo-%d-r%d" % (victim, trial), url, args.mode, prefix, names, extra)
        settle([p for _, p in inst], args.databases)
    for p, _ in inst:
        b.stop(p)
    b.stop(src)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--databases", type=int, default=30)
    ap.add_argument("--changes", type=int, default=5000)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--kafka-brokers", dest="brokers", default="")
    ap.add_argument("--delivery", choices=["at-least-once", "exactly-once"], default="at-least-once")
    args = ap.parse_args()
    args.mode = "eos" if args.delivery == "exactly-once" else "alo-kafka"
    state = own_broker(args)
    b = Bench(args)
    try:
        rows = []
        for members in (1, 2, 3):
            log("throughput: %d instance(s), %d databases x %d changes" % (members, args.databases, args.changes))
            rows.append(throughput(b, args, members))
        log("failover: %d trials" % args.trials)
        times = failover(b, args)
    finally:
        b.cleanup()
        stop_broker(state)
    print("| instances | changes/s | CPU µs/change (all instances) | rate ratio to 1 |")
    print("|---|---|---|---|")
    for r in rows:
        print("| %d | %.0f | %.1f | %.2f× |" % (r["members"], r["changes_per_s"], r["cpu_us"],
                                             r["changes_per_s"] / rows[0]["changes_per_s"]))
    print()
    times.sort()
    print("Failover (session timeout %d ms), kill -9 to the first record of a moved database, %d trials: p50 "
          "%.2f s, max %.2f s (all: %s)." % (args.session_timeout_ms, len(times), times[len(times) // 2], times[-1],
                                              ", ".join("%.2f" % t for t in times)))


if __name__ == "__main__":
    main()
