#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang, -fsanitize=fuzzer,
# address and undefined) and runs each one, one after the other, for a fixed
# number of executions from the seed corpus that tests/fuzz/make_corpus.py
# writes from the CouchDB recordings. Prints one summary line per target.
#   scripts/fuzz.sh [--runs N] [--seed S] [--max-len BYTES] [target ...]
# Defaults: 10,000,000 runs, seed 14, max_len 4096, every target. Runs at
# `nice -n 19`. The grown corpus, the logs and any crash input go to
# build/fuzz/out/<target>/ (the repository's seed corpora are not touched
# beyond what make_corpus.py writes). Exit status 1 when a target found a
# crash, a leak or a failed check (its input is in the artifacts there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs=10000000
seed=14
max_len=4096
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
  --runs) runs="${2:?--runs N}"; shift 2 ;;
  --seed) seed="${2:?--seed S}"; shift 2 ;;
  --max-len) max_len="${2:?--max-len BYTES}"; shift 2 ;;
  -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
  -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
  *) targets+=("$1"); shift ;;
  esac
done

# target -> its seed corpus
declare -A corpus=(
  [fuzz_changes_parser]=tests/data/couch/fuzz-corpus
  [fuzz_shard_seq]=tests/data/couch/shard-seq-corpus
  [fuzz_db_updates]=tests/data/couch/db-updates-corpus
  [fuzz_all_dbs]=tests/data/couch/all-dbs-corpus
)
[[ ${#targets[@]} -gt 0 ]] || targets=(fuzz_changes_parser fuzz_shard_seq fuzz_db_updates fuzz_all_dbs)
for t in "${targets[@]}"; do
  [[ -n "${corpus[$t]:-}" ]] || { echo "fuzz.sh: unknown target $t (known: ${!corpus[*]})" >&2; exit 2; }
done

bash scripts/install-deps.sh --fuzz
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
cmake --preset fuzz > /dev/null
nice -n 19 cmake --build --preset fuzz
python3 tests/fuzz/make_corpus.py

failed=0
for t in "${targets[@]}"; do
  out="build/fuzz/out/$t"
  mkdir -p "$out/corpus"
  cp -n "${corpus[$t]}"/* "$out/corpus/"
  log="$out/fuzz.log"
  start=$(date +%s)
  rc=0
  # -fork/-jobs stay off: one core, one process. Leak checking stays on.
  nice -n 19 "build/fuzz/tests/fuzz/$t" -runs="$runs" -seed="$seed" -max_len="$max_len" \
    -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus" > "$log" 2>&1 || rc=$?
  secs=$(($(date +%s) - start))
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  last="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")"
  corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<< "$last")"
  if [[ $rc -ne 0 ]]; then
    failed=1
    echo "$t: FAILED (exit $rc) after ${execs:-?} executions in ${secs} s; see $log" >&2
    grep -E 'ERROR|SUMMARY|artifact' "$log" | head -5 >&2 || true
  fi
  echo "$t: runs ${execs:-?} in ${secs} s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, exit $rc"
done
exit $failed
