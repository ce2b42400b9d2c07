#!/bin/sh
# containerd-shim-wasmtime-v1 @VERSION@ (revision @REVISION@, linux-@ARCH@), one file:
# this header and, after it, the release tarball (a private deno and the application).
# The first start unpacks the tarball, once per release, into
#   ${WASMTIME_SHIM_APP_ROOT:-/var/lib/containerd-shim-wasmtime/app}/@NAME@
# and every start then runs the application from there. /var/lib, not the directory
# of this file: bin directories are read-only on many nodes, /var/lib is writable and
# survives reboots, and the shim keeps its caches under /var/lib/containerd-shim-wasmtime.
# Concurrent first starts each unpack into a directory of their own, and the first to
# publish it (an atomic symlink) wins; the others remove theirs and use the winner's.
# The winner then prunes what earlier releases and killed first starts left in $root
# (see prune).
# Written by scripts/release.ts from scripts/self_extract.sh.
root=${WASMTIME_SHIM_APP_ROOT:-/var/lib/containerd-shim-wasmtime/app}
app=$root/@NAME@

# True when a process runs an executable from directory $1 (a shim server or guest
# runner of that release still running after an upgrade: it starts runners from there).
# $running lists every process's executable, read once by prune.
in_use() {
  case "$running" in *"
$1/"*) return 0 ;; esac
  return 1
}

# Removes other releases' copies that were published over ten minutes ago and that no
# process runs from, and unpublished copies over an hour old (first starts that were
# killed). The ages keep a copy that another release's first start is about to run, or
# is still unpacking, out of reach. A release whose copy went comes back by unpacking
# itself again on its next start. Best effort: a failure here never fails the start.
prune() {
  real=$(cd "$root" && pwd -P) || return 0
  running="
$(for exe in /proc/[0-9]*/exe; do readlink "$exe" 2>/dev/null; done)"
  for link in "$root"/containerd-shim-wasmtime-*; do
    [ -L "$link" ] && [ "$link" != "$app" ] || continue
    [ -n "$(find "$link" -maxdepth 0 -mmin +10)" ] || continue
    target=$(readlink "$link") || continue
    copy=${target%%/*}
    case "$copy" in .containerd-shim-wasmtime-*) ;; *) continue ;; esac
    in_use "$real/$copy" && continue
    rm -f "$link" && rm -rf "${root:?}/$copy"
  done
  for copy in "$root"/.containerd-shim-wasmtime-*; do
    [ -d "$copy" ] && [ -n "$(find "$copy" -maxdepth 0 -mmin +60)" ] || continue
    linked=
    for link in "$root"/containerd-shim-wasmtime-*; do
      [ -L "$link" ] && [ "$(readlink "$link" | cut -d/ -f1)" = "${copy##*/}" ] && linked=1
    done
    [ -n "$linked" ] || in_use "$real/${copy##*/}" || rm -rf "$copy"
  done
}

unpack() {
  fail() {
    echo "containerd-shim-wasmtime-v1: $*" >&2
    exit 1
  }
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
  esac
  [ "$arch" = @ARCH@ ] ||
    fail "$0 is built for linux-@ARCH@, but this node is linux-$arch: use the linux-$arch release"
  umask 022
  mkdir -p "$root" ||
    fail "cannot create $root to unpack the application into: make it writable, or set WASMTIME_SHIM_APP_ROOT (in containerd's environment) to a directory that is"
  # Code is run from here: a directory that others may write to is refused.
  case "$(ls -ld "$root")" in
    ?????w* | ????????w*) fail "$root is writable by group or others, so code in it cannot be trusted: chmod go-w $root" ;;
  esac
  [ -O "$root" ] || fail "$root belongs to another user, so code in it cannot be trusted: chown $(id -u) $root"
  tmp=$(mktemp -d "$root/.@NAME@.XXXXXX") || fail "cannot create a directory in $root"
  chmod 0755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 1' HUP INT TERM
  sum=$(tail -c +@OFFSET@ "$0" | sha256sum) || fail "cannot read $0 (sha256sum and tail are needed)"
  [ "${sum%% *}" = @SHA256@ ] ||
    fail "$0 is corrupt or truncated (its payload's SHA-256 is ${sum%% *}, expected @SHA256@): download it again"
  tail -c +@OFFSET@ "$0" | tar -xzf - -C "$tmp" || fail "unpacking $0 into $tmp failed (disk full?)"
  [ -x "$tmp/@TOP@/app/deno" ] || fail "$0 holds no application: build the release again"
  # -n: where $app already links to a directory, fail rather than link inside it.
  if ln -sn "${tmp##*/}/@TOP@/app" "$app" 2>/dev/null; then
    trap - EXIT HUP INT TERM
    # Deno's module cache is keyed by absolute paths: filled through the published name.
    sh "$app/launcher_form.sh" cache "$app" ||
      echo "containerd-shim-wasmtime-v1: warning: filling the module cache in $app failed; modules are transpiled on use" >&2
    prune 2>/dev/null || true
  else
    # Another first start published its copy first (or $app is in the way).
    rm -rf "$tmp"
    trap - EXIT HUP INT TERM
    [ -d "$app" ] || fail "cannot publish the unpacked application as $app"
  fi
}
[ -d "$app" ] || unpack
@LAUNCHER@
exit 1
