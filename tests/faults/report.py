"""Turns a lab run into the Markdown report (docs/FAULTS.md) and the list of
failed checks. Lost changes are attributed to the faults active when the
writer wrote them, extra copies (duplicates) to the faults active when they
were published; with overlapping faults one change can count for several
kinds, so the per-kind columns may add up to more than the totals."""

import statistics
import time
from dataclasses import dataclass

import group
import schedule


@dataclass
class Result:
    args: object
    command: str
    digest: str
    faults: list
    outcomes: list
    summary: dict
    found: dict
    header_mismatches: int
    final_status: dict
    final_rc: object
    final_store: tuple
    quiesce_s: object
    kafka_outage_rss_kib: int
    peak_rss_kib: int
    writer: object
    bridge: object
    monitor: object
    lab_errors: list
    duration_s: float
    databases: list
    toxiproxy_restarts: list = None  # (time, reason)
    group: object = None  # group.GroupResult in group mode


# A fault's influence: from its start until it recovered (or was healed),
# plus a margin for what was in flight.
MARGIN_S = 5.0


def _windows(outcomes):
    out = []
    for o in outcomes:
        if o.started:
            end = max(o.recovered or 0, o.healed or 0) + MARGIN_S
            out.append((o.started, end, o.fault.kind))
    return out


def _attribute(times, windows):
    per_kind = {}
    for t in times:
        for k in {kind for a, b, kind in windows if a <= t <= b}:
            per_kind[k] = per_kind.get(k, 0) + 1
    return per_kind


def _fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def render(r):
    a, f = r.args, r.found
    windows = _windows(r.outcomes)
    write_time = {(db, i, rev): t for t, db, i, rev in r.writer.revs}
    lost_by_kind = _attribute([write_time[k] for k in f["lost"] if k in write_time], windows)
    extra_copies = []
    for copies in f["duplicates"].values():
        extra_copies += sorted(c["published"] for c in copies)[1:]
    dup_by_kind = _attribute(extra_copies, windows)

    failures = []
    if f["lost"]:
        failures.append(f"{len(f['lost'])} change(s) lost")
    if f["phantoms"]:
        failures.append(f"{len(f['phantoms'])} record(s) for documents/revisions CouchDB never had")
    if a.mode in ("exactly-once", "group-exactly-once") and f["duplicate_count"]:
        failures.append(f"{f['duplicate_count']} duplicate(s) in exactly-once mode")
    if r.header_mismatches:
        failures.append(f"{r.header_mismatches} record(s) whose key/headers disagree with the value")
    # Group mode at-least-once allows it: an instance cut off (paused,
    # partitioned) may deliver records it produced before, after the next
    # owner's (exactly-once fences it instead).
    if f["stale_last"] and a.mode != "group":
        failures.append(f"{len(f['stale_last'])} document(s) whose last record in its partition is an older "
                        "revision than the current one")
    states = {db: (r.final_status or {}).get("databases", {}).get(db, {}).get("state") for db in r.databases}
    if any(s != "following" for s in states.values()):
        failures.append(f"final /status not following everywhere: {states}")
    # A bridge that dies of a signal on SIGTERM (other than the lab's SIGKILL
    # after a hang, -9) crashed on its way out: abort, segfault.
    finals = r.final_rc if isinstance(r.final_rc, list) else [r.final_rc]
    crashes = [o.notes.get("exit_code") for o in r.outcomes if o.fault.kind == "bridge_sigterm"]
    crashes = [c for c in crashes + finals if isinstance(c, int) and c < 0 and c != -9]
    if crashes:
        failures.append(f"the bridge died of a signal on SIGTERM {len(crashes)} time(s) (exit codes {crashes}: "
                        "-6 abort, -11 segfault)")
    if r.bridge.unexpected_exits:
        failures.append(f"the bridge exited by itself {len(r.bridge.unexpected_exits)} time(s)")
    if r.kafka_outage_rss_kib > a.rss_limit_mib * 1024:
        failures.append(f"peak RSS while Kafka was unreachable {r.kafka_outage_rss_kib // 1024} MiB > "
                        f"{a.rss_limit_mib} MiB")
    disk = [o for o in r.outcomes if o.fault.kind == "disk_full"]
    bad_store = [o.fault.index for o in disk if not o.notes.get("store_reopened")]
    if bad_store:
        failures.append(f"checkpoint store did not reopen cleanly after disk-full fault(s) {bad_store}")
    group_lines = []
    if r.group:
        t0 = min((o.started for o in r.outcomes if o.started), default=0.0)
        group_lines, group_failures = group.report_lines(r.group, t0)
        failures += group_failures
    if r.final_store[0] != 0:
        failures.append(f"final `checkpoints list` failed: {r.final_store[1][-300:]}")
    not_recovered = [o.fault.index for o in r.outcomes if not o.recovered and not o.notes.get("skipped")]
    if not_recovered:
        failures.append(f"no recovery within {a.recovery_timeout:.0f} s after fault(s) {not_recovered}")
    counts = {k: v["injected"] for k, v in r.summary.items()}
    wanted = a.kinds.split(",") if a.kinds else sorted(schedule.KINDS)
    short = [k for k in wanted if counts.get(k, 0) < a.min_each]
    if short:
        failures.append(f"kinds injected fewer than {a.min_each} times: {short}")
    if r.quiesce_s is None:
        failures.append(f"not quiescent within {a.quiesce_timeout:.0f} s after healing")
    if r.bridge.double_starts:
        failures.append(f"lab error: {r.bridge.double_starts} start(s) while a bridge was still running")
    if r.lab_errors:
        failures.append(f"lab errors: {r.lab_errors[:3]}")

    lines = [
        "# Fault lab results",
        "",
        "Written by `tests/faults/lab.py` (the fault lab, issue 14). Replay with the same seed: the schedule",
        "is a pure function of (seed, faults, profile); its digest is below.",
        "",
        f"- command: `{r.command}`",
        f"- seed {a.seed}, profile `{a.profile}`, {len(r.faults)} faults, schedule digest `{r.digest}`, "
        f"mode `{a.mode}`",
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {r.duration_s:.0f} s in all; "
        f"{len(r.databases)} databases, writer {a.writes_per_s:g} writes/s "
        f"({', '.join(f'{k} {v}' for k, v in r.writer.ops.items())}; {r.writer.errors} writer errors while "
        "CouchDB was down)",
        *([f"- group: {r.group.members} bridge instances, `--group <name> --checkpoint-store kafka "
           f"--assignment-partitions {a.assignment_partitions} --group-session-timeout {a.session_timeout_ms}"
           + (" --delivery exactly-once" if a.mode == "group-exactly-once" else "") + "`; the bridge's faults, "
           "partitions and full disks hit one instance each (drawn from the seed); toxics and server restarts "
           "hit all"] if r.group else []),
        f"- bridge: `--couch-heartbeat {a.heartbeat_ms} --max-in-flight {a.max_in_flight} --checkpoint-interval 200 "
        f"--shutdown-timeout 5000`, checkpoints on a {a.tmpfs_mib} MiB tmpfs; {r.bridge.starts} starts, "
        f"{r.bridge.startup_failures} failed starts, {len(r.bridge.unexpected_exits)} unexpected exits",
        "",
        "| fault | injected | survived | seen in /status | lost | duplicates | recover median s | recover max s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in sorted(r.summary):
        s = r.summary[kind]
        lines.append(f"| {kind} | {s['injected']} | {s['survived']} | {s['visible']} | {lost_by_kind.get(kind, 0)} | "
                     f"{dup_by_kind.get(kind, 0)} | {_fmt(s['recover_median'])} | {_fmt(s['recover_max'])} |")
    skipped = sum(s.get("skipped", 0) for s in r.summary.values())
    total_inj = sum(s["injected"] for s in r.summary.values())
    total_surv = sum(s["survived"] for s in r.summary.values())
    total_vis = sum(s["visible"] for s in r.summary.values())
    lines.append(f"| **all** | {total_inj} | {total_surv} | {total_vis} | {len(f['lost'])} | {f['duplicate_count']} | | |")
    lines += [
        "",
        "Survived: the bridge was back to `/readyz` 200 with every feed `following` within "
        f"{a.recovery_timeout:.0f} s of the heal. Recovery time runs from the heal (the link back up, the process "
        "restarted, the toxic removed, the space freed) to that moment; overlapping faults lengthen it. Lost and "
        "duplicates per kind are attributed by time (see the top of `tests/faults/report.py`). Seen in /status: while "
        "the fault lasted, a sample of `/readyz` and `/status` (every 0.25 s) showed it: the bridge down, `/readyz` 503, "
        "a feed not `following`, a full in-flight window or a failing checkpoint write.",
        "",
        *([f"{skipped} scheduled toxic(s) were not injected: Toxiproxy refused them (503 after 25 s) while a "
           "link was stalled, or was being restarted; they are left out of the table.", ""] if skipped else []),
        *_toxiproxy(r),
        "## Checks",
        "",
        f"- CouchDB `_changes`: {f['expected']} current (database, id, rev); Kafka: {f['records']} records, "
        f"{f['unique']} distinct; **lost {len(f['lost'])}**, duplicates {f['duplicate_count']} "
        f"({len(f['duplicates'])} changes published more than once), records for documents or revisions CouchDB "
        f"never had: {len(f['phantoms'])}, key/header mismatches: {r.header_mismatches}; documents whose last "
        f"record in its partition is an older revision than the current one: {len(f['stale_last'])}.",
        f"- Quiescent {_fmt(r.quiesce_s)} s after the heal; final `/status`: "
        + ", ".join(f"{db} `{s}`" for db, s in states.items()) + f"; final SIGTERM exit code {r.final_rc}; "
        f"`checkpoints list` on the final store: exit {r.final_store[0]}.",
        f"- Peak RSS while Kafka was unreachable: {r.kafka_outage_rss_kib / 1024:.0f} MiB (limit {a.rss_limit_mib} MiB);"
        f" peak over the run {r.peak_rss_kib / 1024:.0f} MiB.",
    ]
    lines += group_lines + _watchdog(r) + _kafka_window(r) + _disk(r) + _sigterm(r)
    if failures:
        lines += ["", "## Failed checks", ""] + [f"- {x}" for x in failures]
    lines += _store_evidence(r, bad_store)
    if f["lost"]:
        lines += ["", "First lost changes: " + ", ".join(str(k) for k in f["lost"][:10])]
    if f["phantoms"]:
        lines += ["", "First phantom records: " + ", ".join(str(k) for k in f["phantoms"][:10])]
    if f["stale_last"]:
        lines += ["", "First documents ending on an older revision: " + ", ".join(str(k) for k in f["stale_last"][:10])]
    return "\n".join(lines) + "\n", failures


KEEP_MARKER = "<!-- end of the generated part; what follows is kept when the lab rewrites this file -->"


def write(path, text):
    """Writes the report to path, keeping whatever an earlier file had after
    KEEP_MARKER (hand-written findings)."""
    kept = ""
    try:
        with open(path) as f:
            old = f.read()
        if KEEP_MARKER in old:
            kept = old.split(KEEP_MARKER, 1)[1]
    except FileNotFoundError:
        pass
    with open(path, "w") as f:
        f.write(text + "\n" + KEEP_MARKER + kept)


def _store_evidence(r, bad_store):
    """What `checkpoints list` said when a store check failed: the next
    failure is then diagnosable from the report alone."""
    out = []
    for o in r.outcomes:
        if o.fault.index in bad_store:
            c = o.notes.get("store_check", {})
            out += ["", f"Store check after disk-full fault {o.fault.index}: `checkpoints list` exit {c.get('exit')}, "
                    f"databases missing {c.get('missing')}; its output (last 3,000 characters):", "", "```",
                    (c.get("output") or "(nothing)").rstrip(), "```"]
    if r.final_store[0] != 0:
        out += ["", f"Final `checkpoints list`: exit {r.final_store[0]}; its output:", "", "```",
                r.final_store[1][-3000:].rstrip(), "```"]
    return out


def _toxiproxy(r):
    restarts = r.toxiproxy_restarts or []
    cut_short = sum(1 for o in r.outcomes if o.notes.get("cut_short_by_restart"))
    if not restarts:
        return ["Toxiproxy answered its API throughout: no restart.", ""]
    t0 = min((o.started for o in r.outcomes if o.started), default=restarts[0][0])
    when = ", ".join(f"{t - t0:.0f}" for t, _ in restarts)
    return [f"Toxiproxy was restarted {len(restarts)} time(s) by the lab's guard (its API had stopped answering: the "
            f"v2.12.0 deadlock described in `tests/faults/servers.py`), at {when} s into the schedule; each restart "
            f"dropped every connection through it (an extra reset for the bridge) and ended {cut_short} toxic(s) "
            "early in all.", ""]


def _watchdog(r):
    hb = r.args.heartbeat_ms / 1000
    parts = [o for o in r.outcomes if o.fault.kind == "partition_couch"]
    long_enough = [o for o in parts if o.fault.duration > 2 * hb + 2 and o.notes.get("clean_start")]
    detected = [o.notes["detected_after"] for o in long_enough if "detected_after" in o.notes]
    line = (f"- Silent partition to CouchDB (heartbeat {hb:g} s, watchdog expected at {2 * hb:g} s): "
            f"{len(detected)} of {len(long_enough)} partitions longer than {2 * hb + 2:g} s that began with every feed "
            "`following` were seen in `/status` (a feed left `following`)")
    if detected:
        line += (f" after {min(detected):.1f} / {statistics.median(detected):.1f} / {max(detected):.1f} s "
                 "(min / median / max, sampled every 0.25 s)")
    return [line + "."]


def _kafka_window(r):
    parts = [o for o in r.outcomes if o.fault.kind == "partition_kafka"]
    full = [o for o in parts if "window_full_for" in o.notes]
    peaks = [o.notes.get("peak_in_flight", 0) for o in parts]
    line = (f"- Silent partition to Kafka (window {r.args.max_in_flight} records per database): peak in flight "
            f"{max(peaks, default=0)}; the window filled in {len(full)} of {len(parts)} partitions")
    if full:
        moved = sum(1 for o in full if o.notes["read_while_full"])
        rss = [o.notes["rss_while_full_kib"] for o in full]
        growth = max(b - a for a, b in rss)
        line += (f", and reading stopped while it was full in {len(full) - moved} of them (rows read flat for up to "
                 f"{max(o.notes['window_full_for'] for o in full):.1f} s; RSS growth while full at most "
                 f"{growth / 1024:.1f} MiB)")
    return [line + "."]


def _disk(r):
    disk = [o for o in r.outcomes if o.fault.kind == "disk_full"]
    if not disk:
        return []
    shown = sum(1 for o in disk if o.notes.get("readyz_showed_it"))
    status = sum(1 for o in disk if o.notes.get("status_showed_it"))
    resumed = [o.notes["checkpoints_resumed_after"] for o in disk if "checkpoints_resumed_after" in o.notes]
    reopened = sum(1 for o in disk if o.notes.get("store_reopened"))
    restarts = [o.notes["started_on_full_disk"] for o in disk if "started_on_full_disk" in o.notes]
    free = [o.notes.get("free_kib_when_full") for o in disk]
    return [f"- Checkpoint disk full ({len(disk)} episodes, free KiB right after filling: {sorted(set(free))}): shown in `/readyz` in {shown}, in `/status` "
            f"`checkpoints.consecutive_failures` in {status}; checkpoints written again after the space came back in "
            f"{len(resumed)} (after {_fmt(max(resumed, default=None))} s at most); the store reopened cleanly "
            f"(`checkpoints list` with the bridge down, listing every database whose checkpoint `/status` showed "
            f"before the disk filled) after {reopened} of {len(disk)}"
            f"{_not_yet(disk)}. Killed and restarted while the "
            f"disk was full: {len(restarts)} times, it came up {sum(restarts)} times (otherwise it kept exiting "
            "until the space came back; the lab counts those as failed starts)."]


def _not_yet(disk):
    n = sum(1 for o in disk if o.notes.get("store_not_yet_checkpointed"))
    return f" ({n} episode(s) began before some database had a first checkpoint)" if n else ""


def _sigterm(r):
    terms = [o for o in r.outcomes if o.fault.kind == "bridge_sigterm"]
    if not terms:
        return []
    codes = [o.notes.get("exit_code") for o in terms]
    hung = sum(1 for o in terms if o.notes.get("hung_on_sigterm"))
    return [f"- SIGTERM exit codes: {codes} (1 = the shutdown timeout passed with records unacknowledged, e.g. "
            f"while Kafka was cut off: they are sent again at the next start); hung: {hung}."]
