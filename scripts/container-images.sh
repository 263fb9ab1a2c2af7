#!/usr/bin/env bash
# Builds, without any container registry, the images the `container` tests
# run: Debian bookworm base images made with debootstrap, the bridge image
# from the Dockerfile, and stand-ins for the official images that cannot be
# pulled here (CouchDB -> pouchdb-server, apache/kafka -> the test suite's
# Kafka jars, prom/prometheus -> Debian's prometheus). deploy/compose.test.yml
# swaps the stand-ins in.
#   scripts/container-images.sh [all|base|bridge|standins]   (default: all)
# Cached and idempotent: a base image is made once per engine and recipe (or
# again with CKB_REBUILD_BASE=1); the others are docker builds
# whose layer cache makes a repeated run take seconds. Installs what it needs
# (scripts/install-deps.sh --container) and starts dockerd when none runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want="${1:-all}"

# The classic builder: BuildKit would fetch its front-end image from a registry.
export DOCKER_BUILDKIT=0
bash scripts/install-deps.sh --container > /dev/null
bash scripts/docker-engine.sh

suite=bookworm
work="$root/.cache/container-images"
mkdir -p "$work"

log() { echo "container-images: $*"; }

# The Debian mirror apt uses on this machine, so a build reaches the same archive.
debian_mirror() {
  local uri
  uri="$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)\/\?[[:space:]]*$/\1/p' \
      /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)"
  [[ -n "$uri" ]] || uri="$(awk '$1 == "deb" && $2 ~ /^http.*\/debian\/?$/ { print $2; exit }' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

# Copies this machine's enabled apt sources (and the keyrings they name) into ROOT.
copy_apt_sources() {
  local rootfs="$1" f key
  local files=()
  if [[ -f /etc/apt/sources.list ]]; then
    files+=(/etc/apt/sources.list)
  fi
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [[ -f "$f" ]]; then
      files+=("$f")
    fi
  done
  [[ ${#files[@]} -gt 0 ]] || return 0
  rm -f "$rootfs/etc/apt/sources.list"
  for f in "${files[@]}"; do
    # Only Debian's own archives: a third-party repository's keyring and
    # packages have no place in the base image.
    if ! grep -qE 'debian\.org|/debian(-security)?/?([[:space:]]|$)' "$f"; then
      continue
    fi
    install -D -m 0644 "$f" "$rootfs$f"
    for key in $(grep -oE '(Signed-By:|signed-by=)[[:space:]]*/[^] ]+' "$f" | sed -E 's/^(Signed-By:|signed-by=)[[:space:]]*//'); do
      if [[ -f "$key" && ! -f "$rootfs$key" ]]; then
        install -D -m 0644 "$key" "$rootfs$key"
      fi
    done
  done
}

# What Debian's -slim images do to stay small: no documentation, manual
# pages or translations (now or from packages installed later; copyright files
# stay), no recommends, no apt caches.
slim_rootfs() {
  local rootfs="$1"
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/90ckb-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  cat > "$rootfs/etc/apt/apt.conf.d/90ckb-slim" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
// No package caches or downloaded .debs left in image layers.
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
CFG
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,info,groff,lintian}/*
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/*.log "$rootfs"/tmp/*
}

build_base() {
  # The label names the recipe, so a change to it makes the base again.
  local base_label
  base_label="ckb.base=debootstrap-minbase-$suite-$(declare -f slim_rootfs copy_apt_sources | sha256sum | cut -c1-12)"
  if [[ -z "${CKB_REBUILD_BASE:-}" ]] &&
      [[ "$(docker image inspect -f '{{index .Config.Labels "ckb.base"}}' debian:$suite 2>/dev/null)" == "${base_label#*=}" ]] &&
      docker image inspect debian:$suite-slim > /dev/null 2>&1; then
    log "base images debian:$suite and debian:$suite-slim present"
    return 0
  fi
  local mirror rootfs old start=$SECONDS
  old="$(docker image inspect -f '{{.Id}}' debian:$suite 2>/dev/null || true)"
  mirror="$(debian_mirror)"
  rootfs="$work/rootfs-$suite"
  log "debootstrap --variant=minbase $suite from $mirror (about a minute)"
  rm -rf "$rootfs"
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 || {
    echo "container-images: debootstrap failed; the end of its log:" >&2
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }
  copy_apt_sources "$rootfs"
  slim_rootfs "$rootfs"
  tar -C "$rootfs" --numeric-owner -c . |
    docker import --change 'CMD ["bash"]' --change "LABEL $base_label" \
      --change 'ENV LANG=C.UTF-8' - "debian:$suite" > /dev/null
  docker tag "debian:$suite" "debian:$suite-slim"
  rm -rf "$rootfs"
  # The replaced base, unless images built on it still hold it.
  if [[ -n "$old" ]]; then
    docker image rm "$old" > /dev/null 2>&1 || true
  fi
  log "base images debian:$suite and debian:$suite-slim imported ($((SECONDS - start)) s)"
}

build_bridge() {
  local start=$SECONDS
  log "building couch-kafka-bridge:local from the Dockerfile (a few minutes cold)"
  docker_build couch-kafka-bridge:local "$root"
  log "couch-kafka-bridge:local built ($((SECONDS - start)) s, $(image_size couch-kafka-bridge:local))"
}

# docker_build TAG CONTEXT: the build's output goes to .cache/container-images/
# (its end is printed when the build fails).
docker_build() {
  local tag="$1" ctx="$2" out
  out="$work/build-${tag//[\/:]/_}.log"
  if ! docker build -t "$tag" "$ctx" > "$out" 2>&1; then
    echo "container-images: building $tag failed; the end of $out:" >&2
    tail -n 60 "$out" >&2
    exit 1
  fi
}

image_size() {
  docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }'
}

# build_standin NAME: the context is assembled under .cache from
# tests/container/images/NAME plus what that image ships from the test suite.
build_standin() {
  local name="$1" ctx="$work/context-$1" start=$SECONDS
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "tests/container/images/$name/." "$ctx/"
  case "$name" in
  couchdb)
    bash scripts/fetch-test-servers.sh couch
    # The npm-installed pouchdb-server of the integration tests: no registry
    # access inside the build.
    cp -a tests/servers/node_modules "$ctx/node_modules"
    ;;
  kafka)
    bash scripts/fetch-test-servers.sh kafka
    local version
    version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tests/servers/kafka/pom.xml)"
    mkdir -p "$ctx/libs"
    cp -a ".cache/kafka-$version/libs/." "$ctx/libs/"
    rm -f "$ctx/libs/.complete"
    cp tests/servers/kafka/log4j.properties "$ctx/log4j.properties"
    ;;
  esac
  docker_build "ckb-test/$name:local" "$ctx"
  log "ckb-test/$name:local built ($((SECONDS - start)) s, $(image_size "ckb-test/$name:local"))"
}

case "$want" in
base) build_base ;;
bridge) build_base; build_bridge ;;
standins) build_base; for s in couchdb kafka prometheus; do build_standin "$s"; done ;;
all) build_base; build_bridge; for s in couchdb kafka prometheus; do build_standin "$s"; done ;;
*) echo "usage: container-images.sh [all|base|bridge|standins]" >&2; exit 2 ;;
esac
