"""The fleet scenario of bench/run (issue #11): discovery of many databases.

bench-source serves K databases with `_all_dbs` (paged) and `_db_updates`,
and caps its open continuous feeds at the bridge's --max-open-feeds, past
which it answers `500 emfile` as a CouchDB out of file handles does. The
bridge follows them by pattern (`--db-pattern`), so it discovers them all.
Measured:
  - the time from the bridge's start until every database has a checkpoint
    (each database's changes acknowledged by Kafka);
  - the bridge's peak and idle resident memory, its idle CPU;
  - the connections open to the source (sampled by the source itself) during
    the catch-up and while idle, the feeds the source refused, the most feeds
    open at once;
  - the latency from a write to an idle database (POST /_bench/write) to its
    record: arrival at a consumer (`couch-kafka-bridge tail`) minus the time
    just before the write.
Timings are reported, never judged pass/fail; the scenario fails only when
the bridge does not catch up at all.
"""

import json
import random
import subprocess
import threading
import time
import urllib.request

FLEET_BEGIN = "<!-- fleet:begin (written by bench/run --scenarios fleet) -->"
FLEET_END = "<!-- fleet:end -->"

# couch::client_options::max_kept: the client's kept-alive connections.
POOL_SIZE = 32
# The doc types of bench-source's documents (bench/source/docgen.cpp), whose
# topics the latency consumer reads (--routing prefix:<p> gives <p><type>).
DOC_TYPES = ["CommCareCase", "XFormInstance", "CommCareUser", "WebUser", "Domain", "Group", "Location",
             "Application", "CommCareCase-Deleted", "XFormArchived", "SyncLog", "BenchUnknownType"]


def get_json(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def post_json(url, timeout=10):
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def fleet_view(port, seq):
    """(databases whose checkpoint is `seq`, feeds open, idle ones, the idle names)."""
    dbs = get_json("http://127.0.0.1:%d/databases" % port, timeout=60)["databases"]
    at = sum(1 for d in dbs.values() if d.get("checkpoint") == seq)
    idle = [name for name, d in dbs.items() if d.get("feed") == "idle"]
    opened = sum(1 for d in dbs.values() if d.get("feed") == "open")
    return at, opened, len(idle), idle


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else None


def run(runner, h):
    """Runs the scenario with `runner` (harness.Runner); `h` is the harness
    module (its helpers). Stores runner.results["fleet"]."""
    s = runner.size
    dbs, changes, cap = s["fleet_dbs"], s["fleet_changes"], s["fleet_max_open_feeds"]
    writes, idle_window = s["fleet_latency_writes"], s["fleet_idle_window_s"]
    h.log("fleet: %d databases x %d changes, discovered by pattern, --max-open-feeds %d" % (dbs, changes, cap))
    source, url = runner.start_source("source-fleet", dbs, changes,
                                      ["--max-open-feeds", str(cap), "--deleted-permille", "0"])
    prefix = "fleet%d-" % int(time.time())
    args = ["--db-pattern", "bench-.*", "--max-open-feeds", str(cap), "--idle-close", str(s["fleet_idle_close_ms"]),
            "--routing", "prefix:" + prefix]
    t0 = time.monotonic()
    bridge, port = runner.start_bridge("bridge-fleet", url, [],
                                       dict(name="", binary=runner.args.bridge_binary, args=args))
    seq = str(changes)

    # 1. Catch-up: until every database has a checkpoint at its last change.
    most_conn, at, last_progress, last_at = 0, 0, time.monotonic(), -1
    progress = []
    while at < dbs:
        if bridge.poll() is not None:
            raise h.Scenario_failed("the bridge exited with %s during the fleet catch-up" % bridge.returncode)
        try:
            at, opened, idle, _ = fleet_view(port, seq)
        except OSError:
            at = 0
        st = get_json(url + "/_bench/stats")
        most_conn = max(most_conn, st["open_connections"] - 1)  # minus this request's
        now = time.monotonic()
        progress.append((round(now - t0, 1), at))
        if at > last_at:
            last_at, last_progress = at, now
        elif now - last_progress > 120:
            raise h.Scenario_failed("fleet: no progress for 120 s, %d of %d databases caught up" % (at, dbs))
        if at < dbs:
            time.sleep(1.0)
    caught_up_s = time.monotonic() - t0
    mem_catch_up = h.memory_kib(bridge.pid)
    st_catch_up = get_json(url + "/_bench/stats")
    h.log("fleet: every database has a checkpoint after %.1f s" % caught_up_s)

    # 2. Idle: wait for the feeds beyond the cap to close, then sample.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        at, opened, idle, idle_names = fleet_view(port, seq)
        if idle >= dbs - cap:
            break
        time.sleep(1.0)
    cpu0, w0 = h.cpu_seconds(bridge.pid), time.monotonic()
    idle_conn = []
    while time.monotonic() - w0 < idle_window:
        idle_conn.append(get_json(url + "/_bench/stats")["open_connections"] - 1)
        time.sleep(0.5)
    idle_cpu_pct = 100.0 * (h.cpu_seconds(bridge.pid) - cpu0) / (time.monotonic() - w0)
    mem_idle = h.memory_kib(bridge.pid)
    at, opened, idle, idle_names = fleet_view(port, seq)

    # 3. Latency: writes to idle databases, one every 300 ms, each read back
    #    by a consumer of the routed topics.
    topics = []
    for t in DOC_TYPES:
        topics += ["--topic", prefix + t]
    consumer = subprocess.Popen([runner.args.bridge_binary, "tail", "--kafka-brokers", runner.args.brokers,
                                 "--timeout-ms", "600000"] + topics,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    runner.procs.append(consumer)
    arrived = {}

    def read():
        for line in consumer.stdout:
            t = time.time()
            try:
                arrived.setdefault(json.loads(line)["value"]["document_id"], t)
            except (ValueError, KeyError, TypeError):
                continue

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Let the consumer reach the end of the topics first (the catch-up's
    # records), so arrival times are live ones.
    settle = time.monotonic() + 60
    while time.monotonic() < settle and len(arrived) < dbs * changes:
        time.sleep(0.5)
    written = {}
    rng = random.Random(42)
    for db in rng.sample(idle_names, min(writes, len(idle_names))):
        t = time.time()
        answer = post_json("%s/_bench/write?db=%s" % (url, db))
        written[answer["ids"][0]] = t
        time.sleep(0.3)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(i not in arrived for i in written):
        time.sleep(0.2)
    latencies = [arrived[i] - t for i, t in written.items() if i in arrived]
    consumer.kill()
    consumer.wait()
    runner.procs.remove(consumer)
    st_end = get_json(url + "/_bench/stats")
    rc = runner.stop(bridge)
    runner.stop(source)
    runner.results["fleet"] = dict(
        databases=dbs, changes=changes, max_open_feeds=cap, idle_close_ms=s["fleet_idle_close_ms"],
        caught_up_s=caught_up_s, progress=progress[::max(1, len(progress) // 20)],
        peak_rss_mib=mem_idle.get("VmHWM", 0) / 1024, catch_up_rss_mib=mem_catch_up.get("VmRSS", 0) / 1024,
        idle_rss_mib=mem_idle.get("VmRSS", 0) / 1024, idle_cpu_pct=idle_cpu_pct,
        catch_up_max_connections=most_conn, source_peak_connections=st_catch_up["peak_open_connections"],
        idle_max_connections=max(idle_conn) if idle_conn else None, open_feeds=opened, idle_feeds=idle,
        connections_accepted=st_end["connections_accepted"], requests=st_end["requests"],
        emfile_refusals=st_end["emfile_refusals"], peak_open_feeds=st_end["peak_open_feeds"],
        writes=len(written), latencies_seen=len(latencies),
        latency_p50_ms=1000 * percentile(latencies, 0.50) if latencies else None,
        latency_p99_ms=1000 * percentile(latencies, 0.99) if latencies else None,
        latency_max_ms=1000 * max(latencies) if latencies else None, exit_code=rc)


def section(command, mode, f, h):
    """The marked report section of runner.results["fleet"] `f`."""
    budget = f["max_open_feeds"] + POOL_SIZE

    def goal(label, want, got, ok):
        return "| %s | %s | %s | %s |" % (label, want, got, h.met(ok))

    lat_ok = f["latency_p99_ms"] is not None and f["latency_p99_ms"] <= 1000 and f["latencies_seen"] == f["writes"]
    lines = [
        FLEET_BEGIN,
        "## Fleet discovery: %s databases" % h.fmt(f["databases"]),
        "",
        "Generated by `%s` (mode: %s) on %s UTC." % (command, mode, time.strftime("%Y-%m-%d %H:%M", time.gmtime())),
        "",
        "Source: `bench-source --databases %d --changes %d --deleted-permille 0 --max-open-feeds %d`: `_all_dbs` "
        "(paged), `_db_updates`, and at most %d continuous feeds open at once (beyond: `500 emfile`). Bridge: "
        "`--db-pattern 'bench-.*' --max-open-feeds %d --idle-close %d`, a fresh checkpoint directory, so every "
        "database is discovered. Connections are counted by the source (those it has open, minus the stats "
        "request). Latency: a write (`POST /_bench/write`) to an idle database, one every 300 ms, to the "
        "record's arrival at a `couch-kafka-bridge tail` consumer."
        % (f["databases"], f["changes"], f["max_open_feeds"], f["max_open_feeds"], f["max_open_feeds"],
           f["idle_close_ms"]),
        "",
        "| goal | target | measured | met |",
        "|---|---|---|---|",
        goal("every database has a checkpoint", "≤ 60 s", "%s s" % h.fmt(f["caught_up_s"]), f["caught_up_s"] <= 60),
        goal("bridge resident memory", "≤ 1 GiB", "peak %s MiB, idle %s MiB" % (h.fmt(f["peak_rss_mib"]),
                                                                                 h.fmt(f["idle_rss_mib"])),
             f["peak_rss_mib"] <= 1024),
        goal("connections to the source while idle", "≤ %d (--max-open-feeds + pool %d)" % (budget, POOL_SIZE),
             h.fmt(f["idle_max_connections"]), f["idle_max_connections"] is not None and
             f["idle_max_connections"] <= budget),
        goal("write to an idle database → its record, p99", "≤ 1 s",
             "p50 %s ms, p99 %s ms, max %s ms (%d of %d writes)" % (
                 h.fmt(f["latency_p50_ms"], 0), h.fmt(f["latency_p99_ms"], 0), h.fmt(f["latency_max_ms"], 0),
                 f["latencies_seen"], f["writes"]), lat_ok),
        "",
        "During the catch-up: at most %s connections open to the source (sampled each second; the source's own "
        "peak, which counts its stats requests too: %s), %s feeds at most open at once, %s refused with "
        "`emfile`; %s requests over %s connections in the whole run. Idle: %s feeds open, %s databases idle, "
        "bridge CPU %s %% of a core. Databases with a checkpoint over time (s, count): %s."
        % (h.fmt(f["catch_up_max_connections"]), h.fmt(f["source_peak_connections"]), h.fmt(f["peak_open_feeds"]),
           h.fmt(f["emfile_refusals"]), h.fmt(f["requests"]), h.fmt(f["connections_accepted"]),
           h.fmt(f["open_feeds"]), h.fmt(f["idle_feeds"]), h.fmt(f["idle_cpu_pct"], 2),
           ", ".join("%s: %s" % (t, n) for t, n in f["progress"])),
        "",
        FLEET_END,
    ]
    return "\n".join(lines)


def splice_marked(text, begin, end, sec):
    """Puts `sec` in place of the section of `text` between the markers
    `begin` and `end`, or before "## How it is measured", or at the end."""
    if begin in text and end in text:
        return text.split(begin, 1)[0] + sec + text.split(end, 1)[1]
    anchor = "## How it is measured"
    if anchor in text:
        before, after = text.split(anchor, 1)
        return before + sec + "\n\n" + anchor + after
    return text.rstrip("\n") + "\n\n" + sec + "\n"


def splice(text, sec):
    return splice_marked(text, FLEET_BEGIN, FLEET_END, sec)


def kept_section(old):
    """The fleet section of a previous report, or ""."""
    if FLEET_BEGIN in old and FLEET_END in old:
        return FLEET_BEGIN + old.split(FLEET_BEGIN, 1)[1].split(FLEET_END, 1)[0] + FLEET_END
    return ""
