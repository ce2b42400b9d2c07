#!/usr/bin/env bash
# Prepares a machine for `deno task demo|test|bench`:
# - containerd (with ctr), runc, iproute2 and the CNI plugins from Debian's packages
#   when missing (as root; otherwise says what to install);
# - the npm dependencies exactly as locked (package-lock.json), when node_modules
#   is missing or older than the lockfile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The CRI test's pod network (bridge, host-local, loopback), where Debian puts them.
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
# The native-container test's #! script runs on a static busybox in its image.
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing ${missing[*]}: install them (apt-get install ${missing[*]}) as root" >&2
    exit 1
  fi
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm is missing (it comes with Node.js)" >&2; exit 1; }
  # npm ci refuses a lockfile whose optional platform packages the registry lacks;
  # npm install with --no-save installs exactly the locked versions and skips them.
  npm install --no-save --ignore-scripts --no-audit --no-fund --loglevel=error
fi
