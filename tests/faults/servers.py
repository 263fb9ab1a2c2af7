"""The fault lab's world: its own pouchdb-server (LevelDB, restartable), its
own Kafka broker (restartable), Toxiproxy, a network namespace whose veth
links can be cut, and the bridge running inside that namespace and inside a
mount namespace holding a small tmpfs for its checkpoints.

Everything here is started by the lab and stopped by PID (process groups it
created), never by name.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from network import Netns, ServiceAddresses, run  # noqa: F401 (the lab uses them as servers.*)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=3.0):
    """(status, body) of GET url; (None, error text) when it cannot connect."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except Exception as e:  # connection refused, timeout, reset
        return None, str(e)


def kill_group(proc, sig=signal.SIGKILL):
    """Signals the process group of a child started with start_new_session."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class Couch:
    """pouchdb-server on a LevelDB directory: kill -9 and restart keep the data."""

    def __init__(self, root, work):
        self.bin = os.path.join(root, "tests/servers/node_modules/pouchdb-server/bin/pouchdb-server")
        self.dir = os.path.join(work, "pouchdb")
        self.log = os.path.join(work, "couch.log")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        os.makedirs(self.dir, exist_ok=True)

    def start(self, timeout=60):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                ["node", self.bin, "--host", "127.0.0.1", "--port", str(self.port), "--dir", self.dir, "--no-color"],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pouchdb-server exited at startup; see {self.log}")
            if http_get(self.url + "/", timeout=1)[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"pouchdb-server did not answer within {timeout} s; see {self.log}")

    def kill9(self):
        kill_group(self.proc, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        kill_group(self.proc, signal.SIGKILL)
        if self.proc:
            self.proc.wait()


class Kafka:
    """A single-node KRaft broker with two listeners: BRIDGE, advertised at
    the Toxiproxy address inside the namespace's reach (so every connection
    the bridge makes, bootstrap and after metadata, goes through the proxy
    and the cuttable link), and DIRECT on loopback for the lab's checker."""

    def __init__(self, root, work):
        pom = open(os.path.join(root, "tests/servers/kafka/pom.xml")).read()
        version = pom.split("<kafka.version>")[1].split("</kafka.version>")[0]
        self.libs = os.path.join(root, f".cache/kafka-{version}/libs")
        self.log4j = os.path.join(root, "tests/servers/kafka/log4j.properties")
        self.dir = os.path.join(work, "kafka")
        self.log = os.path.join(work, "kafka.log")
        self.bridge_port, self.direct_port, self.controller_port = free_port(), free_port(), free_port()
        self.direct = f"127.0.0.1:{self.direct_port}"
        self.proc = None
        self.starts = 0

    def configure(self, advertised_bridge):
        os.makedirs(self.dir + "/data", exist_ok=True)
        props = f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
listeners=BRIDGE://127.0.0.1:{self.bridge_port},DIRECT://127.0.0.1:{self.direct_port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=BRIDGE://{advertised_bridge},DIRECT://127.0.0.1:{self.direct_port}
listener.security.protocol.map=BRIDGE:PLAINTEXT,DIRECT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=DIRECT
log.dirs={self.dir}/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=2
"""
        with open(self.dir + "/server.properties", "w") as f:
            f.write(props)
        cp = self.libs + "/*"
        cluster = run(["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"]).stdout.strip().splitlines()[-1]
        run(["java", "-cp", cp, f"-Dlog4j.configuration=file:{self.log4j}", "kafka.tools.StorageTool", "format",
             "-t", cluster, "-c", self.dir + "/server.properties"])

    def start(self, timeout=180):
        before = self._started_count()
        opts = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                ["java"] + opts + [f"-Dlog4j.configuration=file:{self.log4j}", "-cp", self.libs + "/*", "kafka.Kafka",
                                   self.dir + "/server.properties"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited at startup; see {self.log}")
            if self._started_count() > before:
                self.starts += 1
                return
            time.sleep(0.2)
        raise RuntimeError(f"the Kafka broker did not start within {timeout} s; see {self.log}")

    def _started_count(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read().count("Kafka Server started")
        except FileNotFoundError:
            return 0

    def kill9(self):
        kill_group(self.proc, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        kill_group(self.proc, signal.SIGKILL)
        if self.proc:
            self.proc.wait()


class Toxiproxy:
    """The Toxiproxy server (pinned, installed by scripts/install-toxiproxy.sh)
    and a thin client of its HTTP API.

    Toxiproxy v2.12.0 deadlocks for good when a toxic is added or removed
    while a link's destination does not read (a stopped bridge, a cut veth)
    and that connection then dies: the toxic chain's noop stage blocks on an
    unbuffered send nobody will ever receive, the API handler waits for it
    holding the proxy's toxic-collection mutex, and from then on every API
    call on that proxy and every new connection through it waits on that
    mutex (upstream issue Shopify/toxiproxy#558;
    tests/faults/toxiproxy_guard_test.py reproduces it). The lab therefore
    watches the API (ToxiproxyGuard in injector.py) and restarts the server,
    same port, same proxies, when it stops answering: `generation` counts the
    restarts, and a toxic added before a restart is gone after it."""

    def __init__(self, binary, work, port=None):
        self.binary = binary
        self.port = port or free_port()
        self.api = f"127.0.0.1:{self.port}"
        self.log = os.path.join(work, "toxiproxy.log")
        self.proc = None
        self.proxies = {}  # name -> (listen, upstream), recreated by restart()
        self.generation = 0
        self.restarts = []  # (time, reason)
        self.lock = threading.Lock()  # serializes restarts

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([self.binary, "-host", "127.0.0.1", "-port", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        for _ in range(300):
            if http_get(f"http://{self.api}/version", timeout=1)[0] == 200:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        kill_group(self.proc, signal.SIGKILL)
        self.proc.wait()
        raise RuntimeError(f"toxiproxy-server did not start; see {self.log}")

    def _call(self, method, path, body=None, timeout=40):
        # Toxiproxy itself gives up on a request after 25 s (503).
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read().decode()
            if r.status >= 300:
                raise RuntimeError(f"toxiproxy {method} {path} -> {r.status}: {data}")
            return json.loads(data) if data else None
        finally:
            conn.close()

    def add_proxy(self, name, listen, upstream):
        self.proxies[name] = (listen, upstream)
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})

    def add_toxic(self, proxy, name, kind, stream, attributes):
        """Adds a toxic; returns the generation it was added to (for remove_toxic)."""
        generation = self.generation
        self._call("POST", f"/proxies/{proxy}/toxics",
                   {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes})
        return generation

    def remove_toxic(self, proxy, name, generation=None):
        """Removes a toxic. True when removed, False when a restart since
        `generation` already took it away; raises otherwise."""
        if generation is not None and generation != self.generation:
            return False
        try:
            self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")
            return True
        except (RuntimeError, OSError):
            if generation is not None and generation != self.generation:
                return False
            raise

    def reset(self, timeout=40):
        """Removes every toxic and re-enables every proxy."""
        self._call("POST", "/reset", timeout=timeout)

    def responsive(self, timeout=5.0):
        """Whether the API lists the proxies within timeout: the listing takes
        every proxy's toxic-collection mutex, so a deadlocked proxy fails it."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            self._call("GET", "/proxies", timeout=timeout)
            return True
        except (RuntimeError, OSError):
            return False

    def restart(self, reason):
        """Kills the server (SIGQUIT first: the Go runtime writes every
        goroutine's stack to the log, the evidence of a deadlock), starts it
        on the same port and recreates the proxies on the same addresses.
        Every connection through it is dropped; every toxic is gone."""
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                with open(self.log, "a") as log:
                    log.write(f"\n==== fault lab: restarting Toxiproxy at {time.strftime('%H:%M:%S')}: {reason} ====\n")
                try:
                    os.killpg(self.proc.pid, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    kill_group(self.proc, signal.SIGKILL)
                    self.proc.wait()
            self.generation += 1  # its toxics are gone
            for attempt in range(50):  # the API port may still be held for a moment
                try:
                    self.start()
                    break
                except RuntimeError:
                    if attempt == 49:
                        raise
                    time.sleep(0.2)
            for name, (listen, upstream) in self.proxies.items():
                self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
            self.restarts.append((time.time(), reason))

    def stop(self):
        kill_group(self.proc, signal.SIGKILL)
        if self.proc:
            self.proc.wait()


class Namespaces:
    """A holder process that owns a mount namespace (inside the lab's network
    namespace) with a small tmpfs on the checkpoint directory. The bridge is
    started with nsenter into both, so its store lives on that tmpfs and
    survives the bridge's restarts; a `fill` file makes the disk full."""

    def __init__(self, netns, mount_dir, size_mib):
        self.netns, self.mount_dir, self.size_mib = netns, mount_dir, size_mib
        self.proc = None

    def start(self):
        os.makedirs(self.mount_dir, exist_ok=True)
        script = (f"mount -t tmpfs -o size={self.size_mib}m ckb-faults '{self.mount_dir}' && "
                  "echo mounted && exec sleep 2147483647")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns.name, "unshare", "-m", "--propagation",
                                      "private", "sh", "-c", script], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        line = self.proc.stdout.readline().strip()
        if line != "mounted":
            raise RuntimeError(f"could not mount the checkpoint tmpfs: {line} {self.proc.stdout.read()[:500]}")

    def enter(self, cmd):
        """cmd run inside the holder's mount and network namespaces."""
        return ["nsenter", "-t", str(self.proc.pid), "-m", "-n", "--"] + cmd

    def fill(self):
        run(self.enter(["sh", "-c", f"dd if=/dev/zero of='{self.mount_dir}/fill' bs=64k 2>/dev/null; sync; true"]))

    def free(self):
        run(self.enter(["rm", "-f", f"{self.mount_dir}/fill"]))

    def usage(self):
        out = run(self.enter(["df", "-k", "--output=used,avail", self.mount_dir])).stdout.split()
        return int(out[-2]), int(out[-1])

    def stop(self):
        kill_group(self.proc, signal.SIGKILL)
        if self.proc:
            self.proc.wait()


class Bridge:
    """The bridge under test, run inside the lab's namespaces. Every start,
    signal and exit is recorded; `lock` serializes the faults that act on
    the process."""

    def __init__(self, binary, spaces, args, log_path, status_url):
        self.binary, self.spaces, self.args = binary, spaces, args
        self.log_path, self.status_url = log_path, status_url
        self.proc = None
        self.lock = threading.RLock()
        self.expected_exit = False
        self.unexpected_exits = []  # (time, return code)
        self.startup_failures = 0
        self.starts = 0
        self.stopped_by_signal = False  # SIGSTOPped right now
        self.double_starts = 0  # starts asked for while a bridge still ran (a lab bug if > 0)
        self.starting = False
        self.crashed = False  # exited without being asked to; the monitor restarts it
        self.store_args = []  # what `checkpoints list` needs besides the checkpoint dir

    def start(self, timeout=120):
        """Starts the bridge and waits for /healthz; retries a startup that
        fails (a full disk may make the store refuse to open)."""
        deadline = time.monotonic() + timeout
        self.starting = True
        try:
            self._start(deadline, timeout)
        finally:
            self.starting = False

    def _replace_running(self):
        """A start supersedes a pending crash restart, and never runs next
        to an earlier bridge: that one would answer /healthz for the new one
        and hold the store's lock against it."""
        self.crashed = False
        if self.proc is not None and self.proc.poll() is None:
            self.double_starts += 1
            self.expected_exit = True
            self.proc.kill()
            self.proc.wait()

    def try_start(self, timeout):
        """Starts the bridge once; True when it became healthy within
        timeout, False when it exited or did not answer (it is then killed)."""
        self.starting = True
        try:
            self._replace_running()
            with open(self.log_path, "a") as log:
                log.write(f"\n==== fault lab: start {self.starts + 1} (one try) at {time.strftime('%H:%M:%S')} ====\n")
                log.flush()
                self.proc = subprocess.Popen(self.spaces.enter([self.binary] + self.args), stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.starts += 1
            self.expected_exit = False
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if http_get(self.status_url + "/healthz", timeout=1)[0] == 200:
                    return True
                time.sleep(0.1)
            self.startup_failures += 1
            self.expected_exit = True
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            return False
        finally:
            self.starting = False

    def _start(self, deadline, timeout):
        while True:
            self._replace_running()
            with open(self.log_path, "a") as log:
                log.write(f"\n==== fault lab: start {self.starts + 1} at {time.strftime('%H:%M:%S')} ====\n")
                log.flush()
                self.proc = subprocess.Popen(self.spaces.enter([self.binary] + self.args), stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.expected_exit = False
            self.starts += 1
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if http_get(self.status_url + "/healthz", timeout=1)[0] == 200:
                    return
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                # Never leave a bridge behind that the lab no longer tracks:
                # it would hold the store's lock against every later start.
                self.expected_exit = True
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
                self.crashed = True  # the monitor keeps trying
                raise RuntimeError(f"the bridge did not become healthy within {timeout} s; see {self.log_path}")
            self.startup_failures += 1
            time.sleep(1)

    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.expected_exit = True
            self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def check_alive(self):
        """Records an exit nobody asked for (a crash); True while running."""
        if self.proc is None or self.starting:
            return False
        rc = self.proc.poll()
        if rc is None:
            return True
        if not self.expected_exit:
            self.unexpected_exits.append((time.time(), rc))
            self.expected_exit = True
            self.crashed = True
        return False

    def rss_kib(self):
        pid = self.pid()
        if not pid:
            return 0
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except FileNotFoundError:
            pass
        return 0

    def status(self):
        code, body = http_get(self.status_url + "/status", timeout=2)
        if code != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def ready(self):
        return http_get(self.status_url + "/readyz", timeout=2)

    def checkpoints_list(self, checkpoint_dir):
        """`checkpoints list` on the store while the bridge is down: (rc, output)."""
        # (exactly-once: the positions are in the Kafka topic, store_args say where)
        r = run(self.spaces.enter([self.binary, "--checkpoint-dir", checkpoint_dir] + self.store_args +
                                  ["checkpoints", "list"]), check=False)
        return r.returncode, r.stdout

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.expected_exit = True
            if self.stopped_by_signal:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(30) is None:
                self.proc.kill()
                self.proc.wait()
