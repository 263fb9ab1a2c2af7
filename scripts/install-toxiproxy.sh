#!/usr/bin/env bash
# Installs the pinned Toxiproxy server (and its CLI) that the fault lab
# (tests/faults/) puts between the bridge and its servers, from the Go module
# proxy, into .cache/toxiproxy-<version>/. Idempotent: a second run finds the
# binaries and builds nothing. Prints the server's path on its last line.
# Needs a Go toolchain (`go`, any version); scripts/install-deps.sh installs it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="v2.12.0"
# Toxiproxy v2.12.0 needs Go >= 1.23; an older go (Debian 12 ships 1.19)
# fetches this toolchain, itself a module on the Go module proxy, and builds
# with it.
toolchain="go1.23.4"
dest="$root/.cache/toxiproxy-$version"
server="$dest/toxiproxy-server"

if [[ ! -x "$server" || ! -x "$dest/toxiproxy-cli" ]]; then
  command -v go > /dev/null || { echo "install-toxiproxy: the Go toolchain is missing (scripts/install-deps.sh)" >&2; exit 1; }
  echo "install-toxiproxy: building Toxiproxy $version from the Go module proxy" >&2
  tmp="$dest.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  go_bin=go
  minor="$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
  if [[ -z "$minor" || "$minor" -lt 23 || -n "${CKB_FORCE_GO_TOOLCHAIN:-}" ]]; then
    echo "install-toxiproxy: $(go env GOVERSION) is too old; fetching the $toolchain toolchain module" >&2
    module="golang.org/toolchain@v0.0.1-$toolchain.$(go env GOOS)-$(go env GOARCH)"
    dir="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
    [[ -f "$dir/bin/go" ]] || { echo "install-toxiproxy: could not fetch $module" >&2; exit 1; }
    # The module cache keeps files read-only and not executable: a copy.
    cp -r "$dir" "$tmp/goroot"
    chmod -R u+w "$tmp/goroot"
    chmod -R a+x "$tmp/goroot/bin" "$tmp/goroot/pkg/tool"
    go_bin="$tmp/goroot/bin/go"
  fi
  # GOBIN: the binaries land in our cache, not in ~/go/bin; -trimpath keeps
  # this machine's paths out of them. GOTOOLCHAIN=local: build with go_bin.
  for cmd in server cli; do
    GOTOOLCHAIN=local GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -trimpath" \
      "$go_bin" install "github.com/Shopify/toxiproxy/v2/cmd/$cmd@$version" >&2
  done
  rm -rf "$tmp/goroot"
  mv "$tmp/server" "$tmp/toxiproxy-server"
  mv "$tmp/cli" "$tmp/toxiproxy-cli"
  rm -rf "$dest"
  mv "$tmp" "$dest"
fi
echo "$server"
