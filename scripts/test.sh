#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing (Debian
# packages, pouchdb-server from npm, Kafka jars from Maven Central), builds the
# `ci` preset (warnings as errors) and runs every test through ctest, which
# starts and stops the real servers as fixtures.
#   scripts/test.sh                 everything, including the slow crash tests
#   scripts/test.sh -L unit         extra arguments go to ctest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/install-deps.sh
bash scripts/fetch-test-servers.sh all

# ccache hits across clones of the repo (CI builds a fresh clone each time).
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1

preset="${CKB_TEST_PRESET:-ci}"
cmake --preset "$preset" > /dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" "$@"
