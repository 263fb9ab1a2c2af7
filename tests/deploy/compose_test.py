#!/usr/bin/python3
"""Checks docker-compose.yml, Dockerfile and deploy/ against each other and
against the bridge binary, since no Docker engine runs where the tests do.

Environment: CKB_SOURCE_DIR (repository root), CKB_BRIDGE_BINARY (the built
couch-kafka-bridge; its --help is the truth about flags and their
environment twins, so the check stays true as flags are added).
Needs /usr/bin/python3 with python3-yaml.
"""
import json
import os
import re
import subprocess
import sys
import unittest
from urllib.parse import urlsplit

import yaml

SOURCE_DIR = os.environ.get("CKB_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BRIDGE_BINARY = os.environ.get("CKB_BRIDGE_BINARY", "")


def read(rel):
    with open(os.path.join(SOURCE_DIR, rel), encoding="utf-8") as f:
        return f.read()


def load_yaml(rel):
    return yaml.safe_load(read(rel))


def bridge_help():
    if not BRIDGE_BINARY or not os.access(BRIDGE_BINARY, os.X_OK):
        raise RuntimeError(f"CKB_BRIDGE_BINARY={BRIDGE_BINARY!r} is not an executable: build couch-kafka-bridge "
                           "and run this through ctest")
    out = subprocess.run([BRIDGE_BINARY, "--help"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{BRIDGE_BINARY} --help exited {out.returncode}: {out.stderr}")
    text = out.stdout
    flags = set(re.findall(r"(?m)^\s+(?:-\w,)?(--[a-z0-9][a-z0-9-]*)", text))
    envs = set(re.findall(r"\(Env:([A-Z0-9_]+)\)", text))
    if "--http-listen" not in flags or not envs:
        raise RuntimeError("could not make sense of --help output:\n" + text)
    return flags, envs


def as_env_dict(env):
    """Compose environment: a mapping or a list of KEY=VALUE."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {k: ("" if v is None else str(v)) for k, v in env.items()}
    out = {}
    for item in env:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def as_list(cmd):
    if cmd is None:
        return []
    if isinstance(cmd, str):
        return cmd.split()
    return [str(c) for c in cmd]


def bridge_options(service):
    """The bridge's effective options from command flags, then environment
    twins (flags win, as in the binary). Returns {flag: value}."""
    opts = {}
    for name, value in as_env_dict(service.get("environment")).items():
        if name.startswith("COUCH_BRIDGE_"):
            opts["--" + name[len("COUCH_BRIDGE_"):].lower().replace("_", "-")] = value
    args = as_list(service.get("command"))
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            opts[name] = value
        i += 1
    return opts


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


class ComposeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.compose = load_yaml("docker-compose.yml")
        cls.services = cls.compose.get("services") or {}
        cls.prometheus = load_yaml("deploy/prometheus.yml")
        cls.help_flags, cls.help_envs = bridge_help()

    def test_services_exist_with_restart_policy_and_healthcheck(self):
        for name in ("couchdb", "kafka", "bridge", "prometheus"):
            with self.subTest(service=name):
                self.assertIn(name, self.services, f"docker-compose.yml has no service '{name}'")
                svc = self.services[name]
                self.assertIn(svc.get("restart"), ("always", "unless-stopped", "on-failure"),
                              f"service '{name}' needs a restart policy")
                test = (svc.get("healthcheck") or {}).get("test")
                self.assertTrue(test, f"service '{name}' needs a healthcheck")

    def test_every_bridge_flag_and_env_twin_exists_in_help(self):
        bridge = self.services["bridge"]
        for arg in as_list(bridge.get("command")) + as_list(bridge.get("entrypoint")):
            if arg.startswith("--"):
                flag = arg.partition("=")[0]
                self.assertIn(flag, self.help_flags, f"bridge command uses {flag}, unknown to couch-kafka-bridge --help")
        for name in as_env_dict(bridge.get("environment")):
            if name.startswith("COUCH_BRIDGE_"):
                self.assertIn(name, self.help_envs, f"bridge environment sets {name}, unknown to --help")

    def test_dockerfile_env_twins_exist_in_help(self):
        dockerfile = read("Dockerfile")
        names = re.findall(r"\b(COUCH_BRIDGE_[A-Z0-9_]+)=", dockerfile)
        self.assertTrue(names, "the Dockerfile is expected to set the container defaults (http listen, checkpoint dir)")
        for name in names:
            self.assertIn(name, self.help_envs, f"Dockerfile sets {name}, unknown to --help")

    def test_prometheus_scrapes_the_bridge_http_listen_port(self):
        opts = bridge_options(self.services["bridge"])
        self.assertIn("--http-listen", opts, "the bridge must set --http-listen (the default listens on 127.0.0.1 only)")
        host, port = host_port(opts["--http-listen"])
        self.assertIn(host, ("0.0.0.0", "", "[::]"), "inside a container --http-listen must bind all interfaces")
        targets = []
        for job in self.prometheus.get("scrape_configs") or []:
            for sc in job.get("static_configs") or []:
                for t in sc.get("targets") or []:
                    if t.partition(":")[0] == "bridge":
                        targets.append((job, t))
        self.assertEqual(len(targets), 1, "deploy/prometheus.yml must scrape the bridge service exactly once")
        job, target = targets[0]
        self.assertEqual(host_port(target)[1], port, "Prometheus scrapes another port than --http-listen")
        self.assertEqual(job.get("metrics_path", "/metrics"), "/metrics")
        # The healthcheck talks to the same port.
        health = " ".join(as_list(self.services["bridge"]["healthcheck"]["test"]))
        self.assertIn(f"/{port}", health)
        self.assertIn("/healthz", health)
        # And Prometheus gets its configuration from that file.
        mounts = [str(v) for v in self.services["prometheus"].get("volumes") or []]
        self.assertTrue(any(m.startswith("./deploy/prometheus.yml:") for m in mounts),
                        "the prometheus service must mount deploy/prometheus.yml")
        # Every rule file it names is mounted next to it (relative paths
        # resolve against the configuration file's directory).
        config_dir = next(m.split(":")[1] for m in mounts if m.startswith("./deploy/prometheus.yml:")).rsplit("/", 1)[0]
        for rule_file in self.prometheus.get("rule_files") or []:
            self.assertTrue(any(m.split(":")[1] == f"{config_dir}/{rule_file}" and
                                os.path.isfile(os.path.join(SOURCE_DIR, m.split(":")[0])) for m in mounts),
                            f"rule file {rule_file} is not mounted into the prometheus service")

    def test_kafka_advertised_listener_matches_bridge_brokers(self):
        opts = bridge_options(self.services["bridge"])
        brokers = opts.get("--kafka-brokers", "")
        self.assertNotIn(brokers, ("", "embedded"), "the bridge must use the kafka service, not the embedded cluster")
        env = as_env_dict(self.services["kafka"].get("environment"))
        advertised = {}
        for item in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(","):
            name, _, addr = item.partition("://")
            advertised[addr] = name
        listeners = {}
        for item in env.get("KAFKA_LISTENERS", "").split(","):
            name, _, addr = item.partition("://")
            listeners[name] = host_port(addr)[1]
        for broker in brokers.split(","):
            with self.subTest(broker=broker):
                self.assertIn(broker, advertised, f"--kafka-brokers {broker} is not an advertised listener of kafka")
                name = advertised[broker]
                self.assertEqual(listeners.get(name), host_port(broker)[1],
                                 f"listener {name} does not listen on the advertised port")
                self.assertEqual(host_port(broker)[0], "kafka", "the bridge must reach Kafka by its service name")
        self.assertIn("broker", env.get("KAFKA_PROCESS_ROLES", ""))
        self.assertIn("controller", env.get("KAFKA_PROCESS_ROLES", ""), "single-node KRaft needs the controller role")

    def test_couchdb_admin_from_environment_and_bridge_points_at_it(self):
        couch_env = as_env_dict(self.services["couchdb"].get("environment"))
        self.assertIn("COUCHDB_USER", couch_env)
        self.assertTrue(couch_env.get("COUCHDB_PASSWORD", "").startswith("${"),
                        "the CouchDB admin password must come from the environment, not the file")
        opts = bridge_options(self.services["bridge"])
        url = urlsplit(opts.get("--couch-url", ""))
        self.assertEqual(url.hostname, "couchdb")
        self.assertEqual(url.port, 5984)
        self.assertIsNone(url.password, "no credentials in the bridge's command line")
        self.assertTrue(opts.get("--couch-password", "").startswith("${"),
                        "the bridge's CouchDB password must come from the environment")
        image = self.services["couchdb"].get("image", "")
        self.assertRegex(image, r"^couchdb:3(\.|$)", "CouchDB 3")

    def test_bridge_waits_for_healthy_dependencies_and_keeps_checkpoints(self):
        bridge = self.services["bridge"]
        deps = bridge.get("depends_on") or {}
        for dep in ("couchdb", "kafka"):
            self.assertIn(dep, deps)
            self.assertEqual(deps[dep].get("condition"), "service_healthy")
        opts = bridge_options(bridge)
        ckpt = opts.get("--checkpoint-dir", "")
        mounts = [str(v).split(":") for v in bridge.get("volumes") or []]
        self.assertTrue(any(len(m) >= 2 and ckpt.startswith(m[1]) for m in mounts),
                        f"--checkpoint-dir {ckpt} must be on a volume, or checkpoints die with the container")

    def test_bridge_is_built_by_the_multi_stage_dockerfile_from_install_deps(self):
        build = self.services["bridge"].get("build") or {}
        self.assertEqual(build.get("context"), ".")
        self.assertEqual(build.get("dockerfile", "Dockerfile"), "Dockerfile")
        dockerfile = read("Dockerfile")
        self.assertGreaterEqual(len(re.findall(r"(?m)^FROM ", dockerfile)), 2, "multi-stage build expected")
        self.assertRegex(dockerfile, r"install-deps\.sh --build-only",
                         "the build stage must install the same package list as scripts/install-deps.sh")
        self.assertIn("--build-only", read("scripts/install-deps.sh"))
        self.assertIn("deploy/runtime-packages.sh", dockerfile)
        # The build stage copies the build's inputs one by one: every module
        # the top-level CMakeLists.txt always builds, and its cmake/ modules.
        copied = set(re.findall(r"(?m)^COPY (\S+) /src/", dockerfile))
        top = read("CMakeLists.txt")  # unindented: built unconditionally
        for module in re.findall(r"(?m)^add_subdirectory\((\w+)\)", top) + ["cmake", "CMakeLists.txt"]:
            self.assertIn(module, copied, f"the Dockerfile's build stage does not COPY {module}")
        self.assertIn("EXPOSE 9108", dockerfile)

    def test_host_ports_are_loopback_and_movable(self):
        # Compose v1 (the container test's tool) rejects a top-level name.
        self.assertNotIn("name", self.compose)
        for name, svc in self.services.items():
            for port in as_list(svc.get("ports")):
                with self.subTest(service=name, port=port):
                    self.assertRegex(port, r"^127\.0\.0\.1:\$\{HOST_PORT_[A-Z]+:-\d+\}:\d+$",
                                     "host ports: loopback only, movable with HOST_PORT_<SERVICE>")
        kafka = as_env_dict(self.services["kafka"].get("environment"))
        published = as_list(self.services["kafka"].get("ports"))[0].rpartition(":")[0].partition(":")[2]
        self.assertIn(f"EXTERNAL://localhost:{published}", kafka.get("KAFKA_ADVERTISED_LISTENERS", ""),
                      "Kafka must advertise the published host port to host clients")

    def test_container_test_override_only_swaps_images(self):
        override = load_yaml("deploy/compose.test.yml")
        self.assertEqual(set(override), {"services"})
        for name, svc in override["services"].items():
            with self.subTest(service=name):
                self.assertIn(name, self.services)
                self.assertEqual(set(svc), {"image"}, "the override swaps images and nothing else")
                self.assertNotEqual(svc["image"], self.services[name].get("image"))

    def test_group_override_uses_known_flags_and_the_kafka_store(self):
        override = load_yaml("deploy/compose.group.yml")
        bridge = override["services"]["bridge"]
        self.assertGreater(bridge["deploy"]["replicas"], 1)
        env = as_env_dict(bridge.get("environment"))
        for name in env:
            self.assertIn(name, self.help_envs, f"the group override sets {name}, unknown to --help")
        self.assertEqual(env.get("COUCH_BRIDGE_CHECKPOINT_STORE"), "kafka", "group mode needs the Kafka store")
        self.assertTrue(env.get("COUCH_BRIDGE_GROUP"))
        for arg in as_list(bridge.get("command")):
            if arg.startswith("--"):
                self.assertIn(arg.partition("=")[0], self.help_flags)
        # Replicas must not share the RocksDB directory (its lock): the
        # override keeps it inside each container.
        ckpt = [a for a in as_list(bridge.get("command")) if a.startswith("--checkpoint-dir=")]
        self.assertEqual(len(ckpt), 1)
        self.assertFalse(ckpt[0].split("=", 1)[1].startswith("/var/lib/couch-kafka-bridge"))

    def test_grafana_dashboard_and_provisioning_parse(self):
        dash = json.loads(read("deploy/grafana/dashboards/couch-kafka-bridge.json"))
        ds = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")
        uids = {d["uid"] for d in ds["datasources"]}
        self.assertTrue(dash["panels"])
        for p in dash["panels"]:
            self.assertIn(p["datasource"]["uid"], uids, f"panel '{p['title']}' uses an unknown datasource")
            for t in p["targets"]:
                self.assertTrue(t["expr"])


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
