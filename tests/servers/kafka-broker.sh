#!/usr/bin/env bash
# kafka-broker.sh start|stop|halt|restart STATE_DIR
# Starts a single-node KRaft Apache Kafka broker on a free loopback port with a
# small heap, waits until it is up, and writes STATE_DIR/kafka.env
# (CKB_TEST_KAFKA_BROKERS=127.0.0.1:PORT). With CKB_TEST_KAFKA_BROKERS already
# set it starts nothing and records that address. `halt` stops the broker and
# `restart` starts it again with the same log dir and ports (the broker-outage
# test uses both).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/common.sh"

action="${1:?start|stop|restart}"
state="${2:?state dir}"
mkdir -p "$state"
pidfile="$state/kafka.pid"
work="$state/kafka"

version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
libs="$root/.cache/kafka-$version/libs"

launch() {
  local java_opts="-Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"
  # shellcheck disable=SC2086
  (exec setsid java $java_opts -Dlog4j.configuration="file:$here/kafka/log4j.properties" \
      -cp "$libs/*" kafka.Kafka "$work/server.properties" >> "$state/kafka.log" 2>&1 < /dev/null) &
  echo $! > "$pidfile"
}

wait_ready() {
  local port="$1" started_marker="$2"
  for _ in $(seq 1 1200); do
    if [[ "$(grep -c 'Kafka Server started' "$state/kafka.log" 2>/dev/null || true)" -ge "$started_marker" ]]; then
      echo "CKB_TEST_KAFKA_BROKERS=127.0.0.1:$port" > "$state/kafka.env"
      echo "kafka-broker: Kafka $version ready at 127.0.0.1:$port (pid $(cat "$pidfile"))"
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "kafka-broker: the broker exited during startup; its log:" >&2
      tail -n 60 "$state/kafka.log" >&2 || true
      rm -f "$pidfile"
      return 1
    fi
    sleep 0.1
  done
  echo "kafka-broker: the broker did not start within 120 s; its log:" >&2
  tail -n 60 "$state/kafka.log" >&2 || true
  stop_pid_file "$pidfile"
  return 1
}

case "$action" in
start)
  stop_pid_file "$pidfile"
  rm -f "$state/kafka.env"
  if [[ -n "${CKB_TEST_KAFKA_BROKERS:-}" ]]; then
    echo "CKB_TEST_KAFKA_BROKERS=$CKB_TEST_KAFKA_BROKERS" > "$state/kafka.env"
    echo "kafka-broker: using the external broker from CKB_TEST_KAFKA_BROKERS"
    exit 0
  fi
  command -v java > /dev/null || { echo "kafka-broker: java is not installed (scripts/install-deps.sh)" >&2; exit 1; }
  bash "$root/scripts/fetch-test-servers.sh" kafka
  rm -rf "$work"; mkdir -p "$work/data"
  : > "$state/kafka.log"
  port="$(free_port)"
  cport="$(free_port)"
  while [[ "$cport" == "$port" ]]; do cport="$(free_port)"; done
  cat > "$work/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$work/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=1
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=2
PROPS
  echo "$port" > "$work/port"
  cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  java -cp "$libs/*" -Dlog4j.configuration="file:$here/kafka/log4j.properties" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$work/server.properties" >> "$state/kafka.log" 2>&1 || {
    echo "kafka-broker: formatting the log dir failed; see $state/kafka.log" >&2
    tail -n 20 "$state/kafka.log" >&2
    exit 1
  }
  launch
  wait_ready "$port" 1
  ;;
restart)
  stop_pid_file "$pidfile"
  [[ -f "$work/port" ]] || { echo "kafka-broker: nothing to restart (no earlier start in $state)" >&2; exit 1; }
  before="$(grep -c 'Kafka Server started' "$state/kafka.log" || true)"
  launch
  wait_ready "$(cat "$work/port")" $((before + 1))
  ;;
halt)
  # Stops the broker but keeps its data, ports and kafka.env (a broker outage).
  stop_pid_file "$pidfile"
  echo "kafka-broker: halted"
  ;;
stop)
  stop_pid_file "$pidfile"
  rm -f "$state/kafka.env"
  echo "kafka-broker: stopped"
  ;;
*)
  echo "usage: kafka-broker.sh start|stop|halt|restart STATE_DIR" >&2
  exit 2
  ;;
esac
