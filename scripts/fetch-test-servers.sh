#!/usr/bin/env bash
# Fetches the real servers the integration tests run against, once:
#   - pouchdb-server (npm, pinned by tests/servers/package-lock.json) into tests/servers/node_modules
#   - Apache Kafka jars (Maven Central, pinned by tests/servers/kafka/pom.xml) into .cache/kafka-<version>/libs
# A second run finds both and downloads nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

want="${1:-all}"

if [[ "$want" == all || "$want" == couch ]]; then
  servers="$root/tests/servers"
  stamp="$servers/node_modules/.ckb-installed"
  if [[ ! -f "$stamp" || "$servers/package-lock.json" -nt "$stamp" ]]; then
    echo "fetch-test-servers: installing pouchdb-server (npm ci)"
    (cd "$servers" && npm ci --no-audit --no-fund --loglevel=error) || {
      echo "fetch-test-servers: npm ci failed in tests/servers (is the npm registry reachable?)" >&2
      exit 1
    }
    touch "$stamp"
  fi
fi

if [[ "$want" == all || "$want" == kafka ]]; then
  pom="$root/tests/servers/kafka/pom.xml"
  version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
  libs="$root/.cache/kafka-$version/libs"
  if [[ ! -f "$libs/.complete" ]]; then
    echo "fetch-test-servers: fetching Apache Kafka $version jars from Maven Central"
    rm -rf "$libs"
    mkdir -p "$libs"
    mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$libs" -DincludeScope=runtime || {
      echo "fetch-test-servers: mvn could not fetch the Kafka jars (is Maven Central reachable?)" >&2
      exit 1
    }
    touch "$libs/.complete"
  fi
fi
