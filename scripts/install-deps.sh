#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the test servers
# need. Idempotent: when everything is present it checks and returns in about a
# second without touching apt. Works as root or through sudo.
#   scripts/install-deps.sh            build + tests
#   scripts/install-deps.sh --fuzz     also clang and libFuzzer's runtime
#   scripts/install-deps.sh --bench    also Google Benchmark and the Python baseline's packages
#   scripts/install-deps.sh --build-only  only what building the bridge needs (the Dockerfile)
#   scripts/install-deps.sh --container   also the container engine and tools of the `container` tests
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config git
  # libraries (Boost 1.81 component packages, not -all-dev)
  libboost1.81-dev libboost-json1.81-dev libboost-test1.81-dev libboost-system1.81-dev
  librdkafka-dev librocksdb-dev libssl-dev libspdlog-dev libcli11-dev zlib1g-dev
)
test_packages=(
  # test servers and test tools: pouchdb-server (node), Kafka (JDK + Maven), python3 for helpers,
  # a real Prometheus server and promtool (scrape test, alerting-rule check), openssl for test certificates
  nodejs npm default-jre-headless maven python3 python3-prometheus-client python3-yaml procps prometheus openssl
  # the fault lab (tests/faults): Toxiproxy is built from the Go module proxy
  # (scripts/install-toxiproxy.sh), ip/nsenter/unshare make its partitions and
  # full disks, kafka-python (+ lz4) is its checker's independent consumer
  golang-go iproute2 util-linux python3-kafka python3-lz4
)
build_only=0
for arg in "$@"; do
  case "$arg" in
  --build-only) build_only=1 ;; # the Dockerfile's build stage: no test servers
  --fuzz) packages+=(clang libclang-rt-14-dev) ;;
  --bench) packages+=(libbenchmark-dev python3-venv python3-pip linux-perf curl) ;;
  # Docker Engine (dockerd, started by scripts/docker-engine.sh) and Compose
  # v1, debootstrap for the local base images, kcat to read Kafka from the host.
  --container) packages+=(docker.io docker-compose debootstrap kcat) ;;
  *) echo "install-deps: unknown option $arg" >&2; exit 2 ;;
  esac
done
[[ $build_only -eq 1 ]] || packages+=("${test_packages[@]}")

# A tool that is already on PATH from elsewhere (a newer node, a JDK) counts.
declare -A provided_by_command=([docker.io]=dockerd [nodejs]=node [npm]=npm [default-jre-headless]=java [maven]=mvn [python3]=python3 [golang-go]=go [g++]=g++ [cmake]=cmake [git]=git)

missing=()
for p in "${packages[@]}"; do
  if [[ -n "${provided_by_command[$p]:-}" ]] && command -v "${provided_by_command[$p]}" > /dev/null; then
    continue
  fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all packages present"
  exit 0
fi

sudo=""
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo > /dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
