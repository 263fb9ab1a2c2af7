"""The pace scenario of bench/run (issue #16): the bridge on bench-source
--couchdb-like, a CouchDB's framing and pace. Two kinds of rows:
  catch-up   (`paces`) a plain read (curl) of the paced feeds, then each
             bridge variant catching up on them from 0;
  following  (`follows`) each variant following live changes
             (--live-interval-ms) once it has caught up on a small backlog.
A mixin of harness.Runner (which starts and stops the processes); with
--perf, a profile of the bridge at 6,000/s (reported) and 500/s.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

from measure import (ROW_ACK, Scenario_failed, busiest_thread_shares, children_cpu_seconds, context_switches,
                     cpu_seconds, delivered, end_process, histogram_quantile, log, machine_idle_share, scrape,
                     scrape_histogram, thread_schedule)


class Pace:
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
        follows = []
        for index, (label, interval, dbs) in enumerate(self.size["follows"]):
            log("pace %s: %d databases, one live change per %d ms each, CouchDB framing" % (label, dbs, interval))
            source, url = self.start_source("source-follow-%d-%d" % (interval, dbs), dbs,
                                            self.size["follow_backlog"],
                                            ["--couchdb-like", "--live-interval-ms", str(interval)])
            names = ["bench-%04d" % i for i in range(dbs)]
            order = variants if index % 2 == 0 else list(reversed(variants))
            for variant in order:
                tag = "-" + variant["name"] if variant["name"] else ""
                row = self.follow_bridge(interval, dbs, source, url, names, variant, tag)
                row.update(pace=label, rate=1000.0 / interval, databases=dbs, variant=variant["name"],
                           read_changes_per_s=None, read_cpu_us_per_change=None, ratio=None)
                follows.append(row)
            self.stop(source)
        follows.sort(key=lambda r: ([f[0] for f in self.size["follows"]].index(r["pace"]),
                                    names_order.index(r["variant"])))
        self.results["pace"] = rows + follows

    def follow_bridge(self, interval, dbs, source, url, names, variant, tag):
        """One bridge following the live source: started from 0, it catches
        up on the backlog; once every feed is `following` (in /status) and
        every database's backlog is acknowledged, and after follow_settle_s,
        the figures over follow_window_s of live changes."""
        s = self.size
        bridge, port = self.start_bridge("bridge-follow-%d-%d%s" % (interval, dbs, tag), url, names, variant)
        deadline = time.monotonic() + 120
        while True:
            if bridge.poll() is not None:
                raise Scenario_failed("the bridge exited with %s during the catch-up" % bridge.returncode)
            if self.all_following(port, names, s["follow_backlog"]):
                break
            if time.monotonic() > deadline:
                raise Scenario_failed("the bridge was not following every live feed within 120 s")
            time.sleep(0.05)
        time.sleep(s["follow_settle_s"])
        src_cpu0, switches0 = cpu_seconds(source.pid), context_switches(bridge.pid)
        first = dict(t=time.monotonic(), cpu=cpu_seconds(bridge.pid), m=scrape(port))
        lat0 = scrape_histogram(port, ROW_ACK)
        time.sleep(s["follow_window_s"])
        lat1 = scrape_histogram(port, ROW_ACK)
        last = dict(t=time.monotonic(), cpu=cpu_seconds(bridge.pid), m=scrape(port))
        switches = context_switches(bridge.pid) - switches0
        src_cpu = cpu_seconds(source.pid) - src_cpu0
        # Still following at the end: a feed that fell back to catching up
        # would measure batches, not live rows.
        still = self.all_following(port, names, 0)
        rc = self.stop(bridge)
        changes = delivered(last["m"]) - delivered(first["m"])
        secs = last["t"] - first["t"]
        p50, p99 = histogram_quantile(0.5, lat0, lat1), histogram_quantile(0.99, lat0, lat1)
        return dict(
            changes=int(changes), window_s=secs, following_throughout=still,
            bridge_changes_per_s=changes / secs if secs > 0 else None,
            bridge_cpu_us_per_change=(last["cpu"] - first["cpu"]) * 1e6 / changes if changes else None,
            switches_per_change=switches / changes if changes else None,
            latency_p50_ms=p50 * 1e3 if p50 is not None else None,
            latency_p99_ms=p99 * 1e3 if p99 is not None else None,
            source_cpu_us_per_change=src_cpu * 1e6 / changes if changes else None, exit_code=rc)

    @staticmethod
    def all_following(port, names, backlog):
        """Every database of `names` follows its feed (/status) with at least
        `backlog` records acknowledged or skipped."""
        with urllib.request.urlopen("http://127.0.0.1:%d/status" % port, timeout=10) as r:
            dbs = json.load(r).get("databases", {})
        return all(dbs.get(n, {}).get("state") == "following" and
                   dbs[n].get("published", 0) + dbs[n].get("skipped", 0) >= backlog for n in names)

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
        sched0, idle0 = thread_schedule(bridge.pid), machine_idle_share()
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
        sched1, idle1 = thread_schedule(bridge.pid), machine_idle_share()
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
        loop = busiest_thread_shares(sched0, sched1, secs)
        jiffies = idle1[1] - idle0[1]
        return dict(
            bridge_changes_per_s=bridge_rate, loop=loop,
            machine_idle=(idle1[0] - idle0[0]) / jiffies if jiffies > 0 else None,
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
        end_process(proc, signal.SIGINT, timeout=60)
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
