#!/usr/bin/env bash
# The fault lab's long schedule (issue 14): the soak profile (partitions of
# 1-60 s, longer stalls and full disks) against the release-like `ci` build,
# writing the table to docs/FAULTS.md.
#   scripts/soak.sh [--faults N] [--seed S] [--mode at-least-once|exactly-once|group]
#                   [other tests/faults/lab.py options]
# Defaults: 1000 faults, seed 14, at-least-once. Group mode runs 3 bridge
# instances in one consumer group (--members N to change). Needs root; takes
# hours at 1000 faults.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

faults=1000
seed=14
mode=at-least-once
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
  --faults) faults="${2:?--faults N}"; shift 2 ;;
  --seed) seed="${2:?--seed S}"; shift 2 ;;
  --mode) mode="${2:?--mode M}"; shift 2 ;;
  *) extra+=("$1"); shift ;;
  esac
done

bash scripts/install-deps.sh
bash scripts/fetch-test-servers.sh all
bash scripts/install-toxiproxy.sh > /dev/null

preset="${CKB_TEST_PRESET:-ci}"
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
cmake --preset "$preset" > /dev/null
cmake --build --preset "$preset" --target couch-kafka-bridge ckb-read-committed

exec /usr/bin/python3 tests/faults/lab.py --profile soak --seed "$seed" --faults "$faults" \
  --mode "$mode" --bridge "build/$preset/bridge/couch-kafka-bridge" \
  --read-committed "build/$preset/tests/faults/ckb-read-committed" --report docs/FAULTS.md "${extra[@]}"
