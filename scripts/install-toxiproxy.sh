#!/usr/bin/env bash
# Installs the pinned Toxiproxy server (and its CLI) that the fault lab
# (tests/faults/) puts between the bridge and its servers, from the Go module
# proxy, into .cache/toxiproxy-<version>/. Idempotent: a second run finds the
# binaries and builds nothing. Prints the server's path on its last line.
# Needs the Go toolchain (`go`); scripts/install-deps.sh --faults installs it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="v2.12.0"
dest="$root/.cache/toxiproxy-$version"
server="$dest/toxiproxy-server"

if [[ ! -x "$server" || ! -x "$dest/toxiproxy-cli" ]]; then
  command -v go > /dev/null || { echo "install-toxiproxy: the Go toolchain is missing (scripts/install-deps.sh --faults)" >&2; exit 1; }
  echo "install-toxiproxy: building Toxiproxy $version from the Go module proxy" >&2
  tmp="$dest.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # GOBIN: the binaries land in our cache, not in ~/go/bin; -trimpath keeps
  # this machine's paths out of them.
  GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -trimpath" go install "github.com/Shopify/toxiproxy/v2/cmd/server@$version" >&2
  GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -trimpath" go install "github.com/Shopify/toxiproxy/v2/cmd/cli@$version" >&2
  mv "$tmp/server" "$tmp/toxiproxy-server"
  mv "$tmp/cli" "$tmp/toxiproxy-cli"
  rm -rf "$dest"
  mv "$tmp" "$dest"
fi
echo "$server"
