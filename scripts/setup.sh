#!/usr/bin/env bash
# Prepares a machine for `deno task demo|test|bench`:
# - containerd (with ctr), runc, iproute2 and the CNI plugins from Debian's packages
#   when missing (as root; otherwise says what to install);
# - with --containerd-releases (the test:e2e-1.7 and test:e2e-2 tasks): containerd 1.7
#   and 2.x from Debian trixie and sid, unpacked into .cache/containerd (never
#   installed; see below);
# - the npm dependencies exactly as locked (package-lock.json), when node_modules
#   is missing or older than the lockfile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

releases=0
for arg in "$@"; do
  case $arg in
    --containerd-releases) releases=1 ;;
    *) echo "setup: unknown argument $arg (known: --containerd-releases)" >&2; exit 2 ;;
  esac
done

missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The CRI test's pod network (bridge, host-local, loopback), where Debian puts them.
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
# The native-container test's #! script runs on a static busybox in its image.
[[ -x /bin/busybox ]] || missing+=(busybox-static)
# The kernel's system call numbers, which scripts/gen_syscalls_test.ts checks against.
[[ -f /usr/include/asm-generic/unistd.h ]] || missing+=(linux-libc-dev)
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

# containerd 1.7 (Debian 13, trixie) and 2.x (Debian sid) for the end-to-end tasks
# test:e2e-1.7 and test:e2e-2: their `containerd` packages, downloaded with a private
# apt configuration (sources list, package lists and cache in a temp dir; the system's
# apt sources, lists and dpkg database stay untouched) and unpacked with dpkg-deb into
# .cache/containerd/<Debian version>/, with .cache/containerd/{1.7,2} naming them.
# Nothing is installed: the harness runs these binaries from there (E2E_CONTAINERD).
# Done once; E2E_CONTAINERD_REFRESH=1 fetches the suites' current versions again.
# Their runc packages are not taken: trixie's and sid's runc need glibc 2.38 (Debian 12
# has 2.36), and containerd 1.7/2.x work with Debian 12's runc 1.1.
# Only with --containerd-releases: the demo and `deno task test` run on Debian 12's.
# A subshell, so its temp dir goes with its EXIT trap; every step checks its own status
# (errexit does not apply inside a function called as an `if` condition).
fetch_containerd() (
  local cache=.cache/containerd suites=("trixie 1.7" "sid 2") need=()
  local s
  for s in "${suites[@]}"; do
    set -- $s
    if [[ ${E2E_CONTAINERD_REFRESH:-} == 1 || ! -x $cache/$2/usr/bin/containerd ]]; then
      need+=("$s")
    fi
  done
  [[ ${#need[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || {
    echo "setup: apt-get and dpkg-deb are needed to fetch containerd 1.7 and 2.x" >&2
    return 1
  }
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [[ -r $keyring ]] || { echo "setup: $keyring is missing (apt-get install debian-archive-keyring)" >&2; return 1; }
  local tmp
  tmp="$(mktemp -d /tmp/setup-apt.XXXXXX)" || return 1
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs" || return 1
  for s in "${need[@]}"; do
    set -- $s
    # The installed keyring signs trixie and sid (their Release files carry the
    # current archive keys), so the downloads are verified as the system's are.
    echo "deb [signed-by=$keyring] http://deb.debian.org/debian $1 main" >>"$tmp/sources.list"
  done
  # Every path apt would write is in $tmp; the dpkg status is only read (for
  # dependency resolution apt-get download does not do). Root's _apt sandbox user
  # cannot enter the 0700 temp dir, so apt runs the download as root.
  local apt=(-qq -o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=-
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "Dir::State::extended_states=$tmp/extended_states"
    -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  echo "setup: fetching the containerd packages of Debian ${need[*]%% *}" >&2
  apt-get "${apt[@]}" update || { echo "setup: apt-get update of trixie/sid failed" >&2; return 1; }
  mkdir -p "$cache" || return 1
  for s in "${need[@]}"; do
    set -- $s
    local suite=$1 major=$2 deb version
    (cd "$tmp/debs" && apt-get "${apt[@]}" download "containerd/$suite") ||
      { echo "setup: apt-get download containerd/$suite failed" >&2; return 1; }
    deb="$(ls "$tmp"/debs/containerd_*.deb)" && version="$(dpkg-deb -f "$deb" Version)" || {
      echo "setup: no readable containerd package from $suite" >&2
      return 1
    }
    # The suite must still carry the series its task is named after.
    [[ $version == "$major".* ]] || {
      echo "setup: Debian $suite has containerd $version, not $major.x" >&2
      return 1
    }
    if [[ ! -x $cache/$version/usr/bin/containerd ]]; then
      rm -rf "$cache/$version.tmp"
      dpkg-deb -x "$deb" "$cache/$version.tmp" && mv "$cache/$version.tmp" "$cache/$version" || {
        echo "setup: unpacking $deb failed" >&2
        return 1
      }
    fi
    ln -sfn "$version" "$cache/$major" && rm -f "$deb" || return 1
  done
)
if [[ $releases -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "setup: fetching containerd 1.7 and 2.x needs root (apt-get download, dpkg-deb)" >&2
  exit 1
fi
fetch_containerd || { echo "setup: containerd 1.7/2.x could not be fetched (see above)" >&2; exit 1; }
for major in 1.7 2; do
  if [[ -x .cache/containerd/$major/usr/bin/containerd ]]; then
    echo "setup: containerd $major: $(readlink .cache/containerd/$major) in $PWD/.cache/containerd/$major/usr/bin" >&2
  fi
done
