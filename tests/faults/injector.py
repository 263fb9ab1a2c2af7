"""Runs a schedule against the lab's world: one thread per fault (it waits
for its start time, then for its resource), one monitor thread that samples
the bridge's /readyz, /status and RSS and restarts the bridge if it exits
without being asked to (counted as a crash)."""

import signal
import statistics
import threading
import time
from dataclasses import dataclass, field

from schedule import KAFKA_UNREACHABLE


@dataclass
class Sample:
    t: float
    alive: bool
    ready: bool
    readyz: str
    states: dict  # db -> state
    in_flight: dict
    rows_read: dict
    checkpoint_failures: int
    rss_kib: int
    t_end: float = 0.0  # when the answers arrived


@dataclass
class Outcome:
    fault: object
    started: float = 0.0
    healed: float = 0.0
    recovered: float = 0.0  # 0: not within the recovery timeout
    notes: dict = field(default_factory=dict)


class Monitor(threading.Thread):
    def __init__(self, bridge, period=0.25):
        super().__init__(name="monitor", daemon=True)
        self.bridge, self.period = bridge, period
        self.samples = []
        self.latest = None
        self.restarts_after_crash = 0
        self.errors = []
        # db -> when /status first showed a checkpoint for it (what a store
        # check may expect to find once the flusher ran)
        self.checkpointed_at = {}
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.latest = self.sample()
            self.samples.append(self.latest)
            if self.bridge.crashed and self.bridge.lock.acquire(blocking=False):
                try:  # it exited by itself and no fault holds it: start it again
                    if self.bridge.crashed:
                        self.bridge.crashed = False
                        self.restarts_after_crash += 1
                        self.bridge.start()
                except RuntimeError as e:  # did not come back: retried on the next sample
                    self.bridge.crashed = True
                    self.errors.append(str(e))
                finally:
                    self.bridge.lock.release()
            self._halt.wait(self.period)

    def sample(self):
        t = time.time()  # when the question was asked: a stopped bridge answers late
        alive = self.bridge.check_alive()
        code, text = self.bridge.ready() if alive else (None, "")
        st = self.bridge.status() if alive else None
        dbs = (st or {}).get("databases", {})
        for d, v in dbs.items():
            if v.get("checkpoint_seq") and d not in self.checkpointed_at:
                self.checkpointed_at[d] = t
        return Sample(t, alive, code == 200, text if code != 200 else "",
                      {d: v.get("state") for d, v in dbs.items()},
                      {d: v.get("in_flight", 0) for d, v in dbs.items()},
                      {d: v.get("rows_read", 0) for d, v in dbs.items()},
                      (st or {}).get("checkpoints", {}).get("consecutive_failures", 0), self.bridge.rss_kib(),
                      time.time())

    def stop(self):
        self._halt.set()
        self.join()

    def between(self, t0, t1):
        return [s for s in self.samples if t0 <= s.t <= t1]


class ToxiproxyGuard(threading.Thread):
    """Restarts Toxiproxy when its API has not answered for `patience`
    seconds (see servers.Toxiproxy: v2.12.0 deadlocks for good under some
    overlaps of toxics with stalled links). A toxic change may legitimately
    hold the API for up to 25 s while a link drains, hence the patience."""

    def __init__(self, toxiproxy, log, period=5.0, probe_timeout=5.0, patience=45.0):
        super().__init__(name="toxiproxy-guard", daemon=True)
        self.t, self.log = toxiproxy, log
        self.period, self.probe_timeout, self.patience = period, probe_timeout, patience
        self.errors = []
        self._halt = threading.Event()

    def run(self):
        silent_since = None
        while not self._halt.wait(self.period):
            if self.t.responsive(self.probe_timeout):
                silent_since = None
                continue
            if self.t.proc.poll() is not None:  # it crashed (v2.12.0 has panics too): no point waiting
                self.restart(f"it exited with status {self.t.proc.returncode}")
                silent_since = None
                continue
            now = time.time()
            silent_since = silent_since or now - self.probe_timeout
            if now - silent_since >= self.patience:
                self.restart(f"its API did not answer for {now - silent_since:.0f} s")
                silent_since = None

    def restart(self, reason):
        self.log(f"Toxiproxy: {reason}; restarting it (goroutine dump in toxiproxy.log)")
        try:
            self.t.restart(reason)
        except Exception as e:  # tried again on the next probe
            self.errors.append(f"Toxiproxy restart: {e}")
            self.log(f"Toxiproxy restart failed: {e}")

    def stop(self):
        self._halt.set()
        self.join()


def healthy(s):
    return s is not None and s.alive and s.ready and s.states and all(v == "following" for v in s.states.values())


class Injector:
    def __init__(self, world, faults, recovery_timeout, log):
        self.w = world
        self.faults = faults
        self.recovery_timeout = recovery_timeout
        self.log = log
        self.locks = {}
        self.outcomes = [Outcome(f) for f in faults]
        self.active_kafka_outages = 0
        self.kafka_outage_rss_kib = 0
        self._guard = threading.Lock()
        self.errors = []

    def _lock(self, resource):
        with self._guard:
            if resource == "bridge" or resource.startswith("bridge:"):
                return self.w.members[int(resource.split(":")[1]) if ":" in resource else 0].bridge.lock
            return self.locks.setdefault(resource, threading.Lock())

    def _member(self, o):
        """The bridge instance a fault hits (group mode: params["member"])."""
        return self.w.members[o.fault.params.get("member", 0)]

    def run(self):
        t0 = time.monotonic()
        threads = [threading.Thread(target=self._one, args=(t0, o), name=f"fault-{o.fault.index}", daemon=True)
                   for o in self.outcomes]
        rss_thread = threading.Thread(target=self._rss_during_kafka_outages, daemon=True)
        self._done = threading.Event()
        rss_thread.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._done.set()
        rss_thread.join()

    def _rss_during_kafka_outages(self):
        while not self._done.wait(0.2):
            if self.active_kafka_outages > 0:
                self.kafka_outage_rss_kib = max([self.kafka_outage_rss_kib] + [m.bridge.rss_kib()
                                                                               for m in self.w.members])

    def _one(self, t0, o):
        f = o.fault
        delay = t0 + f.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        resource = f.resource if not f.kind.startswith("toxic_") else f"toxic:{f.index}"
        try:
            with self._lock(resource):
                o.started = time.time()
                self.log(f"fault {f.index:4d} {f.kind:17s} {f.duration:6.2f}s {f.params or ''}")
                getattr(self, "_" + f.kind)(o)
                o.healed = o.healed or time.time()
                o.notes["visible"] = any(self.shows_trouble(s) for s in self.w.monitor.between(o.started, o.healed))
                if f.kind.startswith("partition_"):
                    # The next partition of the same link waits for this
                    # recovery: each one can then be timed from a clean start.
                    self._await_recovery(o)
            if not o.recovered:
                self._await_recovery(o)
        except Exception as e:  # a fault that could not be injected or healed is a lab error
            self.errors.append(f"fault {f.index} {f.kind}: {e}")
            self.log(f"fault {f.index} {f.kind}: ERROR {e}")
            o.healed = o.healed or time.time()

    def shows_trouble(self, s):
        """Whether a sample shows an operator that something is wrong: the
        bridge down, /readyz 503, a feed not following, a full window, a
        failing checkpoint write."""
        return (not s.alive or not s.ready or any(v != "following" for v in s.states.values()) or
                any(n >= self.w.max_in_flight for n in s.in_flight.values()) or s.checkpoint_failures > 0)

    def _await_recovery(self, o):
        deadline = o.healed + self.recovery_timeout
        while time.time() < deadline:
            s = self.w.monitor.latest
            if s is not None and s.t > o.healed and healthy(s):
                o.recovered = s.t
                return
            time.sleep(0.1)

    # -- the bridge process ------------------------------------------------

    def _bridge_sigkill(self, o):
        b = self._member(o).bridge
        b.signal(signal.SIGKILL)
        b.wait(30)
        time.sleep(o.fault.duration)
        b.start()
        o.healed = time.time()

    def _bridge_sigterm(self, o):
        b = self._member(o).bridge
        b.signal(signal.SIGTERM)
        rc = b.wait(self.w.shutdown_timeout_s + 30)
        if rc is None:
            o.notes["hung_on_sigterm"] = True
            b.signal(signal.SIGKILL)
            rc = b.wait(30)
        o.notes["exit_code"] = rc
        time.sleep(o.fault.duration)
        b.start()
        o.healed = time.time()

    def _bridge_sigstop(self, o):
        b = self._member(o).bridge
        b.stopped_by_signal = True
        b.signal(signal.SIGSTOP)
        time.sleep(o.fault.duration)
        b.signal(signal.SIGCONT)
        b.stopped_by_signal = False
        o.healed = time.time()

    # -- links ----------------------------------------------------------------

    def _partition(self, o, link):
        netns = self._member(o).netns
        netns.cut(link)
        kafka = link == "kafka"
        if kafka:
            self._kafka_outage(+1)
        try:
            time.sleep(o.fault.duration)
        finally:
            netns.heal(link)
            if kafka:
                self._kafka_outage(-1)
        o.healed = time.time()
        during = self.w.monitor.between(o.started, o.healed)
        before = [s for s in self.w.monitor.between(o.started - 2, o.started)]
        if link == "couch":
            # The watchdog: the first moment a feed left `following`, timed
            # only when everything was following as the link went down.
            if before and healthy(before[-1]):
                o.notes["clean_start"] = True
                for s in during:
                    if s.states and any(v != "following" for v in s.states.values()):
                        o.notes["detected_after"] = s.t - o.started
                        break
        else:
            window = self.w.max_in_flight
            peak = max((max(s.in_flight.values(), default=0) for s in during), default=0)
            o.notes["peak_in_flight"] = peak
            # The longest run of consecutive samples with a full window: the
            # pipelines full at both ends must not have read a row in between.
            runs, run = [], []
            for s in during:
                if s.alive and s.in_flight and max(s.in_flight.values()) >= window:
                    run.append(s)
                    continue
                if run:
                    runs.append(run)
                run = []
            if run:
                runs.append(run)
            if runs:
                longest = max(runs, key=lambda r: r[-1].t - r[0].t)
                first, last = longest[0], longest[-1]
                o.notes["window_full_for"] = last.t - first.t
                o.notes["read_while_full"] = [d for d, n in last.in_flight.items() if n >= window and
                                              first.in_flight.get(d, 0) >= window and
                                              last.rows_read.get(d, 0) != first.rows_read.get(d, 0)]
                o.notes["rss_while_full_kib"] = [first.rss_kib, last.rss_kib]

    def _partition_couch(self, o):
        self._partition(o, "couch")

    def _partition_kafka(self, o):
        self._partition(o, "kafka")

    def _kafka_outage(self, delta):
        with self._guard:
            self.active_kafka_outages += delta

    def _toxic(self, o):
        p = o.fault.params
        kind = o.fault.kind[len("toxic_"):]
        name = f"f{o.fault.index}"
        try:
            generation = self.w.toxiproxy.add_toxic(p["proxy"], name, kind, p["stream"], p["attributes"])
        except (RuntimeError, OSError) as e:
            # Toxiproxy answers 503 after 25 s when it cannot pause a stalled
            # link to change its toxics, or it is being restarted by the
            # guard: not injected, not an error.
            o.notes["skipped"] = f"Toxiproxy refused the toxic: {e}"
            o.healed = time.time()
            return
        try:
            time.sleep(o.fault.duration)
        finally:
            self._remove_toxic(o, p["proxy"], name, generation)
        o.healed = time.time()

    def _remove_toxic(self, o, proxy, name, generation):
        # A removal that hangs (503) means a deadlocked Toxiproxy: the guard
        # restarts it within its patience, and the restart removes the toxic.
        deadline = time.time() + 3 * self.w.toxiproxy_guard.patience
        while True:
            try:
                if not self.w.toxiproxy.remove_toxic(proxy, name, generation):
                    o.notes["cut_short_by_restart"] = True
                return
            except (RuntimeError, OSError):
                if time.time() > deadline:
                    raise
                time.sleep(2)

    _toxic_latency = _toxic_slicer = _toxic_bandwidth = _toxic_reset_peer = _toxic_timeout = _toxic

    # -- servers ----------------------------------------------------------------

    def _couch_restart(self, o):
        self.w.couch.kill9()
        time.sleep(o.fault.duration)
        self.w.couch.start()
        o.healed = time.time()

    def _kafka_restart(self, o):
        self._kafka_outage(+1)
        try:
            self.w.kafka.kill9()
            time.sleep(o.fault.duration)
            self.w.kafka.start()
        finally:
            self._kafka_outage(-1)
        o.healed = time.time()

    # -- the checkpoint disk ---------------------------------------------------

    def _disk_full(self, o):
        w = self._member(o)  # its bridge, disk and checkpoint directory
        w.spaces.fill()
        o.notes["free_kib_when_full"] = w.spaces.usage()[1]
        try:
            until = time.time() + o.fault.duration
            # Another fault may hold the bridge, restarting it against this
            # full disk: do not wait for it while the disk stays full.
            if o.fault.params.get("restart_while_full") and w.bridge.lock.acquire(timeout=o.fault.duration / 2):
                try:
                    w.bridge.signal(signal.SIGKILL)
                    w.bridge.wait(30)
                    o.notes["started_on_full_disk"] = w.bridge.try_start(max(1.0, until - time.time()))
                finally:
                    w.bridge.lock.release()
            time.sleep(max(0.0, until - time.time()))
        finally:
            w.spaces.free()
        if o.notes.get("started_on_full_disk") is False:
            with w.bridge.lock:
                if w.bridge.pid() is None:  # another fault may have started it meanwhile
                    w.bridge.start()
        freed = time.time()
        during = self.w.monitor.between(o.started, freed)
        o.notes["readyz_showed_it"] = any("checkpoints" in s.readyz for s in during)
        o.notes["status_showed_it"] = any(s.checkpoint_failures > 0 for s in during)
        # Space is back: the flusher must succeed again by itself.
        deadline = time.time() + self.recovery_timeout
        while time.time() < deadline:
            s = w.monitor.latest  # this instance's own samples
            if s and s.t > freed and s.alive and s.checkpoint_failures == 0:
                o.notes["checkpoints_resumed_after"] = s.t - freed
                break
            time.sleep(0.2)
        # Reopen the store with the bridge down: no corruption, every database listed.
        with w.bridge.lock:
            w.bridge.signal(signal.SIGTERM)
            if w.bridge.wait(self.w.shutdown_timeout_s + 30) is None:
                w.bridge.signal(signal.SIGKILL)
                w.bridge.wait(30)
            try:
                rc, out = w.bridge.checkpoints_list(w.checkpoint_dir)
            except Exception as e:  # could not even run it
                rc, out = None, f"{e!r}"
            listed = [db for db in self.w.databases if db in out]
            # Every database whose checkpoint /status showed a second before
            # the disk filled must be listed (one that had none yet cannot be:
            # early in a run, or when its first records were held up).
            seen = {}
            for m in self.w.members:
                for db, t in list(m.monitor.checkpointed_at.items()):
                    seen[db] = min(t, seen.get(db, t))
            expected = [db for db in self.w.databases if seen.get(db, o.started) < o.started - 1.0]
            missing = [db for db in expected if db not in listed]
            o.notes["store_reopened"] = rc == 0 and not missing
            o.notes["store_not_yet_checkpointed"] = len(self.w.databases) - len(expected)
            if not o.notes["store_reopened"]:
                # Keep the evidence: the exit code, what it listed and said.
                o.notes["store_check"] = {"exit": rc, "missing": missing, "output": out[-3000:]}
                self.log(f"fault {o.fault.index} disk_full: store check FAILED: `checkpoints list` exit {rc}, "
                         f"databases missing {missing}; its output:\n{out[-3000:]}")
            w.bridge.start()
        o.healed = time.time()


def summarize(outcomes):
    """Per kind: injected, survived, recovery times."""
    by_kind = {}
    for o in outcomes:
        k = by_kind.setdefault(o.fault.kind, {"injected": 0, "survived": 0, "visible": 0, "recover": []})
        if o.notes.get("skipped"):
            k["skipped"] = k.get("skipped", 0) + 1
            continue
        k["injected"] += 1
        k["visible"] += 1 if o.notes.get("visible") else 0
        if o.recovered:
            k["survived"] += 1
            k["recover"].append(o.recovered - o.healed)
    for k in by_kind.values():
        r = k["recover"]
        k["recover_median"] = statistics.median(r) if r else None
        k["recover_max"] = max(r) if r else None
    return by_kind
