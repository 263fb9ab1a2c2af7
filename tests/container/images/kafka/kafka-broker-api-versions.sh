#!/bin/bash
# The official image's tool of this name, for the compose healthcheck: asks
# the broker for its API versions (exit 0 when it answers).
exec java -Xmx64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j.configuration=file:/opt/kafka/log4j.properties \
  -cp '/opt/kafka/libs/*' kafka.admin.BrokerApiVersionsCommand "$@"
