#!/usr/bin/env bash
# The fault lab's long schedule (issue 14): the soak profile (partitions of
# 1-60 s, longer stalls and full disks) against the release-like `ci` build,
# writing the table to docs/FAULTS.md.
#   scripts/soak.sh [--faults N] [--seed S] [other tests/faults/lab.py options]
# Defaults: 1000 faults, seed 14. Needs root; takes hours at 1000 faults.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

faults=1000
seed=14
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
  --faults) faults="${2:?--faults N}"; shift 2 ;;
  --seed) seed="${2:?--seed S}"; shift 2 ;;
  *) extra+=("$1"); shift ;;
  esac
done

bash scripts/install-deps.sh
bash scripts/fetch-test-servers.sh all
bash scripts/install-toxiproxy.sh > /dev/null

preset="${CKB_TEST_PRESET:-ci}"
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
cmake --preset "$preset" > /dev/null
cmake --build --preset "$preset" --target couch-kafka-bridge

exec /usr/bin/python3 tests/faults/lab.py --profile soak --seed "$seed" --faults "$faults" \
  --bridge "build/$preset/bridge/couch-kafka-bridge" --report docs/FAULTS.md "${extra[@]}"
