"""Group mode in the fault lab: several bridge instances share the databases
through a Kafka consumer group. Each instance has its own Monitor (its own
/status, /readyz and RSS, sampled every 0.25 s); this module combines them
into one view of the group for the injector (recovery, visibility) and
checks ownership:

- at the end, every database `following` on exactly one instance;
- during the run, never two instances following one database at once.

An instance's /status lists only the databases it runs. "Following at once"
is judged from samples, which take time: a sample says `following` at some
moment between its request (t) and its answer (t_end). Two or more
consecutive samples of one instance saying `following` for a database make
a *sure* interval, from the first answer to the last request, in which it
followed (a stop and restart between two samples 0.25 s apart would be
missed). A double follow is two instances' sure intervals of one database
overlapping; overlaps of the wider intervals (first request to last answer)
that are not sure are counted apart, as possible."""

import threading
from dataclasses import dataclass

from injector import Sample


class GroupMonitor(threading.Thread):
    """The group seen as one bridge: alive and ready when every instance
    is, a database `following` when exactly one instance follows it (a
    database nobody lists is `unowned`; one that several follow is
    `following on N members`). Same interface as injector.Monitor."""

    def __init__(self, members, databases, period=0.25):
        super().__init__(name="group-monitor", daemon=True)
        self.members, self.databases, self.period = members, databases, period
        self.samples = []
        self.latest = None
        self._halt = threading.Event()

    @property
    def errors(self):
        return [e for m in self.members for e in m.monitor.errors]

    def run(self):
        while not self._halt.is_set():
            s = self.combine([m.monitor.latest for m in self.members])
            if s is not None:
                self.latest = s
                self.samples.append(s)
            self._halt.wait(self.period)

    def combine(self, latest):
        if any(s is None for s in latest):
            return None
        states, in_flight, rows = {}, {}, {}
        for db in self.databases:
            listing = [s for s in latest if db in s.states]
            following = [s for s in listing if s.states[db] == "following"]
            if len(following) == 1:
                states[db] = "following"
            elif following:
                states[db] = f"following on {len(following)} members"
            elif listing:
                states[db] = listing[0].states[db]
            else:
                states[db] = "unowned"
            in_flight[db] = max((s.in_flight.get(db, 0) for s in listing), default=0)
            rows[db] = sum(s.rows_read.get(db, 0) for s in listing)
        return Sample(min(s.t for s in latest), all(s.alive for s in latest), all(s.ready for s in latest),
                      "".join(f"[{i}] {s.readyz}" for i, s in enumerate(latest) if s.readyz), states, in_flight,
                      rows, sum(s.checkpoint_failures for s in latest), max(s.rss_kib for s in latest),
                      max(s.t_end for s in latest))

    def stop(self):
        self._halt.set()
        self.join()

    def between(self, t0, t1):
        return [s for s in self.samples if t0 <= s.t <= t1]


def combined_status(statuses, databases):
    """A /status-like dict of the group: {"databases": {db: {"state": ...}}}."""
    out = {}
    for db in databases:
        listed = [st["databases"][db].get("state") for st in statuses if st and db in st.get("databases", {})]
        following = listed.count("following")
        if following == 1:
            out[db] = {"state": "following"}
        elif following > 1:
            out[db] = {"state": f"following on {following} members"}
        else:
            out[db] = {"state": listed[0] if listed else "unowned"}
    return {"databases": out}


def follow_runs(samples, db):
    """(sure, wide) intervals of consecutive samples saying `following` for db."""
    runs, run = [], []
    for s in samples:
        if s.alive and s.states.get(db) == "following":
            run.append(s)
            continue
        if run:
            runs.append(run)
        run = []
    if run:
        runs.append(run)
    return [((r[0].t_end, r[-1].t) if len(r) > 1 and r[0].t_end < r[-1].t else None, (r[0].t, r[-1].t_end))
            for r in runs]


def double_follows(members, databases):
    """Sure and possible overlaps: lists of (db, member a, member b, start, seconds)."""
    sure, possible = [], []
    for db in databases:
        runs = {m.index: follow_runs(m.monitor.samples, db) for m in members}
        for a in members:
            for b in members:
                if b.index <= a.index:
                    continue
                for sa, wa in runs[a.index]:
                    for sb, wb in runs[b.index]:
                        if sa and sb and max(sa[0], sb[0]) < min(sa[1], sb[1]):
                            start = max(sa[0], sb[0])
                            sure.append((db, a.index, b.index, start, min(sa[1], sb[1]) - start))
                        elif max(wa[0], wb[0]) < min(wa[1], wb[1]):
                            start = max(wa[0], wb[0])
                            possible.append((db, a.index, b.index, start, min(wa[1], wb[1]) - start))
    return sure, possible


@dataclass
class GroupResult:
    members: int
    final_owners: dict  # db -> [member indexes following it at the end]
    sure: list
    possible: list
    rebalances: list  # per member, from its final /status (None if it did not answer)
    starts: list  # per member


def analyse(members, databases, final_statuses):
    owners = {db: [m.index for m, st in zip(members, final_statuses)
                   if st and st.get("databases", {}).get(db, {}).get("state") == "following"] for db in databases}
    sure, possible = double_follows(members, databases)
    rebalances = [(st or {}).get("group", {}).get("rebalances") for st in final_statuses]
    return GroupResult(len(members), owners, sure, possible, rebalances, [m.bridge.starts for m in members])


class BridgeTotals:
    """The report's bridge counters summed over the instances."""

    def __init__(self, members):
        bridges = [m.bridge for m in members]
        self.starts = sum(b.starts for b in bridges)
        self.startup_failures = sum(b.startup_failures for b in bridges)
        self.unexpected_exits = [x for b in bridges for x in b.unexpected_exits]
        self.double_starts = sum(b.double_starts for b in bridges)


def report_lines(g, t0):
    """The group section of the report and its failed checks."""
    failures = []
    bad_final = {db: o for db, o in g.final_owners.items() if len(o) != 1}
    if bad_final:
        failures.append(f"group: databases not following on exactly one member at the end: {bad_final}")
    if g.sure:
        failures.append(f"group: {len(g.sure)} time(s) two members followed one database at once "
                        f"(first: {_overlap(g.sure[0], t0)})")
    lines = [
        f"- Group mode: {g.members} bridge instances in one consumer group (starts per instance {g.starts}, "
        f"rebalances seen by each at the end {g.rebalances}); at the end every database was `following` on "
        + ("exactly one member: " if not bad_final else "NOT exactly one member: ")
        + ", ".join(f"{db} on {o}" for db, o in sorted(g.final_owners.items())) + ".",
        f"- Two members following one database at once (from every member's `/status`, sampled every 0.25 s): "
        f"{len(g.sure)} sure overlaps" + (f" ({'; '.join(_overlap(x, t0) for x in g.sure[:5])})" if g.sure else "")
        + f"; {len(g.possible)} possible ones, within the sampling uncertainty"
        + (f" ({'; '.join(_overlap(x, t0) for x in g.possible[:5])})" if g.possible else "") + ".",
    ]
    return lines, failures


def _overlap(x, t0):
    db, a, b, start, length = x
    return f"{db} on members {a} and {b} at {start - t0:.1f} s for {length:.2f} s"
