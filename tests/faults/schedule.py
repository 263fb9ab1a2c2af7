"""Fault kinds and the randomized schedule. The schedule is a pure function
of (seed, count, profile): the same arguments give the same list of faults,
start times, durations and parameters (its digest is printed so a replay
can be compared). Adding a mode adds kinds or targets here and a handler in
injector.py.

Each kind names the resource it holds while it runs: faults on different
resources overlap freely, faults on the same one queue. With several bridge
instances (group mode) the kinds of MEMBER_KINDS also name the instance they
hit (params["member"], drawn from a stream of its own so that the rest of
the schedule is the same as with one instance), and hold that instance's
resource only."""

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field

# kind -> resource held while it runs
KINDS = {
    "bridge_sigkill": "bridge",
    "bridge_sigterm": "bridge",
    "bridge_sigstop": "bridge",
    "partition_couch": "link:couch",
    "partition_kafka": "link:kafka",
    "toxic_latency": "toxics",
    "toxic_slicer": "toxics",
    "toxic_bandwidth": "toxics",
    "toxic_reset_peer": "toxics",
    "toxic_timeout": "toxics",
    "couch_restart": "server:couch",
    "kafka_restart": "server:kafka",
    "disk_full": "disk",
}

# Kinds that hit one bridge instance: its process, its own veth links, its
# own checkpoint disk. The others (toxics, server restarts) hit every
# instance: one Toxiproxy, one CouchDB, one broker.
MEMBER_KINDS = {"bridge_sigkill", "bridge_sigterm", "bridge_sigstop", "partition_couch", "partition_kafka",
                "disk_full"}

# Kinds that make Kafka unreachable: peak RSS is sampled while they last.
KAFKA_UNREACHABLE = {"partition_kafka", "kafka_restart"}


@dataclass
class Profile:
    name: str
    gap: tuple  # seconds between fault starts (uniform)
    partition: tuple  # partition length
    hold: tuple  # stall, toxic, disk-full length
    down: tuple  # how long a killed process stays down
    disk: tuple  # how long the checkpoint disk stays full
    weights: dict = field(default_factory=dict)


PROFILES = {
    # CI: >= 60 faults in a few minutes on a loaded two-core machine.
    "ci": Profile("ci", gap=(1.5, 5.0), partition=(1.0, 12.0), hold=(1.0, 6.0), down=(0.0, 3.0), disk=(5.0, 15.0),
                  weights={"kafka_restart": 0.6, "couch_restart": 0.8}),
    # soak: the 1-60 s partitions, 1,000 faults in under an hour. A
    # fault holds its resource (the bridge, a link, the disk) until it is
    # healed, and a partition until the bridge recovered, so each resource's
    # queue must fit the schedule (2.25 s per fault on average): partitions
    # are rarer (about 35 per link, 45 s each with the recovery), stalls and
    # full disks shorter than the partitions, and full disks rarer too (each
    # one also stops and restarts the bridge to reopen the store, so they
    # queue behind the bridge's own faults).
    "soak": Profile("soak", gap=(1.0, 3.5), partition=(1.0, 60.0), hold=(1.0, 8.0), down=(0.0, 4.0), disk=(3.0, 15.0),
                    weights={"kafka_restart": 0.6, "couch_restart": 0.8, "partition_couch": 0.35,
                             "partition_kafka": 0.35, "disk_full": 0.6}),
}


@dataclass
class Fault:
    index: int
    kind: str
    at: float  # seconds after the schedule starts
    duration: float
    params: dict

    @property
    def resource(self):
        if "member" in self.params:
            return f"{KINDS[self.kind]}:{self.params['member']}"
        return KINDS[self.kind]


def make_schedule(seed, count, profile_name, min_each=3, only=None, members=1):
    """`only`: restrict to these kinds (a targeted run, e.g. partitions alone).
    `members` > 1: the bridge instances of group mode; MEMBER_KINDS name one."""
    profile = PROFILES[profile_name]
    rng = random.Random(seed)
    kinds = sorted(only or KINDS)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kind(s): {sorted(unknown)}")
    chosen = [k for k in kinds for _ in range(min_each)]
    weights = [profile.weights.get(k, 1.0) for k in kinds]
    while len(chosen) < count:
        chosen.append(rng.choices(kinds, weights)[0])
    rng.shuffle(chosen)
    faults, t = [], 0.0
    member_rng = random.Random(f"members/{seed}")
    for i, kind in enumerate(chosen):
        t += rng.uniform(*profile.gap)
        params = {}
        if kind.startswith("partition_"):
            duration = rng.uniform(*profile.partition)
        elif kind in ("bridge_sigkill", "couch_restart", "kafka_restart"):
            duration = rng.uniform(*profile.down)
        elif kind == "disk_full":
            duration = rng.uniform(*profile.disk)
        else:
            duration = rng.uniform(*profile.hold)
        if kind == "disk_full":
            # Half the episodes also crash and restart the bridge while the
            # disk is full: the store must open (or refuse to) without harm.
            params["restart_while_full"] = rng.random() < 0.5
        if kind.startswith("toxic_"):
            params["proxy"] = rng.choice(["couch", "kafka"])
            params["stream"] = rng.choice(["upstream", "downstream"])
            if kind == "toxic_latency":
                params["attributes"] = {"latency": rng.randrange(50, 2000), "jitter": rng.randrange(0, 500)}
            elif kind == "toxic_slicer":
                # Toxiproxy v2.12.0's slicer panics (slice bounds out of
                # range, the whole server dies) when size_variation exceeds
                # average_size: keep it below.
                size, variation = rng.randrange(1, 200), rng.randrange(0, 50)
                params["attributes"] = {"average_size": size, "size_variation": min(variation, size - 1),
                                        "delay": rng.randrange(0, 2000)}
            elif kind == "toxic_bandwidth":
                params["attributes"] = {"rate": rng.randrange(1, 64)}  # KB/s
            elif kind == "toxic_timeout":
                # No byte passes; the proxy closes the connection after
                # `timeout` ms, or never (0: a silent stall until removed).
                params["attributes"] = {"timeout": rng.choice([0, rng.randrange(100, 4000)])}
            else:
                params["attributes"] = {"timeout": rng.randrange(0, 2000)}  # ms before the reset
        if members > 1 and kind in MEMBER_KINDS:
            params["member"] = member_rng.randrange(members)
        faults.append(Fault(i, kind, round(t, 3), round(duration, 3), params))
    return faults


def digest(faults):
    text = json.dumps([asdict(f) for f in faults], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
