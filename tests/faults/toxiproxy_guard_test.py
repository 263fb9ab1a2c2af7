#!/usr/bin/env python3
"""The Toxiproxy deadlock the fault lab works around, and the lab's cure.

Reproduces it with the pinned Toxiproxy (v2.12.0) and nothing else: an
upstream that sends without pause, a client that stops reading (a stopped or
cut-off bridge), a toxic added meanwhile (the API waits for the stalled
link), then the client resets its connection. From then on the API never
answers and the proxy never passes another byte (upstream issue
Shopify/toxiproxy#558). Then checks that ToxiproxyGuard (injector.py)
restarts it on the same port with the same proxy, which forwards again, and
that remove_toxic reports the toxic as already gone.

    tests/faults/toxiproxy_guard_test.py        (about 30 s; no root needed)
"""

import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import servers  # noqa: E402
from injector import ToxiproxyGuard  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def upstream():
    """A server that sends 64 KiB blocks to every client until it goes away."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def push(c):
        try:
            while True:
                c.sendall(b"x" * 65536)
        except OSError:
            pass

    def serve():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=push, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


def reads_through(port, timeout=5.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
            c.settimeout(timeout)
            return len(c.recv(1024)) > 0
    except OSError:
        return False


def main():
    binary = servers.run(["bash", os.path.join(ROOT, "scripts/install-toxiproxy.sh")]).stdout.strip().splitlines()[-1]
    work = tempfile.mkdtemp(prefix="ckb-toxiproxy-guard-")
    t = servers.Toxiproxy(binary, work)
    t.start()
    guard = None
    try:
        listen = servers.free_port()
        t.add_proxy("p", f"127.0.0.1:{listen}", f"127.0.0.1:{upstream()}")
        if not reads_through(listen):
            fail("the proxy does not forward at all")

        stalled = socket.create_connection(("127.0.0.1", listen))  # never reads
        time.sleep(2)  # the proxy's writer blocks on the full socket
        try:
            t._call("POST", "/proxies/p/toxics", {"name": "lat", "type": "latency", "stream": "downstream",
                                                   "toxicity": 1.0, "attributes": {"latency": 100}}, timeout=3)
            fail("adding a toxic to a stalled link answered; the deadlock needs another trigger now")
        except (RuntimeError, OSError):
            pass  # it waits for the stalled link, holding the proxy's mutex
        # The client gives up: a reset. The proxy's writer fails, and the
        # toxic stage it no longer reads stays blocked for good.
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stalled.close()
        time.sleep(5)
        if t.responsive(timeout=3):
            fail("Toxiproxy answered again after the reset: no deadlock (fixed upstream? then drop the guard)")
        if reads_through(listen, timeout=3):
            fail("the deadlocked proxy still forwards new connections")
        print("reproduced: Toxiproxy's API and proxy hang after a toxic change on a stalled link that then reset")

        guard = ToxiproxyGuard(t, lambda m: print(m, flush=True), period=1.0, probe_timeout=2.0, patience=6.0)
        guard.start()
        deadline = time.time() + 60
        while not t.restarts and time.time() < deadline:
            time.sleep(0.5)
        if not t.restarts:
            fail("the guard did not restart the deadlocked Toxiproxy within 60 s")
        if not t.responsive(timeout=5):
            fail("the restarted Toxiproxy does not answer")
        if not reads_through(listen):
            fail("the restarted Toxiproxy does not forward on the proxy's old address")
        if t.remove_toxic("p", "lat", generation=0) is not False:
            fail("remove_toxic of a toxic from before the restart did not say it was gone")
        if guard.errors:
            fail(f"guard errors: {guard.errors}")
        with open(t.log, errors="replace") as f:
            dump = f.read()
        if "InterruptToxic" not in dump:
            print("note: the goroutine dump does not show InterruptToxic", file=sys.stderr)
        print(f"passed: restarted {len(t.restarts)} time(s), forwarding again")
        shutil.rmtree(work, ignore_errors=True)
        return 0
    finally:
        if guard:
            guard.stop()
        t.stop()


if __name__ == "__main__":
    sys.exit(main())
