#!/usr/bin/env bash
# Installs containerd-shim-wasmtime-v1 (and oci-tar-builder) so containerd finds it.
#
#   scripts/install.sh [--uninstall]
#
# Environment:
#   PREFIX      install prefix (default /usr/local): binaries in $PREFIX/bin,
#               the application in $PREFIX/lib/containerd-shim-wasmtime
#   DENO        the deno executable to use (default: deno on PATH; if missing,
#               Deno 2.9.6 is installed from the npm registry)
#   DENORT_BIN  a denort runtime for `deno compile` on machines without internet
#
# Two forms are installed, whichever works here:
#   compiled  a single executable from `deno compile` (needs Deno's runtime, which
#             deno downloads from its own server, or DENORT_BIN);
#   launcher  a small script that runs the application with a private copy of
#             deno and its dependencies cached at install time (works offline).
# Re-running is safe (idempotent); --uninstall removes exactly what was installed.
set -euo pipefail

PREFIX="${PREFIX:-/usr/local}"
DENO_VERSION="2.9.6"
SHIM=containerd-shim-wasmtime-v1
BUILDER=oci-tar-builder
APP_DIR="$PREFIX/lib/containerd-shim-wasmtime"
BIN_DIR="$PREFIX/bin"
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

uninstall() {
  rm -f "$BIN_DIR/$SHIM" "$BIN_DIR/$BUILDER"
  rm -rf "$APP_DIR"
  say "removed $BIN_DIR/$SHIM, $BIN_DIR/$BUILDER and $APP_DIR"
}

find_deno() {
  if [[ -n "${DENO:-}" ]]; then echo "$DENO"; return; fi
  if command -v deno >/dev/null 2>&1; then command -v deno; return; fi
  command -v npm >/dev/null 2>&1 || die "deno is not installed and npm is missing to install it (apt-get install -y npm)"
  say "installing Deno $DENO_VERSION from the npm registry"
  npm install -g --silent "deno@$DENO_VERSION" >&2
  command -v deno || die "npm installed deno@$DENO_VERSION but it is not on PATH"
}

if [[ "${1:-}" == "--uninstall" ]]; then uninstall; exit 0; fi
[[ $# -eq 0 ]] || die "unknown argument: $1 (usage: install.sh [--uninstall])"

DENO_BIN="$(find_deno)"
# The real binary, not an npm wrapper script.
DENO_BIN="$(readlink -f "$DENO_BIN")"
have_version="$("$DENO_BIN" --version | head -1 | awk '{print $2}')"
[[ "$have_version" == "$DENO_VERSION" ]] || say "warning: deno $have_version found, $DENO_VERSION is the tested version"

mkdir -p "$BIN_DIR"
staging="$(mktemp -d "${PREFIX}/lib/.containerd-shim-wasmtime.XXXXXX" 2>/dev/null || { mkdir -p "$PREFIX/lib"; mktemp -d "${PREFIX}/lib/.containerd-shim-wasmtime.XXXXXX"; })"
trap 'rm -rf "$staging"' EXIT

# The application: sources, lockfile, build info.
cp -r "$SRC_DIR/main.ts" "$SRC_DIR/deno.json" "$SRC_DIR/package.json" "$SRC_DIR/package-lock.json" \
  "$SRC_DIR/src" "$staging/"
[[ -f "$SRC_DIR/deno.lock" ]] && cp "$SRC_DIR/deno.lock" "$staging/"
find "$staging/src" -name '*_test.ts' -delete
find "$staging/src" -type d -name testdata -prune -exec rm -rf {} +
revision="$(git -C "$SRC_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
printf '{"revision":"%s"}\n' "$revision" > "$staging/build_info.json"

# npm dependencies, exactly as locked (npm tolerates optional platform packages that
# the registry lacks; Deno's own resolver does not, so Deno reads node_modules).
command -v npm >/dev/null 2>&1 || die "npm is needed to install the npm dependencies (apt-get install -y npm)"
(cd "$staging" && npm install --omit=dev --no-save --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
  || die "npm install failed (is the npm registry reachable?)"

compiled=0
if [[ "${WASMTIME_SHIM_FORM:-auto}" != "launcher" ]]; then
  if (cd "$staging" && NO_COLOR=1 "$DENO_BIN" compile --quiet -A --unstable-net --no-check --include build_info.json --include src/wasm/component/http_worker.ts \
        -o "$staging/$SHIM" main.ts) >"$staging/compile.log" 2>&1; then
    compiled=1
  else
    say "deno compile is not possible here ($(grep -m1 -iE 'error|fail' "$staging/compile.log" || echo 'see compile.log')); installing the launcher form. Set DENORT_BIN to a denort binary to get a single executable."
  fi
fi

if [[ $compiled -eq 1 ]]; then
  rm -rf "$APP_DIR"
  install -m 0755 "$staging/$SHIM" "$BIN_DIR/$SHIM"
  cat > "$BIN_DIR/$BUILDER" <<SH
#!/bin/sh
exec "$BIN_DIR/$SHIM" oci-tar-builder "\$@"
SH
  chmod 0755 "$BIN_DIR/$BUILDER"
  say "installed compiled $BIN_DIR/$SHIM (revision $revision)"
  exit 0
fi

# Launcher form: a private deno and a private module cache, filled now.
rm -f "$staging/compile.log" "$staging/$SHIM"
cp "$DENO_BIN" "$staging/deno"
rm -rf "$APP_DIR"
mv "$staging" "$APP_DIR"
trap - EXIT
# Fill the module cache (transpiled sources) at the final location.
DENO_DIR="$APP_DIR/deno_dir" "$APP_DIR/deno" cache --quiet --config="$APP_DIR/deno.json" \
  "$APP_DIR/main.ts" "$APP_DIR/src/wasm/guest_main.ts" "$APP_DIR/src/shim/daemon.ts" \
  "$APP_DIR/src/shim/start.ts" "$APP_DIR/src/shim/delete.ts" "$APP_DIR/src/oci/builder_cli.ts" >&2 \
  || die "caching the application's modules at $APP_DIR failed"

write_launcher() {
  local path="$1" action="$2"
  cat > "$path.tmp" <<SH
#!/bin/sh
# Installed by containerd-shim-wasmtime's scripts/install.sh (launcher form).
DENO_DIR="$APP_DIR/deno_dir" exec "$APP_DIR/deno" run --no-prompt --no-check --quiet --cached-only \\
  --config="$APP_DIR/deno.json" -A "$APP_DIR/main.ts" $action "\$@"
SH
  chmod 0755 "$path.tmp"
  mv "$path.tmp" "$path"
}
write_launcher "$BIN_DIR/$SHIM" ""
write_launcher "$BIN_DIR/$BUILDER" "oci-tar-builder"
say "installed launcher $BIN_DIR/$SHIM -> $APP_DIR (revision $revision)"
