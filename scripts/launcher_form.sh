#!/bin/sh
# The steps of the launcher form that scripts/install.sh, the release build
# (scripts/release.ts) and the self-extracting launcher share, kept in one place.
# A copy travels inside the application directory, so that a node with no checkout
# (an installed release tarball, the self-extracting launcher) runs the same steps.
#
#   launcher_form.sh bundle APP      bundle the start/delete actions and the guest
#                                    runner where `deno bundle` works (needs the npm
#                                    registry once, for esbuild); never fails
#   launcher_form.sh cache APP       fill APP/deno_dir, Deno's module cache, offline
#   launcher_form.sh launcher APP ACTION [lifecycle]
#                                    print a launcher's commands; they run the
#                                    application in the directory "$app", which the
#                                    caller sets before them
#
# APP holds the private deno, main.ts, src/ and node_modules/.
set -eu

say() { printf 'launcher_form.sh: %s\n' "$*" >&2; }

# Deno's module cache holds transpiled sources keyed by their absolute path, and
# SQLite files whose bytes differ from run to run: it is filled where the application
# finally lives, from its own files only. Nothing here is remote (npm packages come
# from node_modules), so no network is needed; a remote import would fail here, as
# HTTPS_PROXY and the registries are unreachable on a node without network.
cache() {
  app="$1"
  DENO_DIR="$app/deno_dir" "$app/deno" cache --quiet --config="$app/deno.json" \
    "$app/main.ts" "$app/src/wasm/guest_main.ts" "$app/src/wasm/component/mod.ts" \
    "$app/src/wasm/runner_main.ts" "$app/src/shim/daemon.ts" \
    "$app/src/shim/start.ts" "$app/src/shim/delete.ts" "$app/src/oci/builder_cli.ts" >&2
  # The start and delete actions run without the config (see launcher): cache them so too.
  DENO_DIR="$app/deno_dir" "$app/deno" cache --quiet --no-config --no-lock \
    "$app/main.ts" "$app/src/shim/lifecycle_main.ts" >&2
}

# Bundles save each start/delete ~4 ms and each WASI preview1 guest ~8 ms of CPU. The
# chunks go beside the sources, so that the paths they compute from their own URL
# hold. The component host stays in the sources (guest_main.ts names it at run time).
bundle() {
  app="$1"
  if ! (cd "$app" && NO_COLOR=1 "$app/deno" bundle --quiet --platform deno --code-splitting \
    --no-config --no-lock --outdir "$app/src/shim" src/shim/lifecycle_main.ts) >&2; then
    rm -f "$app/src/shim/lifecycle_main.js"
    say "deno bundle is not possible here; start and delete run from the sources (~4 ms slower each)"
  fi
  if ! (cd "$app" && NO_COLOR=1 "$app/deno" bundle --quiet --platform deno \
    --no-config --no-lock --output "$app/src/wasm/runner_main.js" src/wasm/runner_main.ts) >&2; then
    rm -f "$app/src/wasm/runner_main.js"
    say "deno bundle is not possible here; guest runners run from the sources (~8 ms more CPU each)"
  fi
}

# With "lifecycle", the `start` and `delete` actions (the last argument; containerd
# runs them on the critical path of every container) skip the config: they import
# no npm package, and reading it costs ~1.5 ms of each run.
launcher() {
  app="$1" action="$2" lifecycle="${3:-}"
  entry='$app/main.ts'
  if [ -f "$app/src/shim/lifecycle_main.js" ]; then entry='$app/src/shim/lifecycle_main.js'; fi
  run='DENO_DIR="$app/deno_dir" exec "$app/deno" run --no-prompt --no-check --quiet --cached-only'
  if [ -n "$lifecycle" ]; then
    echo 'for last; do :; done'
    # `delete` of a task the server deleted cleanly: the server left the answer in
    # the bundle's `cleaned` file (src/shim/delete.ts), and its slot is gone; send it
    # without starting Deno (~25 ms of CPU on every container's teardown).
    echo 'if [ "$last" = delete ]; then'
    echo '  b=$PWD; prev=; slot='
    echo '  for a; do [ "$prev" = -bundle ] && b=$a; prev=$a; done'
    echo '  [ -f "$b/slot" ] && read -r slot < "$b/slot"'
    echo '  if [ -s "$b/cleaned" ] && { [ -z "$slot" ] || [ ! -e "$slot" ]; } &&'
    echo '    command -v cat > /dev/null; then exec cat "$b/cleaned"; fi'
    echo 'fi'
    echo 'case "$last" in start|delete)'
    echo "  $run --no-config --no-lock -A \"$entry\" \"\$@\" ;;"
    echo 'esac'
  fi
  echo "$run --config=\"\$app/deno.json\" -A \"\$app/main.ts\" $action \"\$@\""
}

[ $# -ge 2 ] || { say "usage: launcher_form.sh bundle|cache|launcher APP [ACTION [lifecycle]]"; exit 2; }
case "$1" in
  bundle) bundle "$2" ;;
  cache) cache "$2" ;;
  launcher) launcher "$2" "${3:-}" "${4:-}" ;;
  *) say "unknown step: $1 (bundle, cache or launcher)"; exit 2 ;;
esac
