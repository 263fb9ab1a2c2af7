"""The fault lab's network plumbing: the network namespace(s) the bridge
runs in, with veth links the lab can cut (a silent partition), and, in group
mode, the host addresses the namespaces share (see servers.py for the rest
of the world). Created and destroyed by the lab; nothing here is looked up
by name outside the names it made."""

import os
import random
import subprocess


def run(cmd, check=True, **kw):
    """Runs a short command; raises with its output when it fails and check is set."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {r.returncode}: {r.stdout.strip()[-2000:]}")
    return r


class Netns:
    """A network namespace with three veth links to the host: `couch` and
    `kafka` (cut to partition the bridge from one server: the host side is set
    down, packets vanish, nothing sends a reset) and `mgmt` (never cut: the
    lab reads /status through it)."""

    LINKS = ("couch", "kafka", "mgmt")

    def __init__(self, tag, index=None):
        """`index`: one of several namespaces of a run (group mode: one per
        bridge instance); None for the only one."""
        suffix = "" if index is None else str(index)
        self.name = f"ckbf-{tag}" + ("" if index is None else f"-{index}")
        used = run(["ip", "-4", "-o", "addr"]).stdout
        rng = random.Random(os.getpid())
        for _ in range(200):
            octet = rng.randrange(16, 250)
            if f"10.213.{octet}." not in used:
                break
        else:
            raise RuntimeError("no free 10.213.x.0/24 subnet for the lab's veth links")
        self.host_ip, self.ns_ip, self.host_if = {}, {}, {}
        for i, link in enumerate(self.LINKS):
            self.host_ip[link] = f"10.213.{octet}.{4 * i + 1}"
            self.ns_ip[link] = f"10.213.{octet}.{4 * i + 2}"
            self.host_if[link] = f"ckf{tag[-6:]}{suffix}{link[0]}"
        self.created = False
        self.mac = {}

    def create(self):
        run(["ip", "netns", "add", self.name])
        self.created = True
        self.ns(["ip", "link", "set", "lo", "up"])
        for link in self.LINKS:
            h, n = self.host_if[link], self.host_if[link] + "n"
            run(["ip", "link", "add", h, "type", "veth", "peer", "name", n, "netns", self.name])
            run(["ip", "addr", "add", self.host_ip[link] + "/30", "dev", h])
            run(["ip", "link", "set", h, "up"])
            self.ns(["ip", "addr", "add", self.ns_ip[link] + "/30", "dev", n])
            self.ns(["ip", "link", "set", n, "up"])
            self.mac[link] = (self._mac(h), self._mac(n, inside=True))
            self._pin_neighbours(link)

    def _mac(self, dev, inside=False):
        cmd = ["ip", "-o", "link", "show", dev]
        out = (self.ns(cmd) if inside else run(cmd)).stdout
        return out.split("link/ether ")[1].split()[0]

    def _pin_neighbours(self, link):
        # Permanent ARP entries: without them a cut link turns into "No route
        # to host" errors after ARP gives up (about 3 s), which is a signal,
        # not a silent partition. With them packets just vanish.
        host_mac, ns_mac = self.mac[link]
        run(["ip", "neigh", "replace", self.ns_ip[link], "lladdr", ns_mac, "dev", self.host_if[link], "nud",
             "permanent"])
        self.ns(["ip", "neigh", "replace", self.host_ip[link], "lladdr", host_mac, "dev", self.host_if[link] + "n",
                 "nud", "permanent"])

    def ns(self, cmd, check=True):
        return run(["ip", "netns", "exec", self.name] + cmd, check=check)

    def route(self, address, link):
        """Reaches `address` (a host address outside this namespace's links,
        e.g. a ServiceAddresses one) through `link`: cutting that link cuts it."""
        self.ns(["ip", "route", "replace", address + "/32", "via", self.host_ip[link]])

    def cut(self, link):
        run(["ip", "link", "set", self.host_if[link], "down"])

    def heal(self, link):
        run(["ip", "link", "set", self.host_if[link], "up"])
        self._pin_neighbours(link)  # setting a link down flushes its neighbours

    def destroy(self):
        if self.created:
            run(["ip", "netns", "del", self.name], check=False)
            for link in self.LINKS:  # normally gone with the namespace
                run(["ip", "link", "del", self.host_if[link]], check=False)
            self.created = False


class ServiceAddresses:
    """Two host addresses (couch, kafka) on a veth pair of their own in the
    host namespace, for the servers several namespaces share (group mode):
    Toxiproxy listens there, the broker advertises the Kafka one, and each
    namespace routes each address through its own link of that name, so a
    partition of one instance's link leaves the others connected. (The
    kernel here has no dummy links; a veth pair with both ends up serves.)"""

    def __init__(self, tag):
        used = run(["ip", "-4", "-o", "addr"]).stdout
        rng = random.Random(os.getpid() + 1)
        for _ in range(200):
            octet = rng.randrange(16, 250)
            if f"10.213.{octet}." not in used:
                break
        else:
            raise RuntimeError("no free 10.213.x.0/24 subnet for the lab's service addresses")
        self.ip = {"couch": f"10.213.{octet}.1", "kafka": f"10.213.{octet}.2"}
        self.ifs = (f"ckf{tag[-6:]}sa", f"ckf{tag[-6:]}sb")
        self.created = False

    def create(self):
        run(["ip", "link", "add", self.ifs[0], "type", "veth", "peer", "name", self.ifs[1]])
        self.created = True
        for name in self.ip:
            run(["ip", "addr", "add", self.ip[name] + "/32", "dev", self.ifs[0]])
        for dev in self.ifs:
            run(["ip", "link", "set", dev, "up"])

    def destroy(self):
        if self.created:
            run(["ip", "link", "del", self.ifs[0]], check=False)
            self.created = False
