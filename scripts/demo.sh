#!/usr/bin/env bash
# The bridge's main job on the embedded default, end to end:
#   pouchdb-server (a local CouchDB-compatible server, in memory)
#   -> couch-kafka-bridge --kafka-brokers embedded (librdkafka's in-process cluster)
#   -> the ChangeMeta records that arrive in Kafka, printed by `couch-kafka-bridge tail`.
# Installs what is missing and builds first. Stops everything it started on exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/install-deps.sh
bash scripts/fetch-test-servers.sh couch
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
preset="${CKB_DEMO_PRESET:-ci}"
cmake --preset "$preset" > /dev/null
cmake --build --preset "$preset" --target couch-kafka-bridge
bin="$root/build/$preset/bridge/couch-kafka-bridge"

work="$(mktemp -d -t couch-kafka-bridge-demo.XXXXXX)"
bridge_pid=""
cleanup() {
  [[ -n "$bridge_pid" ]] && kill -TERM "$bridge_pid" 2>/dev/null && wait "$bridge_pid" 2>/dev/null || true
  bash tests/servers/couch-server.sh stop "$work" > /dev/null 2>&1 || true
}
trap cleanup EXIT

bash tests/servers/couch-server.sh start "$work"
couch="$(sed -n 's/^CKB_TEST_COUCH_URL=//p' "$work/couch.env")"

put() { # put PATH JSON
  python3 - "$couch$1" "${2:-}" <<'PY'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode() if sys.argv[2] else None, method="PUT",
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req).read().decode().strip())
PY
}
delete() { # delete PATH REV
  python3 - "$couch$1?rev=$2" <<'PY'
import sys, urllib.request
print(urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="DELETE")).read().decode().strip())
PY
}
rev_of() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rev"])' "$1"; }

echo "== creating database 'demo' with CommCare-shaped documents"
put /demo > /dev/null
put /demo/case-1 '{"doc_type":"CommCareCase","domain":"demo","type":"patient","name":"Alice"}' > /dev/null
put /demo/form-1 '{"doc_type":"XFormInstance","domain":"demo","xmlns":"http://openrosa.org/formdesigner/register"}' > /dev/null
put /demo/user-1 '{"doc_type":"CommCareUser","domain":"demo","username":"alice"}' > /dev/null
put /demo/domain-demo '{"doc_type":"Domain","name":"demo"}' > /dev/null

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
echo "== starting couch-kafka-bridge on the embedded Kafka cluster (metrics on 127.0.0.1:$port)"
"$bin" --couch-url "$couch" --db demo --kafka-brokers embedded --checkpoint-dir "$work/checkpoints" \
  --http-listen "127.0.0.1:$port" --checkpoint-interval 200 > "$work/bridge.log" 2>&1 &
bridge_pid=$!
brokers=""
for _ in $(seq 1 100); do
  brokers="$(sed -n 's/.*embedded kafka cluster: [0-9]* broker(s) at \([^ ]*\).*/\1/p' "$work/bridge.log" | head -n 1)"
  [[ -n "$brokers" ]] && break
  kill -0 "$bridge_pid" 2>/dev/null || { cat "$work/bridge.log"; exit 1; }
  sleep 0.1
done
[[ -n "$brokers" ]] || { echo "the bridge did not report its embedded cluster"; cat "$work/bridge.log"; exit 1; }

echo "== live changes while it follows: an update and a hard delete"
sleep 1
rev="$(rev_of "$(put /demo/case-1 "$(python3 -c 'import json,sys; print(json.dumps({"_rev":sys.argv[1],"doc_type":"CommCareCase","domain":"demo","type":"patient","name":"Alice B."}))' \
  "$(python3 - "$couch/demo/case-1" <<'PY'
import json, sys, urllib.request
print(json.loads(urllib.request.urlopen(sys.argv[1]).read())["_rev"])
PY
)")")")"
form_rev="$(python3 - "$couch/demo/form-1" <<'PY'
import json, sys, urllib.request
print(json.loads(urllib.request.urlopen(sys.argv[1]).read())["_rev"])
PY
)"
delete /demo/form-1 "$form_rev" > /dev/null

echo "== records in Kafka (topic, partition, key, ChangeMeta):"
"$bin" --kafka-brokers "$brokers" tail --topic case --topic form --topic commcare-user --topic domain --topic meta \
  --max-records 6 --timeout-ms 20000

echo "== /status"
python3 - "http://127.0.0.1:$port/status" <<'PY'
import json, sys, urllib.request
print(json.dumps(json.loads(urllib.request.urlopen(sys.argv[1]).read()), indent=2))
PY
echo "== bridge log"
cat "$work/bridge.log"
