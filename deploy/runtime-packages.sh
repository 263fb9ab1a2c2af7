#!/usr/bin/env bash
# Prints the Debian packages that provide the shared libraries a binary links
# against, one per line. The Dockerfile's build stage runs it so the runtime
# image installs exactly the runtime halves of the -dev packages
# scripts/install-deps.sh installed, with no second list to keep in sync.
#   deploy/runtime-packages.sh BINARY
set -euo pipefail
binary="${1:?usage: runtime-packages.sh BINARY}"

# ldd lines look like "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)".
mapfile -t libs < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
if [[ ${#libs[@]} -eq 0 ]]; then
  echo "runtime-packages: ldd found no shared libraries in $binary" >&2
  exit 1
fi

for lib in "${libs[@]}"; do
  # With merged /usr a file may be registered under /lib or /usr/lib.
  owner=""
  for candidate in "$lib" "/usr${lib}" "${lib#/usr}" "$(readlink -f "$lib")"; do
    if owner="$(dpkg-query -S "$candidate" 2>/dev/null)"; then
      break
    fi
    owner=""
  done
  if [[ -z "$owner" ]]; then
    echo "runtime-packages: no Debian package owns $lib (needed by $binary)" >&2
    exit 1
  fi
  # "libssl3:amd64: /usr/lib/..." -> libssl3
  echo "${owner%%:*}"
done | sort -u
