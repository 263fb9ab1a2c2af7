#!/usr/bin/env bash
# couch-server.sh start|stop STATE_DIR
# Starts pouchdb-server (in memory) on a free loopback port, waits until it
# answers, and writes STATE_DIR/couch.env (CKB_TEST_COUCH_URL=...). With
# CKB_TEST_COUCH_URL already set it starts nothing and records that URL.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/common.sh"

action="${1:?start|stop}"
state="${2:?state dir}"
mkdir -p "$state"
pidfile="$state/couch.pid"

case "$action" in
start)
  stop_pid_file "$pidfile"
  rm -f "$state/couch.env"
  if [[ -n "${CKB_TEST_COUCH_URL:-}" ]]; then
    echo "CKB_TEST_COUCH_URL=$CKB_TEST_COUCH_URL" > "$state/couch.env"
    echo "couch-server: using the external server from CKB_TEST_COUCH_URL"
    exit 0
  fi
  bash "$root/scripts/fetch-test-servers.sh" couch
  bin="$here/node_modules/pouchdb-server/bin/pouchdb-server"
  [[ -f "$bin" ]] || { echo "couch-server: $bin is missing (npm ci in tests/servers failed?)" >&2; exit 1; }
  work="$state/pouchdb"
  rm -rf "$work"; mkdir -p "$work"
  port="$(free_port)"
  # setsid: its own process group, so stop kills node and anything it forked.
  (cd "$work" && exec setsid node "$bin" --host 127.0.0.1 --port "$port" --in-memory --no-color \
      > "$state/couch.log" 2>&1 < /dev/null) &
  echo $! > "$pidfile"
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 300); do
    if http_ok "$url/"; then
      echo "CKB_TEST_COUCH_URL=$url" > "$state/couch.env"
      echo "couch-server: pouchdb-server ready at $url (pid $(cat "$pidfile"))"
      exit 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "couch-server: pouchdb-server exited during startup; its log:" >&2
      tail -n 40 "$state/couch.log" >&2 || true
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.1
  done
  echo "couch-server: pouchdb-server did not answer on $url within 30 s; its log:" >&2
  tail -n 40 "$state/couch.log" >&2 || true
  stop_pid_file "$pidfile"
  exit 1
  ;;
stop)
  stop_pid_file "$pidfile"
  rm -f "$state/couch.env"
  echo "couch-server: stopped"
  ;;
*)
  echo "usage: couch-server.sh start|stop STATE_DIR" >&2
  exit 2
  ;;
esac
