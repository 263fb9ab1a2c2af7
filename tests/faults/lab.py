#!/usr/bin/env python3
"""The fault lab: a seeded, randomized schedule of partitions, restarts,
stalls, slow links and full disks against the real bridge, its own
pouchdb-server and its own Kafka broker; then heal, wait for quiescence and
check independently that nothing was lost.

    tests/faults/lab.py --seed 14 --faults 60 [--profile ci|soak] [--report docs/FAULTS.md]
    tests/faults/lab.py --seed 14 --faults 60 --print-schedule   # the schedule only

Needs root (network and mount namespaces). Exit status 0 when every check
holds, 1 when one fails, 2 when the lab itself could not run, 77 (skipped)
without root.

Topology (the bridge runs inside the lab's network namespace and inside a
mount namespace with a small tmpfs on its checkpoint directory):

    writer ──────────────────────────────▶ pouchdb-server (LevelDB) 127.0.0.1
    bridge ─veth couch─▶ Toxiproxy couch ──▶ pouchdb-server
    bridge ─veth kafka─▶ Toxiproxy kafka ──▶ broker BRIDGE listener (advertised = the proxy)
    lab    ─veth mgmt──▶ bridge /status, /readyz (never cut)
    checker ─────────────────────────────▶ broker DIRECT listener 127.0.0.1

Group mode (--mode group, --members 3): each bridge instance has its own
network namespace (its own couch, kafka and mgmt veths) and its own mount
namespace (its own checkpoint tmpfs, a cache then: positions live in the
Kafka checkpoint topic). Toxiproxy listens on two host addresses of a veth
pair of their own (servers.ServiceAddresses), which each namespace routes
through its own link of that name: a partition cuts one instance, while a
toxic or a server restart hits them all.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402
import group  # noqa: E402
import report  # noqa: E402
import schedule  # noqa: E402
import servers  # noqa: E402
from injector import Injector, Monitor, ToxiproxyGuard, healthy, summarize  # noqa: E402
from workload import Writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# group: --members bridge instances in one consumer group (at-least-once);
# group-exactly-once: the same with transactions (0 duplicates required).
MODES = ("at-least-once", "exactly-once", "group", "group-exactly-once")
EXACTLY_ONCE = ("exactly-once", "group-exactly-once")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--faults", type=int, default=60)
    p.add_argument("--min-each", type=int, default=3, help="every fault kind at least this many times")
    p.add_argument("--kinds", help="comma-separated fault kinds to use (default: all): " + ",".join(sorted(
        schedule.KINDS)))
    p.add_argument("--profile", choices=sorted(schedule.PROFILES), default="ci")
    p.add_argument("--mode", choices=MODES, default="at-least-once")
    p.add_argument("--bridge", default=os.path.join(ROOT, "build/ci/bridge/couch-kafka-bridge"))
    p.add_argument("--read-committed", default=os.path.join(ROOT, "build/ci/tests/faults/ckb-read-committed"),
                   help="exactly-once: the read_committed consumer the checker reads Kafka with")
    p.add_argument("--members", type=int, default=3, help="group mode: bridge instances in the group")
    p.add_argument("--assignment-partitions", type=int,
                   help="group mode: --assignment-partitions (default 16; 8 with exactly-once)")
    p.add_argument("--session-timeout-ms", type=int, default=6000, help="group mode: --group-session-timeout")
    p.add_argument("--databases", type=int, help="databases the writer writes to (default 3; 6 in group mode)")
    p.add_argument("--writes-per-s", type=float, default=20.0)
    p.add_argument("--heartbeat-ms", type=int, default=2000, help="the bridge's --couch-heartbeat")
    p.add_argument("--max-in-flight", type=int, default=24, help="the bridge's per-database window")
    p.add_argument("--rss-limit-mib", type=int, default=300, help="peak RSS allowed while Kafka is unreachable")
    p.add_argument("--tmpfs-mib", type=int, default=32, help="size of the checkpoint disk")
    p.add_argument("--recovery-timeout", type=float, default=180.0)
    p.add_argument("--quiesce-timeout", type=float, default=300.0)
    p.add_argument("--work", help="working directory (default: a fresh temporary one, removed on success)")
    p.add_argument("--report", help="write the Markdown report here (e.g. docs/FAULTS.md)")
    p.add_argument("--print-schedule", action="store_true", help="print the schedule as JSON and exit")
    return p.parse_args(argv)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class World:
    """Everything the injector acts on."""


class Member:
    """One bridge instance and its namespaces (group mode runs several)."""


def build_world(args, work, tag):
    w = World()
    w.group = args.mode.startswith("group")
    n = args.members if w.group else 1
    databases = args.databases if args.databases is not None else (6 if w.group else 3)
    w.databases = [f"faults-db{i}" for i in range(databases)]
    w.topic_prefix = f"faults{tag}-"
    w.shutdown_timeout_s = 5
    w.max_in_flight = args.max_in_flight
    fetch_servers()
    if w.group:
        # One Toxiproxy, CouchDB and broker for every instance: the proxies
        # listen on host addresses each namespace reaches through its own links.
        w.services = servers.ServiceAddresses(tag)
        w.services.create()
    w.netns_list = []
    for i in range(n):  # one by one: each picks a subnet the ones before do not use
        ns = servers.Netns(tag, i if w.group else None)
        ns.create()
        w.netns_list.append(ns)
    netns = w.netns_list
    hosts = w.services.ip if w.group else netns[0].host_ip
    if w.group:
        for ns in netns:
            for link in ("couch", "kafka"):
                ns.route(hosts[link], link)
    w.netns = netns[0]
    w.toxiproxy = servers.Toxiproxy(install_toxiproxy(), work)
    w.toxiproxy.start()
    couch_proxy, kafka_proxy = servers.free_port(), servers.free_port()
    w.couch = servers.Couch(ROOT, work)
    w.couch.start()
    w.kafka = servers.Kafka(ROOT, work)
    w.kafka.configure(f"{hosts['kafka']}:{kafka_proxy}")
    w.kafka.start()
    w.toxiproxy.add_proxy("couch", f"{hosts['couch']}:{couch_proxy}", f"127.0.0.1:{w.couch.port}")
    w.toxiproxy.add_proxy("kafka", f"{hosts['kafka']}:{kafka_proxy}", f"127.0.0.1:{w.kafka.bridge_port}")
    kafka_addr = f"{hosts['kafka']}:{kafka_proxy}"
    common = [
        "--couch-url", f"http://{hosts['couch']}:{couch_proxy}",
        "--kafka-brokers", kafka_addr,
        "--routing", f"prefix:{w.topic_prefix}", "--default-topic", f"{w.topic_prefix}meta",
        "--checkpoint-interval", "200",
        "--shutdown-timeout", str(w.shutdown_timeout_s * 1000),
        "--couch-heartbeat", str(args.heartbeat_ms),
        "--max-in-flight", str(args.max_in_flight),
        "--kafka-property", "topic.metadata.refresh.interval.ms=1000",
        "--log-level", "info",
    ]
    store_args = []
    if args.mode != "at-least-once":
        # exactly-once: records and checkpoints in one transaction; group:
        # the positions every member reads on assign. The checkpoint topic
        # goes through the same faulty link as the records; the checkpoint
        # disk only holds the hard-delete memory then (a cache).
        store_args = ["--checkpoint-store", "kafka", "--checkpoint-topic", f"{w.topic_prefix}checkpoints",
                      "--kafka-brokers", kafka_addr]
        common += store_args[:4]
    if args.mode in EXACTLY_ONCE:
        common += ["--delivery", "exactly-once", "--commit-interval", "100"]
    if w.group:
        common += ["--group", f"faults{tag}", "--assignment-partitions", str(args.assignment_partitions),
                   "--group-session-timeout", str(args.session_timeout_ms)]
    for db in w.databases:
        common += ["--db", db]
    w.members = []
    for i, ns in enumerate(netns):
        m = Member()
        m.index, m.netns = i, ns
        suffix = str(i) if w.group else ""
        m.mount_dir = os.path.join(work, "disk" + suffix)
        m.checkpoint_dir = os.path.join(m.mount_dir, "checkpoints")
        m.spaces = servers.Namespaces(ns, m.mount_dir, args.tmpfs_mib)
        m.spaces.start()
        status_addr = f"{ns.ns_ip['mgmt']}:9108"
        m.bridge = servers.Bridge(args.bridge, m.spaces, common + ["--checkpoint-dir", m.checkpoint_dir,
                                                                   "--http-listen", status_addr],
                                  os.path.join(work, f"bridge{suffix}.log"), f"http://{status_addr}")
        m.bridge.store_args = store_args
        w.members.append(m)
    # One instance: the world's bridge, disk and checkpoint directory are its.
    w.bridge, w.spaces, w.checkpoint_dir = w.members[0].bridge, w.members[0].spaces, w.members[0].checkpoint_dir
    w.writer = Writer(w.couch.port, w.databases, args.seed, args.writes_per_s)
    w.writer.create_databases()
    return w


def fetch_servers():
    servers.run(["bash", os.path.join(ROOT, "scripts/fetch-test-servers.sh"), "all"])


def install_toxiproxy():
    r = servers.run(["bash", os.path.join(ROOT, "scripts/install-toxiproxy.sh")])
    return r.stdout.strip().splitlines()[-1]


def teardown(w):
    for part in ("monitor", "writer", "toxiproxy_guard"):
        obj = getattr(w, part, None)
        try:
            obj and obj.stop()
        except Exception:
            pass
    for m in getattr(w, "members", []):
        for part in ("monitor", "bridge", "spaces"):
            obj = getattr(m, part, None)
            if obj is not None:
                try:
                    obj.stop()
                except Exception as e:
                    log(f"teardown of {part} {m.index}: {e}")
    for part in ("kafka", "couch", "toxiproxy"):
        obj = getattr(w, part, None)
        if obj is not None:
            try:
                obj.stop()
            except Exception as e:
                log(f"teardown of {part}: {e}")
    for ns in getattr(w, "netns_list", []):
        ns.destroy()
    if getattr(w, "services", None):
        w.services.destroy()


def heal_everything(w):
    for m in w.members:
        for link in ("couch", "kafka"):
            m.netns.heal(link)
        m.spaces.free()
    if w.couch.proc.poll() is not None:
        w.couch.start()
    if w.kafka.proc.poll() is not None:
        w.kafka.start()
    for m in w.members:
        with m.bridge.lock:
            if m.bridge.stopped_by_signal:
                m.bridge.signal(signal.SIGCONT)
            if m.bridge.pid() is None:
                m.bridge.start()
    # Last: with every link up and the bridge running, a healthy Toxiproxy
    # can drain its links and drop its toxics; a deadlocked one is restarted.
    try:
        w.toxiproxy.reset(timeout=30)
    except (RuntimeError, OSError) as e:
        w.toxiproxy_guard.restart(f"the heal's reset failed ({e})")


def following_status(w):
    """{db: its entry in /status of the instance that follows it} (group
    mode: the one member following it; a database followed by none or by
    several is left out), and the statuses by member."""
    statuses = [m.bridge.status() for m in w.members]
    out = {}
    for db in w.databases:
        entries = [st["databases"][db] for st in statuses if st and st.get("databases", {}).get(db, {}).get("state")
                   == "following"]
        if len(entries) == 1:
            out[db] = entries[0]
        elif not w.group and statuses[0]:
            out[db] = statuses[0].get("databases", {}).get(db, {})
    return out, statuses


def quiesce(w, timeout):
    """Waits until every feed follows, nothing is in flight and each feed has
    read up to CouchDB's update_seq. Returns the seconds it took, or None."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        dbs, statuses = following_status(w)
        if all(statuses) and healthy(w.monitor.latest):
            done = True
            for db in w.databases:
                d = dbs.get(db, {})
                seq = checker.couch_update_seq(w.couch.url, db)
                if d.get("in_flight") != 0 or d.get("last_seq_read") != json.dumps(seq) or \
                        d.get("checkpoint_seq") != json.dumps(seq):
                    done = False
            if done:
                return time.time() - t0
        time.sleep(1)
    return None


def main(argv):
    args = parse_args(argv)
    only = args.kinds.split(",") if args.kinds else None
    members = args.members if args.mode.startswith("group") else 1
    if args.assignment_partitions is None:
        # exactly-once: a transactional producer per owned partition, so fewer
        args.assignment_partitions = 8 if args.mode == "group-exactly-once" else 16
    faults = schedule.make_schedule(args.seed, args.faults, args.profile, args.min_each, only, members)
    digest = schedule.digest(faults)
    if args.print_schedule:
        print(json.dumps({"seed": args.seed, "digest": digest, "faults": [asdict(f) for f in faults]}, indent=1))
        return 0
    if os.geteuid() != 0:
        print("fault lab: skipped, it needs root (network and mount namespaces)", file=sys.stderr)
        return 77
    args.bridge = os.path.abspath(args.bridge)
    if not os.access(args.bridge, os.X_OK):
        print(f"fault lab: no bridge binary at {args.bridge} (build it, or pass --bridge)", file=sys.stderr)
        return 2
    command = "tests/faults/lab.py " + " ".join(argv)
    tag = f"{os.getpid() % 1000000}"
    work = args.work or tempfile.mkdtemp(prefix="ckb-faults-")
    os.makedirs(work, exist_ok=True)
    log(f"fault lab: seed {args.seed}, {len(faults)} faults ({args.profile}), schedule digest {digest}, work {work}")
    w = World()
    started = time.time()
    rc = 2
    try:
        w = build_world(args, work, tag)
        for m in w.members:
            m.bridge.start()
            m.monitor = Monitor(m.bridge)
            m.monitor.start()
        w.monitor = w.members[0].monitor if not w.group else group.GroupMonitor(w.members, w.databases)
        if w.group:
            w.monitor.start()
        w.toxiproxy_guard = ToxiproxyGuard(w.toxiproxy, log)
        w.toxiproxy_guard.start()
        w.writer.start()
        log(f"world up: pouchdb-server, Kafka, Toxiproxy, namespaces, {len(w.members)} bridge(s); writer running")
        injector = Injector(w, faults, args.recovery_timeout, log)
        injector.run()
        log("schedule done; healing everything")
        heal_everything(w)
        time.sleep(3)
        w.writer.stop()
        took = quiesce(w, args.quiesce_timeout)
        log(f"quiescent after {took if took is None else round(took, 1)} s")
        _, final_statuses = following_status(w)
        final_status = final_statuses[0] if not w.group else group.combined_status(final_statuses, w.databases)
        changes = checker.couch_changes(w.couch.url, w.databases)
        committed_reader = args.read_committed if args.mode in EXACTLY_ONCE else None
        records, header_mismatches = checker.kafka_records(w.kafka.direct, w.topic_prefix, committed_reader)
        found = checker.check(changes, records, w.writer.revs)
        for _ in range(3):  # lost may be "not yet": look again before calling it lost
            if not found["lost"]:
                break
            time.sleep(10)
            records, header_mismatches = checker.kafka_records(w.kafka.direct, w.topic_prefix, committed_reader)
            found = checker.check(changes, records, w.writer.revs)
        w.monitor.stop()
        for m in w.members:
            if m.monitor is not w.monitor:
                m.monitor.stop()
        final_rcs, final_stores = [], []
        for m in w.members:
            with m.bridge.lock:
                m.bridge.signal(signal.SIGTERM)
                final_rcs.append(m.bridge.wait(60))
                final_stores.append(m.bridge.checkpoints_list(m.checkpoint_dir))
        final_store = next((x for x in final_stores if x[0] != 0), final_stores[0])
        if final_store[0] != 0:
            log(f"final `checkpoints list` failed (exit {final_store[0]}):\n{final_store[1]}")
        group_result = group.analyse(w.members, w.databases, final_statuses) if w.group else None
        result = report.Result(
            args=args, command=command, digest=digest, faults=faults, outcomes=injector.outcomes,
            summary=summarize(injector.outcomes), found=found, header_mismatches=header_mismatches,
            final_status=final_status, final_rc=final_rcs[0] if not w.group else final_rcs,
            final_store=final_store, quiesce_s=took,
            kafka_outage_rss_kib=injector.kafka_outage_rss_kib,
            peak_rss_kib=max((s.rss_kib for m in w.members for s in m.monitor.samples), default=0),
            writer=w.writer, bridge=w.bridge if not w.group else group.BridgeTotals(w.members),
            monitor=w.monitor,
            lab_errors=injector.errors + [e for m in w.members for e in m.monitor.errors] + w.toxiproxy_guard.errors,
            toxiproxy_restarts=list(w.toxiproxy.restarts),
            duration_s=time.time() - started, databases=w.databases, group=group_result)
        text, failures = report.render(result)
        print(text)
        if args.report:
            report.write(args.report, text)
            log(f"report written to {args.report}")
        if failures:
            log("FAILED: " + "; ".join(failures) + f" (work dir kept: {work})")
            rc = 1
        else:
            log(f"passed in {time.time() - started:.0f} s")
            rc = 0
        return rc
    except Exception as e:
        log(f"fault lab could not run: {e!r} (work dir kept: {work})")
        import traceback
        traceback.print_exc()
        return 2
    finally:
        teardown(w)
        if rc == 0 and not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
