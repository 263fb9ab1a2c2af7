"""What bench/run's scenarios read off the processes they run: CPU, memory
and context switches from /proc, the bridge's /metrics (sums and
histograms), and the failure that ends a scenario. Standard library only.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Metric families read from the bridge's /metrics (summed over labels).
ROWS_READ = "couch_bridge_couch_rows_read_total"
PUBLISHED = "couch_bridge_records_published_total"
SKIPPED = "couch_bridge_records_skipped_total"
PRODUCED = "couch_bridge_kafka_produced_total"
CKPT_WRITES = "couch_bridge_checkpoint_writes_total"
ROW_ACK = "couch_bridge_row_ack_latency_seconds"


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_process(proc, sig=signal.SIGTERM, timeout=120):
    """Sends `sig` to a running process and waits for it, killing it after
    `timeout` s. Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def cpu_seconds(pid):
    """utime + stime of a process (seconds), from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds(pid):
    """cutime + cstime: CPU of waited-for children (curl readers)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def memory_kib(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def thread_schedule(pid):
    """Per live thread of a process: {tid: (name, ns on a CPU, ns runnable
    but waiting for a CPU)}, from /proc/<pid>/task/*/schedstat (threads
    gone are left out)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                on_cpu, waiting = f.read().split()[:2]
        except (OSError, ValueError):
            continue
        out[tid] = (name, int(on_cpu), int(waiting))
    return out


def busiest_thread_shares(before, after, seconds):
    """Of the thread that ran the most between two thread_schedule()
    snapshots `seconds` apart (the bridge's event loop): its shares of the
    time on a CPU, waiting for a CPU (run queue) and asleep (waiting for
    anything else), or None. Tells a starved loop from one with nothing to
    do: both show as idle in CPU per thread."""
    if seconds <= 0:
        return None
    best = None
    for tid, (name, on_cpu, waiting) in after.items():
        if tid in before:
            d = (name, on_cpu - before[tid][1], waiting - before[tid][2])
            if best is None or d[1] > best[1]:
                best = d
    if best is None:
        return None
    on_cpu, waiting = best[1] / 1e9 / seconds, best[2] / 1e9 / seconds
    return dict(thread=best[0], on_cpu=on_cpu, run_queue=waiting, asleep=max(0.0, 1.0 - on_cpu - waiting))


def machine_idle_share():
    """(idle jiffies, all jiffies) of every CPU, from /proc/stat; two
    readings give the machine's idle share between them."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def context_switches(pid):
    """Voluntary + involuntary context switches of every live thread of a
    process, from /proc/<pid>/task/*/status (threads gone are not counted)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def scrape(port):
    """Sums every sample of each metric family (labels ignored)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        sums[m.group(1)] = sums.get(m.group(1), 0.0) + value
    return sums


def scrape_histogram(port, name):
    """The cumulative bucket counts of histogram `name` (summed over its
    other labels), as a sorted list of (upper bound, count)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    buckets = {}
    pattern = re.compile(r'^%s_bucket\{(?:.*,)?le="([^"]+)"(?:,.*)?\}\s+(\S+)' % re.escape(name))
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    return sorted(buckets.items())


def histogram_quantile(q, before, after):
    """The q-quantile of the observations made between two scrapes of one
    histogram, interpolated linearly inside its bucket (as Prometheus'
    histogram_quantile does); None when nothing was observed."""
    old = dict(before)
    delta = [(le, c - old.get(le, 0.0)) for le, c in after]
    if not delta or delta[-1][1] <= 0:
        return None
    rank = q * delta[-1][1]
    lower, below = 0.0, 0.0
    for le, c in delta:
        if c >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (c - below) if c > below else 1.0)
        lower, below = le, c
    return lower


def delivered(m):
    """Rows the bridge is done with: acknowledged by Kafka, or skipped by rule."""
    return m.get(PUBLISHED, m.get(PRODUCED, 0.0)) + m.get(SKIPPED, 0.0)


class Scenario_failed(Exception):
    pass
