"""The report of bench/run (issue #7): the goals, the markdown tables, the
machine and versions, and the write of docs/BENCHMARKS.md that keeps the
sections other scenarios wrote and the notes kept across runs. Standard
library only; the scenarios themselves are in harness.py (and pace.py, fleet.py).
"""

import datetime
import os
import platform
import re
import subprocess
import sys

import fleet

GOALS = {
    "changes_per_s": 100_000,
    "cpu_us_per_change": 10.0,
    "ratio": 50.0,
    "idle_rss_mib": 256.0,
    "idle_cpu_pct": 2.0,
}


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


def percent(share):
    return "n/a" if share is None else "%.0f" % (share * 100)


def loop_shares(loop):
    """The event loop's time on a CPU / runnable but waiting for one /
    asleep, in % of the window (measure.busiest_thread_shares)."""
    if not loop:
        return "n/a"
    return " / ".join(percent(loop[k]) for k in ("on_cpu", "run_queue", "asleep"))


def pace_table(rows):
    variants = any(p.get("variant") for p in rows)
    head = ["pace", "databases", "changes"] + (["bridge"] if variants else []) + [
        "plain read changes/s", "plain read CPU µs/change", "bridge changes/s", "bridge CPU µs/change",
        "bridge context switches/change", "catch-up ÷ plain read", "row→ack p50 ms", "row→ack p99 ms",
        "source CPU µs/change", "loop on CPU / run queue / asleep %", "machine idle %"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for p in rows:
        cells = [p["pace"], "%d" % p["databases"], fmt(p["changes"])] + ([p.get("variant", "")] if variants else []) + [
            fmt(p["read_changes_per_s"], 0), fmt(p["read_cpu_us_per_change"], 2), fmt(p["bridge_changes_per_s"], 0),
            fmt(p["bridge_cpu_us_per_change"], 2), fmt(p.get("switches_per_change"), 2),
            "%s×" % fmt(p["ratio"], 2) if p["ratio"] is not None else "n/a",
            fmt(p.get("latency_p50_ms"), 2), fmt(p.get("latency_p99_ms"), 2),
            fmt(p["source_cpu_us_per_change"], 2), loop_shares(p.get("loop")), percent(p.get("machine_idle"))]
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
             "scenario. Loop: the bridge's busiest thread (its event loop) over the catch-up, from "
             "/proc/<pid>/task/*/schedstat: on a CPU, runnable but waiting for a CPU (the machine is busy), and "
             "asleep (waiting for the source, Kafka or a timer); machine idle: every CPU's, from /proc/stat.", "",
             "The `following` rows measure the bridge on a live feed, where issue #16's latency goal (row→ack "
             "p99 ≤ 10 ms at 200 changes/s) applies: `bench-source --couchdb-like --live-interval-ms I` adds one "
             "change per I ms to every database after a backlog of %s changes each. Once every database is "
             "`following` in the bridge's `/status` with its backlog acknowledged, and %s s later, the figures are "
             "taken over %s s of live changes (changes = those delivered in the window; no plain read). Row→ack "
             "is the change of `couch_bridge_row_ack_latency_seconds` over the window (catch-up rows: after the "
             "first tenth of the changes), interpolated in its buckets."
             % (fmt(runner.size["follow_backlog"]), fmt(runner.size["follow_settle_s"]),
                fmt(runner.size["follow_window_s"])), "",
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
