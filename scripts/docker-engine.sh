#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine, starting Debian's
# docker.io daemon by hand when none does (machines here have no systemd).
# Idempotent: with a running engine it checks and returns at once. The daemon
# runs detached in its own session and outlives this script; its log is
# /var/log/ckb-dockerd.log.
#   scripts/docker-engine.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if docker info > /dev/null 2>&1; then
  exit 0
fi
bash "$root/scripts/install-deps.sh" --container > /dev/null

sudo=""
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo > /dev/null || { echo "docker-engine: need root or sudo to start dockerd" >&2; exit 1; }
  sudo="sudo"
fi

log=/var/log/ckb-dockerd.log
if ! pgrep -x dockerd > /dev/null; then
  echo "docker-engine: starting dockerd (log: $log)"
  # setsid + closed standard streams: the daemon must not hold the pipes of
  # whoever started it (ctest waits for them to close).
  $sudo bash -c "setsid /usr/sbin/dockerd >> '$log' 2>&1 < /dev/null &"
fi
for _ in $(seq 1 120); do
  if docker info > /dev/null 2>&1; then
    echo "docker-engine: dockerd is up ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 0.5
done
echo "docker-engine: dockerd did not answer within 60 s; the end of $log:" >&2
tail -n 40 "$log" >&2 || true
exit 1
