#!/bin/bash
# Writes server.properties from the environment the way the apache/kafka
# image does (KAFKA_FOO_BAR -> foo.bar, "__" -> "_", "___" -> "-"; the
# launcher's own KAFKA_*_OPTS variables are not broker settings), formats the
# log directory with CLUSTER_ID on first start, and runs the broker as PID 1
# so that it gets the container's SIGTERM.
set -euo pipefail
: "${CLUSTER_ID:?the stand-in needs CLUSTER_ID (KRaft)}"
props=/opt/kafka/config/server.properties
: > "$props"
while IFS='=' read -r name value; do
  case "$name" in
  KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_LOG4J_OPTS | KAFKA_JMX_OPTS | KAFKA_GC_LOG_OPTS | KAFKA_VERSION) continue ;;
  esac
  key="${name#KAFKA_}"
  key="${key//___/-}"
  key="${key//__/@}"
  key="${key//_/.}"
  key="${key//@/_}"
  echo "${key,,}=$value" >> "$props"
done < <(env | grep '^KAFKA_' | sort)
grep -q '^log.dirs=' "$props" || echo "log.dirs=/var/lib/kafka/data" >> "$props"
echo "kafka stand-in: server.properties from the environment:"
sed 's/^/  /' "$props"

java_opts=(${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m} -XX:+UseSerialGC -Djava.awt.headless=true
  -Dlog4j.configuration=file:/opt/kafka/log4j.properties)
java "${java_opts[@]}" -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format --ignore-formatted \
  -t "$CLUSTER_ID" -c "$props"
exec java "${java_opts[@]}" -cp '/opt/kafka/libs/*' kafka.Kafka "$props"
