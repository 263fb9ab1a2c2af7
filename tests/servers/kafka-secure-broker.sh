#!/usr/bin/env bash
# kafka-secure-broker.sh start|stop STATE_DIR
# A second single-node KRaft Apache Kafka broker, separate from the
# kafka_broker fixture, for the Kafka security tests. It has two client
# listeners on free loopback ports:
#   SSL       TLS only
#   SASL_SSL  TLS + SASL/SCRAM-SHA-512 (user created with the broker's own
#             StorageTool --add-scram when the log dir is formatted)
# Certificates are made at start with openssl (a test CA signing the broker's
# certificate for 127.0.0.1/localhost, and a second, unrelated CA for
# wrong-CA tests) and keytool (the broker's truststore). The SCRAM password
# is random per start. Writes STATE_DIR/kafka-secure.env:
#   CKB_TEST_KAFKA_SSL_BROKERS, CKB_TEST_KAFKA_SASL_SSL_BROKERS,
#   CKB_TEST_KAFKA_CA_FILE, CKB_TEST_KAFKA_OTHER_CA_FILE,
#   CKB_TEST_KAFKA_SASL_USER, CKB_TEST_KAFKA_SASL_PASSWORD
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/common.sh"

action="${1:?start|stop}"
state="${2:?state dir}"
mkdir -p "$state"
pidfile="$state/kafka-secure.pid"
work="$state/kafka-secure"
log="$state/kafka-secure.log"
envfile="$state/kafka-secure.env"

version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
libs="$root/.cache/kafka-$version/libs"

make_certs() {
  local certs="$1" storepass="$2"
  mkdir -p "$certs"
  (
    cd "$certs"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ckb-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.pem 2> /dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ckb-unrelated-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout other-ca.key -out other-ca.pem 2> /dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr 2> /dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile broker.ext \
      -out broker.pem 2> /dev/null
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -out broker.p12 -passout "pass:$storepass"
    keytool -importcert -noprompt -alias ckb-test-ca -file ca.pem -keystore truststore.p12 \
      -storetype PKCS12 -storepass "$storepass" > /dev/null 2>&1
  )
}

case "$action" in
start)
  stop_pid_file "$pidfile"
  rm -f "$envfile"
  command -v java > /dev/null || { echo "kafka-secure-broker: java is not installed (scripts/install-deps.sh)" >&2; exit 1; }
  command -v openssl > /dev/null || { echo "kafka-secure-broker: openssl is not installed (scripts/install-deps.sh)" >&2; exit 1; }
  command -v keytool > /dev/null || { echo "kafka-secure-broker: keytool (the JDK's) is not installed" >&2; exit 1; }
  bash "$root/scripts/fetch-test-servers.sh" kafka
  rm -rf "$work"; mkdir -p "$work/data"
  : > "$log"
  storepass="$(openssl rand -hex 12)"
  sasl_password="scram-$(openssl rand -hex 16)"
  make_certs "$work/certs" "$storepass"
  ssl_port="$(free_port)"
  sasl_port="$(free_port)"
  cport="$(free_port)"
  while [[ "$sasl_port" == "$ssl_port" ]]; do sasl_port="$(free_port)"; done
  while [[ "$cport" == "$ssl_port" || "$cport" == "$sasl_port" ]]; do cport="$(free_port)"; done
  cat > "$work/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=SSL://127.0.0.1:$ssl_port,SASL_SSL://127.0.0.1:$sasl_port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SSL://127.0.0.1:$ssl_port,SASL_SSL://127.0.0.1:$sasl_port
listener.security.protocol.map=SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SSL
ssl.keystore.type=PKCS12
ssl.keystore.location=$work/certs/broker.p12
ssl.keystore.password=$storepass
ssl.key.password=$storepass
ssl.truststore.type=PKCS12
ssl.truststore.location=$work/certs/truststore.p12
ssl.truststore.password=$storepass
ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
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
  chmod 600 "$work/server.properties"
  cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  java -cp "$libs/*" -Dlog4j.configuration="file:$here/kafka/log4j.properties" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$work/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=bridge,password=$sasl_password]" >> "$log" 2>&1 || {
    echo "kafka-secure-broker: formatting the log dir failed; see $log" >&2
    tail -n 20 "$log" >&2
    exit 1
  }
  java_opts="-Xms128m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"
  # shellcheck disable=SC2086
  (exec setsid java $java_opts -Dlog4j.configuration="file:$here/kafka/log4j.properties" \
      -cp "$libs/*" kafka.Kafka "$work/server.properties" >> "$log" 2>&1 < /dev/null) &
  echo $! > "$pidfile"
  for _ in $(seq 1 1200); do
    if grep -q 'Kafka Server started' "$log" 2>/dev/null; then
      umask 077
      cat > "$envfile" <<ENV
CKB_TEST_KAFKA_SSL_BROKERS=127.0.0.1:$ssl_port
CKB_TEST_KAFKA_SASL_SSL_BROKERS=127.0.0.1:$sasl_port
CKB_TEST_KAFKA_CA_FILE=$work/certs/ca.pem
CKB_TEST_KAFKA_OTHER_CA_FILE=$work/certs/other-ca.pem
CKB_TEST_KAFKA_SASL_USER=bridge
CKB_TEST_KAFKA_SASL_PASSWORD=$sasl_password
ENV
      echo "kafka-secure-broker: Kafka $version ready: SSL 127.0.0.1:$ssl_port, SASL_SSL 127.0.0.1:$sasl_port (pid $(cat "$pidfile"))"
      exit 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "kafka-secure-broker: the broker exited during startup; its log:" >&2
      tail -n 60 "$log" >&2 || true
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.1
  done
  echo "kafka-secure-broker: the broker did not start within 120 s; its log:" >&2
  tail -n 60 "$log" >&2 || true
  stop_pid_file "$pidfile"
  exit 1
  ;;
stop)
  stop_pid_file "$pidfile"
  rm -f "$envfile"
  rm -rf "$work/certs"
  echo "kafka-secure-broker: stopped"
  ;;
*)
  echo "usage: kafka-secure-broker.sh start|stop STATE_DIR" >&2
  exit 2
  ;;
esac
