#!/bin/bash
# The installer DaemonSet's script (deploy/daemonset.yaml), the entrypoint of the
# installer image (`deno task installer-image`), where it runs under the image's
# static bash with busybox's tools.
#
# 1. Installs the release beside it into $PREFIX and adds the runtime "wasmtime" to
#    the node's containerd config ($CONTAINERD_CONFIG), restarting containerd once,
#    only when that config changed (install.sh --configure-containerd --restart, with
#    $SYSTEMCTL reaching the node's systemd).
# 2. Labels the node wasmtime.containerd.io/installed=<version> through the
#    Kubernetes API (see deploy/node_status.ts), when it runs in a pod that has
#    NODE_NAME and a service account token.
# 3. Sleeps with no child process, so that the pod stays Running as the sign that the
#    node is ready, and exits 0 on SIGTERM.
#
# Environment: PREFIX, CONTAINERD_CONFIG, CONTAINERD, SYSTEMCTL, WASMTIME_SHIM_PRESET
# (see install.sh --help), NODE_NAME; INSTALL_SH names another install.sh (tests).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { printf 'installer: %s\n' "$*"; }

args=(--configure-containerd --restart)
if [[ -n "${CONTAINERD_CONFIG:-}" ]]; then args+=(--containerd-config "$CONTAINERD_CONFIG"); fi
"${INSTALL_SH:-$here/install.sh}" "${args[@]}"

version=""
if [[ -f "$here/RELEASE" ]]; then
  while IFS='=' read -r key value; do
    if [[ "$key" == version ]]; then version="$value"; fi
  done <"$here/RELEASE"
fi
token=/var/run/secrets/kubernetes.io/serviceaccount/token
if [[ -z "${NODE_NAME:-}" || -z "${KUBERNETES_SERVICE_HOST:-}" || ! -f "$token" ]]; then
  say "not in a pod with NODE_NAME and a service account: the node is not labelled"
elif [[ -z "$version" || ! -x "$here/app/deno" ]]; then
  say "no release beside this script (RELEASE, app/deno): the node is not labelled"
else
  # busybox's wget can neither PATCH nor check the API server's certificate against
  # the service account's CA: the release's own deno does both (node_status.ts).
  DENO_DIR="$(mktemp -d)" "$here/app/deno" run --no-prompt --no-config --no-lock --quiet \
    --allow-net --allow-env --allow-read=/var/run/secrets/kubernetes.io/serviceaccount \
    "$here/node_status.ts" "wasmtime.containerd.io/installed=$version" \
    || say "warning: labelling node $NODE_NAME failed (see above); the shim is installed all the same"
fi

# Sleep with no child process: a `sleep` started in the background outlives a TERM
# that lands between its fork and `$!` (it then holds the pod's stdout). `read` on a
# FIFO that only this shell holds never returns, and bash runs the trap as soon as a
# signal interrupts it.
fifo="$(mktemp -u)"
mkfifo -m 600 "$fifo"
exec 3<>"$fifo"
rm -f "$fifo"
# The trap before saying so: a SIGTERM right after the line must exit 0.
trap 'exit 0' TERM INT
say "done; sleeping"
read -r -u 3 || true
