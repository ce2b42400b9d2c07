#!/usr/bin/env bash
# Installs containerd-shim-wasmtime-v1 (and oci-tar-builder) so containerd finds it,
# and optionally adds the runtime to containerd's config.
#
#   scripts/install.sh [--from TARBALL] [--uninstall] [--configure-containerd [--preset NAME]
#                      [--containerd-config PATH] [--restart]]
#
# From a checkout it builds the shim here (needs deno or npm, and the npm registry);
# with --from it installs a release tarball made by `deno task release` (or, run as
# the install.sh inside an unpacked tarball, that release) with no network and no
# deno, node or npm on the node.
#
# Environment:
#   PREFIX      install prefix (default /usr/local): binaries in $PREFIX/bin,
#               the application in $PREFIX/lib/containerd-shim-wasmtime
#   DENO        the deno executable to use (default: deno on PATH; if missing, a
#               private Deno 2.9.6 from the npm registry, kept only inside the
#               installed application)
#   DENORT_BIN  a denort runtime for `deno compile` on machines without internet
#   CONTAINERD  the containerd command used to read its version and validate the
#               config (default: containerd; may carry a prefix, such as
#               "nsenter -t 1 -m -- containerd" from a privileged pod)
#
# Two forms are installed, whichever works here:
#   compiled  a single executable from `deno compile` (needs Deno's runtime, which
#             deno downloads from its own server, or DENORT_BIN);
#   launcher  a small script that runs the application with a private copy of
#             deno and its dependencies cached at install time (works offline).
# Re-running is safe (idempotent); --uninstall removes exactly what was installed.
#
# --configure-containerd adds the runtime "wasmtime" (runtime_type
# io.containerd.wasmtime.v1) to containerd's CRI config, in the form the config's
# `version` asks for; see usage() below.
set -Eeuo pipefail
# Whatever fails without a message of its own still says where.
trap 'rc=$?; [[ $BASH_SUBSHELL -gt 0 ]] || say "error: unexpected failure (exit $rc) at line $LINENO: $BASH_COMMAND"' ERR

PREFIX="${PREFIX:-/usr/local}"
DENO_VERSION="2.9.6"
SHIM=containerd-shim-wasmtime-v1
BUILDER=oci-tar-builder
APP_DIR="$PREFIX/lib/containerd-shim-wasmtime"
BIN_DIR="$PREFIX/bin"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC_DIR="$(dirname "$SCRIPT_DIR")"

# What --configure-containerd adds to containerd's config: the CRI runtime handler
# name (a Kubernetes RuntimeClass's `handler`, see deploy/) and the runtime it runs.
RUNTIME_NAME=wasmtime
RUNTIME_TYPE=io.containerd.wasmtime.v1
MARK_BEGIN="# BEGIN containerd-shim-wasmtime (added by scripts/install.sh --configure-containerd)"
MARK_END="# END containerd-shim-wasmtime"
CREATED_HEADER="# containerd config created by containerd-shim-wasmtime's scripts/install.sh;
# everything not set here keeps containerd's defaults (see: containerd config default)."

# npm reads $PREFIX as its global prefix (and so its global config, with the
# registry's CA settings, from $PREFIX/etc/npmrc): ours must not reach it.
npm_() { env -u PREFIX npm "$@"; }

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Temporary files go away however install.sh ends.
staging=""
CFG_TMP=""
OLD_APP="" # the previous application, moved aside while a new one is activated
NEW_APP=0  # 1 while $APP_DIR may hold a new application that is not yet activated
CREATED_DIRS=() # see make_dir
TMPL_CREATED=0  # 1 once this run created a k3s/RKE2 config.toml.tmpl (see make_template)
cleanup() {
  local rc=$?
  # A failed activation puts the previous installation back (see activate_launcher_form).
  if [[ $rc -ne 0 && "$NEW_APP" -eq 1 ]]; then
    rm -rf "$APP_DIR"
    if [[ -n "$OLD_APP" ]]; then mv "$OLD_APP" "$APP_DIR"; fi
  fi
  if [[ -n "$staging" ]]; then rm -rf "$staging"; fi
  if [[ -n "$CFG_TMP" ]]; then rm -f "$CFG_TMP"; fi
  if [[ $rc -ne 0 && "$TMPL_CREATED" -eq 1 ]]; then rm -f "$CFG"; fi
  # A failed install leaves no directory of its own behind either.
  if [[ $rc -ne 0 && ${#CREATED_DIRS[@]} -gt 0 ]]; then remove_dirs "${CREATED_DIRS[@]}"; fi
}
trap cleanup EXIT

usage() {
  cat <<EOF
Usage: scripts/install.sh [--from TARBALL] [--uninstall]
         [--configure-containerd [--preset NAME] [--containerd-config PATH] [--restart]]

Installs containerd-shim-wasmtime-v1 and oci-tar-builder into \$PREFIX/bin
(PREFIX=$PREFIX), where containerd finds the shim on its PATH.

Options:
  --from TARBALL            install a release tarball (deno task release) offline: its
                            TARBALL.sha256 is checked when it lies beside it; a corrupt or
                            truncated tarball, a checksum mismatch or another architecture
                            is refused and nothing is installed. The install.sh inside an
                            unpacked tarball installs that release without --from.
  --uninstall               remove what install.sh installed; with --configure-containerd,
                            also remove the runtime table it added to containerd's config
  --configure-containerd    also add the runtime "$RUNTIME_NAME" (runtime_type = "$RUNTIME_TYPE")
                            to containerd's CRI config, in the form its \`version\` line asks for:
                              version = 3 (containerd 2.x):
                                [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.$RUNTIME_NAME]
                              version = 2 (containerd 1.6/1.7, also read by 2.x):
                                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.$RUNTIME_NAME]
                              no version line (version 1, deprecated):
                                [plugins.cri.containerd.runtimes.$RUNTIME_NAME]
                            A missing or empty config gets a minimal one: version 3 for
                            containerd 2.x, else version 2. A config that already has the
                            table is left as is. Before a change the file is copied to
                            PATH.bak.<timestamp>; after it, \`containerd --config PATH config
                            dump\` must accept the result, or the backup is put back and
                            install.sh fails. Restart containerd to load the new config.
  --containerd-config PATH  containerd's config file (default /etc/containerd/config.toml);
                            implies --preset containerd
  --preset NAME             the node's layout (default auto: detected): containerd
                            (/etc/containerd/config.toml, or a drop-in wasmtime.toml in the
                            directory of its \`imports\`), k3s or rke2 (config.toml.tmpl in
                            /var/lib/rancher/<k3s|rke2>/agent/etc/containerd/, made from
                            config.toml if absent), k0s (/etc/k0s/containerd.d/wasmtime.toml),
                            microk8s (/var/snap/microk8s/current/args/containerd-template.toml)
  --restart                 restart containerd when this run changed its config: systemctl
                            restart containerd, k3s|k3s-agent, rke2-server|rke2-agent or
                            snap.microk8s.daemon-containerd (k0s restarts its own)
  -h, --help                show this help

Environment:
  PREFIX              install prefix (default /usr/local)
  DENO                the deno executable to use (default: deno on PATH, else a private
                      copy from the npm registry, kept only inside the installation)
  DENORT_BIN          a denort runtime for \`deno compile\` without internet access
  WASMTIME_SHIM_FORM  "launcher" skips the \`deno compile\` attempt
  CONTAINERD          containerd command used to read its version and validate the config
                      (default: containerd; e.g. "nsenter -t 1 -m -- containerd" in a pod)
  SYSTEMCTL           systemctl command for --restart (default: systemctl; e.g.
                      "nsenter -t 1 -m -u -i -n -p -- systemctl" in a pod)
  WASMTIME_SHIM_PRESET  the default of --preset
  HOST_ROOT           where the node's / is (default /): the presets' paths are under it

The installed shim reads its settings from containerd's environment (for systemd, a
drop-in with Environment= lines for containerd.service); its on-disk caches:
  WASMTIME_SHIM_CACHE_DIR        transpiled components and Wasm layers
                                 (default /var/lib/containerd-shim-wasmtime/cache)
  WASMTIME_SHIM_CACHE_MAX_BYTES  their cap, least recently used evicted first, never
                                 one in use (default 1Gi: the last ~40 large or
                                 thousands of small applications; e.g. 512Mi, 4G)
EOF
}

# Directories this install created (parents first), and those earlier installs into
# the same PREFIX created: recorded in $DIRS_FILE so that --uninstall removes them too
# once they are empty, and never a directory that was there before.
DIRS_FILE="$APP_DIR/created_dirs"

# make_dir DIR: mkdir -p, remembering which directories did not exist.
make_dir() {
  local d="$1" missing=()
  while [[ ! -d "$d" ]]; do
    missing=("$d" "${missing[@]}")
    d="$(dirname "$d")"
  done
  mkdir -p "$1"
  CREATED_DIRS+=("${missing[@]}")
}

# remove_dirs DIR…: removes each empty one, last first.
remove_dirs() {
  local i
  for ((i = $# ; i > 0; i--)); do rmdir "${!i}" 2>/dev/null || true; done
}

# Writes $DIRS_FILE from CREATED_DIRS and what an earlier install recorded (read
# before $APP_DIR is replaced, into PREV_DIRS).
PREV_DIRS=()
read_dirs_file() {
  if [[ -f "$DIRS_FILE" ]]; then mapfile -t PREV_DIRS <"$DIRS_FILE"; fi
}
write_dirs_file() {
  mkdir -p "$APP_DIR"
  printf '%s\n' "${PREV_DIRS[@]}" "${CREATED_DIRS[@]}" | awk 'NF && !seen[$0]++' >"$DIRS_FILE"
}

uninstall() {
  read_dirs_file
  rm -f "$BIN_DIR/$SHIM" "$BIN_DIR/$BUILDER"
  rm -rf "$APP_DIR"
  remove_dirs "${PREV_DIRS[@]}"
  say "removed $BIN_DIR/$SHIM, $BIN_DIR/$BUILDER and $APP_DIR"
}

# Prints the deno to build with: $DENO, else deno on PATH, else a private copy of
# Deno $DENO_VERSION that npm installs into the staging directory (never npm's global
# prefix, which npm takes from $PREFIX too). The launcher form copies it into
# $APP_DIR, which --uninstall removes; the staging copy goes when install.sh exits.
find_deno() {
  if [[ -n "${DENO:-}" ]]; then echo "$DENO"; return; fi
  if command -v deno >/dev/null 2>&1; then command -v deno; return; fi
  command -v npm >/dev/null 2>&1 || die "deno is not installed and npm is missing to install it (apt-get install -y npm)"
  local dir="$staging/.deno-npm" bin
  say "no deno here: installing a private Deno $DENO_VERSION from the npm registry"
  # A package.json of its own makes $dir npm's local prefix (--prefix would also move
  # npm's global config, and with it the registry's CA settings).
  mkdir -p "$dir"
  echo '{"private": true}' >"$dir/package.json"
  (cd "$dir" && npm_ install --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    --cache "$dir/.cache" "deno@$DENO_VERSION" >&2) \
    || die "npm could not install deno@$DENO_VERSION (is the npm registry reachable?)"
  # The platform package holds the executable (node_modules/deno/bin.cjs only finds it).
  for bin in "$dir"/node_modules/@deno/linux-*/deno "$dir/node_modules/deno/deno"; do
    if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then echo "$bin"; return; fi
  done
  die "npm installed deno@$DENO_VERSION into $dir, but no deno there runs on $(uname -m)"
}

# --- containerd's config ---------------------------------------------------------
#
# No TOML library: the config is read line by line (awk) for the little needed here
# (the top-level `version`, table headers, our own marker lines) and changed only by
# appending one marked block, or removing it again. containerd itself is the
# validator: `containerd --config FILE config dump` before a change (a config it
# rejects is refused) and after it (the backup is put back if it rejects the result).

CTR_CMD=()   # the containerd command, empty when there is none
CTR_MAJOR="" # its major version, when known

detect_containerd() {
  local out
  read -r -a CTR_CMD <<<"${CONTAINERD:-containerd}"
  if [[ ${#CTR_CMD[@]} -eq 0 ]] || ! command -v "${CTR_CMD[0]}" >/dev/null 2>&1; then
    CTR_CMD=()
    say "warning: no containerd command (${CONTAINERD:-containerd}) here, so the config cannot be validated; set CONTAINERD to containerd's command"
    return 0
  fi
  out="$("${CTR_CMD[@]}" --version 2>&1)" \
    || die "'${CTR_CMD[*]} --version' failed, so containerd's version is unknown: $out"
  CTR_MAJOR="$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^v?[0-9]+\.[0-9]+/) { sub(/^v/, "", $i); split($i, a, "."); print a[1]; exit } }' <<<"$out")"
  [[ -n "$CTR_MAJOR" ]] || say "warning: no version number in '${CTR_CMD[*]} --version': $out"
}

# The top-level `version = N` of a config (empty when there is none).
config_version() {
  awk '
    /^[ \t]*\[/ { exit }
    /^[ \t]*version[ \t]*=/ {
      v = $0; sub(/^[ \t]*version[ \t]*=[ \t]*/, "", v); sub(/[ \t]*(#.*)?\r?$/, "", v); print v; exit
    }' "$1"
}

# Whether a config has anything but comments and blank lines.
config_has_content() {
  grep -qvE '^[[:space:]]*(#.*)?$' "$1"
}

# The CRI plugin's key (holding containerd.runtimes) in each config version.
cri_plugin_for_version() {
  case "$1" in
    1) echo 'cri' ;;
    2) echo '"io.containerd.grpc.v1.cri"' ;;
    *) echo '"io.containerd.cri.v1.runtime"' ;;
  esac
}

# Reads a config; prints "present begins ends fq cri_off runtime_type": whether the
# table plugins.<plugin>.containerd.runtimes.wasmtime exists (a table header, an
# inline table under [..runtimes] or a dotted key under [..containerd]), how many of
# our marker lines there are, whether a plugin is named the version 2 way
# (io.containerd.…), whether disabled_plugins names the CRI plugin, and the
# runtime_type in the existing table ("-" if none).
inspect_config() {
  local plugin="$1" file="$2"
  awk -v plugin="$plugin" -v runtime="$RUNTIME_NAME" -v b="$MARK_BEGIN" -v e="$MARK_END" '
    function norm(s) { gsub(/["'\'' \t]/, "", s); return s }
    BEGIN {
      p = norm(plugin); target = "plugins." p ".containerd.runtimes." runtime
      runtimes = "plugins." p ".containerd.runtimes"; ctrd = "plugins." p ".containerd"
      table = ""; present = 0; nb = 0; ne = 0; fq = 0; off = 0; rt = "-"
    }
    { sub(/\r$/, "") }
    $0 == b { nb++ }
    $0 == e { ne++ }
    /^[ \t]*(#|$)/ { next }
    /^[ \t]*\[\[/ { table = "[[]]"; next }
    /^[ \t]*\[/ {
      h = $0; sub(/^[ \t]*\[/, "", h); sub(/\][ \t]*(#.*)?$/, "", h); table = norm(h)
      if (table == target) present = 1
      if (table ~ /^plugins\.io\.containerd\./) fq = 1
      next
    }
    table == "" && /^[ \t]*plugins[ \t]*\.[ \t]*["'\'']io\.containerd\./ { fq = 1 }
    table == "" && /^[ \t]*disabled_plugins[ \t]*=/ && /["'\''](cri|io\.containerd\.grpc\.v1\.cri)["'\'']/ { off = 1 }
    table == target && /^[ \t]*runtime_type[ \t]*=/ {
      t = $0; sub(/^[^=]*=[ \t]*/, "", t); sub(/[ \t]*(#.*)?$/, "", t); gsub(/["'\'']/, "", t); rt = t
    }
    table == runtimes && $0 ~ ("^[ \t]*[\"'\'']?" runtime "[\"'\'']?[ \t]*=") { present = 1 }
    table == ctrd && $0 ~ ("^[ \t]*runtimes[ \t]*\\.[ \t]*[\"'\'']?" runtime "[\"'\'']?[ \t]*[.=]") { present = 1 }
    END { print present, nb, ne, fq, off, rt }' "$file"
}

# Prints a config without our marked block (and the blank line before it). A version
# line inside the block (written when the config had no settings) stays if the rest
# of the config now has settings of its own, whose meaning it decides.
strip_block() {
  awk -v b="$MARK_BEGIN" -v e="$MARK_END" '
    { l[NR] = $0 }
    END {
      inb = 0; rest = 0
      for (i = 1; i <= NR; i++) {
        if (l[i] == b) { inb = 1; continue }
        if (inb) { if (l[i] == e) inb = 0; continue }
        if (l[i] !~ /^[ \t]*(#.*)?\r?$/) rest = 1
      }
      n = 0; inb = 0
      for (i = 1; i <= NR; i++) {
        if (l[i] == b) { inb = 1; if (n > 0 && o[n] == "") n--; continue }
        if (inb) {
          if (l[i] == e) inb = 0
          else if (rest && l[i] ~ /^[ \t]*version[ \t]*=/) o[++n] = l[i]
          continue
        }
        o[++n] = l[i]
      }
      for (i = 1; i <= n; i++) print o[i]
    }' "$1"
}

# containerd's verdict on a config file: 0 if `config dump` accepts it (or there is no
# containerd to ask), its output in DUMP_OUT.
DUMP_OUT=""
containerd_accepts() {
  DUMP_OUT=""
  [[ ${#CTR_CMD[@]} -gt 0 ]] || return 0
  is_template "$1" && return 0
  DUMP_OUT="$("${CTR_CMD[@]}" --config "$1" config dump 2>&1)"
}

# A Go template (k3s/RKE2 `{{ template "base" . }}`) is no TOML containerd can check.
is_template() {
  [[ -f "$1" ]] && grep -qF '{{' "$1"
}

# The first lines of containerd's complaint, for an error message.
dump_error() {
  { grep -v 'level=warning' <<<"$DUMP_OUT" || true; } | head -n 5 | tr '\n' ' '
}

new_backup_path() {
  local base path n=1
  base="$CFG.bak.$(date +%Y%m%d-%H%M%S)"
  path="$base"
  while [[ -e "$path" ]]; do path="$base.$n"; n=$((n + 1)); done
  echo "$path"
}

# The file the config path names (through symlinks), in CFG_TARGET.
CFG_TARGET=""
config_target() {
  CFG_TARGET="$(readlink -f "$CFG")" || die "cannot resolve $CFG (does its directory exist?)"
}

# A new temporary file next to the config, in CFG_TMP (removed at exit unless moved).
config_tmp() {
  config_target
  CFG_TMP="$(mktemp "$(dirname "$CFG_TARGET")/.$(basename "$CFG_TARGET").XXXXXX")" \
    || die "cannot create a file in $(dirname "$CFG_TARGET") (to write $CFG)"
}

# Replaces the config (through its symlink, if it is one) with the file $1, atomically,
# keeping the old file's owner and mode.
replace_config() {
  local new="$1"
  config_target
  if [[ -e "$CFG_TARGET" ]]; then
    chmod --reference="$CFG_TARGET" "$new" 2>/dev/null || true
    chown --reference="$CFG_TARGET" "$new" 2>/dev/null || true
  else
    chmod 0644 "$new"
  fi
  mv -f "$new" "$CFG_TARGET" || die "cannot replace $CFG_TARGET with $new"
}

# Puts the backup back (or removes the config install.sh created) and fails.
restore_and_die() {
  local why="$1"
  if [[ -n "$BACKUP" ]]; then
    config_tmp
    cp -p "$BACKUP" "$CFG_TMP" || die "$why; restoring $CFG from $BACKUP failed too: copy it back by hand"
    replace_config "$CFG_TMP"
    die "$why; $CFG was restored from $BACKUP"
  fi
  rm -f "$CFG"
  die "$why; the new $CFG was removed"
}

CFG=""         # the config file
CFG_EXISTS=0   # it exists and has settings
CFG_VERSION="" # its config version (1, 2, 3)
CFG_PLUGIN=""  # the CRI plugin's key for that version
CFG_PLAN=""    # keep | append | create (install); keep | strip (uninstall)
BACKUP=""      # the backup made before this run's change
CONFIG_CHANGED=0 # 1 once this run changed the config (then --restart restarts containerd)

# Everything that can refuse, before anything is installed: read the config, work out
# its version and whether the runtime is already there, and make sure containerd
# accepts the config as it is now.
configure_preflight() {
  local mode="$1" present=0 nb=0 ne=0 fq=0 off=0 rt=-
  detect_containerd
  if [[ -e "$CFG" && ! -f "$CFG" ]]; then die "$CFG exists but is not a regular file"; fi
  if [[ -f "$CFG" ]] && config_has_content "$CFG"; then
    CFG_EXISTS=1
    CFG_VERSION="$(config_version "$CFG")"
    if [[ -z "$CFG_VERSION" ]]; then
      CFG_VERSION=1
    elif ! [[ "$CFG_VERSION" =~ ^[0-9]+$ && "$CFG_VERSION" -ge 1 ]]; then
      die "$CFG has 'version = $CFG_VERSION', which is not a containerd config version (1, 2 or 3); refusing to change it"
    fi
    if ! containerd_accepts "$CFG"; then
      die "containerd rejects $CFG as it is ($(dump_error)); refusing to change it: fix the file, or point --containerd-config at another one. $CFG was not modified."
    fi
  else
    CFG_EXISTS=0
    if [[ -n "$CTR_MAJOR" && "$CTR_MAJOR" -ge 2 ]]; then CFG_VERSION=3; else CFG_VERSION=2; fi
    if [[ "$mode" == install && -z "$CTR_MAJOR" ]]; then
      say "containerd's version is unknown: writing a version 2 config, which containerd 1.6, 1.7 and 2.x all read"
    fi
  fi
  if [[ "$CFG_VERSION" -gt 3 ]]; then
    say "warning: $CFG is config version $CFG_VERSION; using containerd 2.x's CRI runtime table (io.containerd.cri.v1.runtime), tested with version 3"
  fi
  CFG_PLUGIN="$(cri_plugin_for_version "$CFG_VERSION")"

  if [[ -f "$CFG" ]]; then
    read -r present nb ne fq off rt < <(inspect_config "$CFG_PLUGIN" "$CFG")
  fi
  [[ "$nb" -eq "$ne" && "$nb" -le 1 ]] \
    || die "$CFG has $nb '$MARK_BEGIN' and $ne '$MARK_END' lines, where install.sh writes one pair; fix the file by hand"

  if [[ "$mode" == uninstall ]]; then
    CFG_PLAN=keep
    if [[ "$nb" -eq 1 ]]; then
      CFG_PLAN=strip
    elif [[ "$present" -eq 1 ]]; then
      say "$CFG configures the runtime $RUNTIME_NAME, but not between install.sh's marker lines: left as is"
    fi
    return 0
  fi

  if [[ "$present" -eq 1 ]]; then
    CFG_PLAN=keep
    if [[ "$rt" != "-" && "$rt" != "$RUNTIME_TYPE" ]]; then
      say "warning: $CFG already has the runtime $RUNTIME_NAME with runtime_type = \"$rt\", not \"$RUNTIME_TYPE\"; left as is"
    fi
  elif [[ "$CFG_VERSION" -eq 1 && "$fq" -eq 1 ]]; then
    die "$CFG has no 'version' line, so containerd reads it as version 1 (where the CRI plugin is [plugins.cri]), but it names plugins the version 2 way ([plugins.\"io.containerd...\"]), which containerd 1.x ignores in a version 1 config. Add 'version = 2' at the top of $CFG (once the rest is version 2) and re-run; $CFG was not modified."
  elif [[ "$CFG_EXISTS" -eq 1 ]]; then
    CFG_PLAN=append
  else
    CFG_PLAN=create
  fi
  if [[ "$CFG_VERSION" -eq 1 && "$CFG_PLAN" == append ]]; then
    say "warning: $CFG has no 'version' line, so it is a version 1 config (deprecated; containerd 2.x migrates it): adding [plugins.cri.containerd.runtimes.$RUNTIME_NAME]"
  fi
  if [[ "$off" -eq 1 ]]; then
    say "warning: $CFG lists the CRI plugin in disabled_plugins: Kubernetes cannot use containerd (nor this runtime) until it is enabled"
  fi
}

# The block added to the config; with a version line when the config had no settings.
runtime_block() {
  local with_version="$1"
  printf '%s\n' "$MARK_BEGIN"
  if [[ "$with_version" -eq 1 ]]; then printf 'version = %s\n\n' "$CFG_VERSION"; fi
  printf '[plugins.%s.containerd.runtimes.%s]\n' "$CFG_PLUGIN" "$RUNTIME_NAME"
  printf '  runtime_type = "%s"\n' "$RUNTIME_TYPE"
  printf '%s\n' "$MARK_END"
}

# Checks the config just written; puts the backup back and fails if containerd
# rejects it (or, with $1 = 1, does not show the runtime).
verify_written_config() {
  local expect_runtime="$1"
  if [[ ${#CTR_CMD[@]} -eq 0 ]]; then
    say "warning: $CFG was not validated (no containerd command)"
    return 0
  fi
  if is_template "$CFG"; then
    say "note: $CFG is a template (it has {{ }}), which containerd cannot check before $PRESET renders it"
    return 0
  fi
  containerd_accepts "$CFG" || restore_and_die "containerd rejects the changed $CFG ($(dump_error))"
  [[ "$expect_runtime" -eq 1 ]] || return 0
  if [[ "$CFG_VERSION" -ge 3 && (-z "$CTR_MAJOR" || "$CTR_MAJOR" -lt 2) ]]; then
    say "warning: containerd ${CTR_MAJOR:-?}.x does not know config version $CFG_VERSION: it checked the TOML syntax of $CFG, not the runtime table (containerd 2.x reads it)"
    return 0
  fi
  grep -qF "runtime_type = \"$RUNTIME_TYPE\"" <<<"$DUMP_OUT" \
    || restore_and_die "containerd accepts the changed $CFG, but its config dump has no runtime_type = \"$RUNTIME_TYPE\""
}

configure_containerd() {
  local tmp
  if [[ -n "$DROPIN" ]]; then configure_dropin; return 0; fi
  if [[ "$CFG_PLAN" == keep ]]; then
    say "$CFG already has the runtime $RUNTIME_NAME: unchanged"
    return 0
  fi
  mkdir -p "$(dirname "$CFG")" || die "cannot create the directory of $CFG"
  config_tmp
  tmp="$CFG_TMP"
  if [[ "$CFG_PLAN" == create ]]; then
    # No settings yet: the version line goes into our block (so that --uninstall
    # restores the file exactly), after a header if install.sh creates the file.
    {
      if [[ -s "$CFG" ]]; then
        cat "$CFG"
        [[ -z "$(tail -c1 "$CFG")" ]] || echo
        echo
      elif [[ ! -e "$CFG" ]]; then
        printf '%s\n\n' "$CREATED_HEADER"
      fi
      runtime_block 1
    } >"$tmp"
  else
    {
      cat "$CFG"
      [[ -z "$(tail -c1 "$CFG")" ]] || echo
      echo
      runtime_block 0
    } >"$tmp"
  fi
  if [[ -e "$CFG" ]]; then
    BACKUP="$(new_backup_path)"
    cp -p "$CFG" "$BACKUP" || die "cannot back up $CFG to $BACKUP"
    say "backed up $CFG to $BACKUP"
  fi
  replace_config "$tmp"
  verify_written_config 1
  CONFIG_CHANGED=1
  say "added the runtime $RUNTIME_NAME ([plugins.$CFG_PLUGIN.containerd.runtimes.$RUNTIME_NAME], runtime_type = \"$RUNTIME_TYPE\") to $CFG (config version $CFG_VERSION); restart containerd to load it"
  case ":$PATH:" in
    *":$BIN_DIR:"*) ;;
    *) say "note: containerd looks for $SHIM on its PATH: make sure $BIN_DIR is on it" ;;
  esac
}

unconfigure_containerd() {
  local tmp
  if [[ -n "$DROPIN" ]]; then unconfigure_dropin; return 0; fi
  if [[ "$CFG_PLAN" != strip ]]; then
    say "$CFG has no runtime table added by install.sh: unchanged"
    return 0
  fi
  config_tmp
  tmp="$CFG_TMP"
  strip_block "$CFG" >"$tmp"
  if [[ "$(cat "$tmp")" == "$CREATED_HEADER" ]] || template_unedited "$tmp"; then
    # install.sh created this file and nothing else was added to it: remove it.
    rm -f "$tmp" "$CFG"
    CONFIG_CHANGED=1
    say "removed $CFG, which install.sh had created"
    return 0
  fi
  if [[ "$(head -n 1 "$tmp")" == "$TMPL_HEADER"* ]]; then
    say "keeping $CFG: install.sh created it from config.toml, but it was edited since; only the runtime is removed (delete the file yourself if the edits are no longer wanted)"
  fi
  BACKUP="$(new_backup_path)"
  cp -p "$CFG" "$BACKUP" || die "cannot back up $CFG to $BACKUP"
  say "backed up $CFG to $BACKUP"
  replace_config "$tmp"
  verify_written_config 0
  CONFIG_CHANGED=1
  say "removed the runtime $RUNTIME_NAME that install.sh had added to $CFG; restart containerd to load it"
}

# --- node presets ------------------------------------------------------------------
#
# Where the runtime goes and how containerd reloads it depends on the distribution
# (as spinkube's runtime-class-manager does it):
#   containerd  /etc/containerd/config.toml (version 2 or 3, appended), or a drop-in
#               file in the directory its top-level `imports` names; systemctl restart
#               containerd
#   k3s, rke2   /var/lib/rancher/<k3s|rke2>/agent/etc/containerd/config.toml.tmpl (made
#               from the generated config.toml if absent, as their docs say); restart
#               k3s or k3s-agent / rke2-server or rke2-agent, whichever unit exists
#   k0s         the drop-in /etc/k0s/containerd.d/wasmtime.toml; k0s merges it and
#               restarts its containerd itself
#   microk8s    /var/snap/microk8s/current/args/containerd-template.toml; restart
#               snap.microk8s.daemon-containerd
# All paths are under $HOST_ROOT (default /: the node's root as install.sh sees it).

PRESET=""      # the preset in use
PRESET_WHY=""  # how it was chosen, for messages
UNITS=()       # systemd units that may restart containerd, first existing one wins
UNIT=""        # the unit --restart restarts (empty: the distribution restarts itself)
DROPIN=""      # a drop-in file that is entirely ours (k0s, containerd imports)
TMPL_FROM=""   # k3s/rke2: the generated config a missing template is made from
TMPL_HEADER="# config.toml.tmpl created by containerd-shim-wasmtime's scripts/install.sh from config.toml"
PRESETS="containerd k3s rke2 k0s microk8s"

# What detection looks for, in order (a message shows it when nothing matches).
k3s_dir() { echo "$HOST_ROOT/var/lib/rancher/$1/agent/etc/containerd"; }
detect_preset() {
  local d
  for d in k3s rke2; do
    if [[ -f "$(k3s_dir "$d")/config.toml" || -f "$(k3s_dir "$d")/config.toml.tmpl" ]]; then
      PRESET="$d"; PRESET_WHY="found $(k3s_dir "$d")/config.toml"; return 0
    fi
  done
  # Not just /etc/k0s: a pod's hostPath mount may have created that empty directory.
  if [[ -f "$HOST_ROOT/etc/k0s/containerd.toml" || -d "$HOST_ROOT/etc/k0s/containerd.d" ]]; then
    PRESET=k0s; PRESET_WHY="found $HOST_ROOT/etc/k0s/containerd.toml"; return 0
  fi
  if [[ -f "$HOST_ROOT/var/snap/microk8s/current/args/containerd-template.toml" ]]; then
    PRESET=microk8s; PRESET_WHY="found $HOST_ROOT/var/snap/microk8s/current/args/containerd-template.toml"; return 0
  fi
  for d in "$HOST_ROOT/etc/containerd/config.toml" "$HOST_ROOT/usr/bin/containerd" \
    "$HOST_ROOT/usr/local/bin/containerd" "$HOST_ROOT/usr/sbin/containerd"; do
    if [[ -e "$d" ]]; then PRESET=containerd; PRESET_WHY="found $d"; return 0; fi
  done
  # A pod sees the node's containerd only through CONTAINERD (nsenter -t 1 -m -- …).
  if [[ -n "${CONTAINERD:-}" ]] && ${CONTAINERD} --version >/dev/null 2>&1; then
    PRESET=containerd; PRESET_WHY="'$CONTAINERD --version' answers"; return 0
  fi
  die "unknown node layout: none of $(k3s_dir k3s)/config.toml (k3s), $(k3s_dir rke2)/config.toml (RKE2), $HOST_ROOT/etc/k0s/containerd.toml or containerd.d (k0s), $HOST_ROOT/var/snap/microk8s/current/args/containerd-template.toml (MicroK8s), $HOST_ROOT/etc/containerd/config.toml or a containerd in $HOST_ROOT/usr/bin, /usr/local/bin, /usr/sbin (containerd) is there. Name the layout with --preset NAME ($PRESETS), or the config with --containerd-config PATH. Nothing was changed."
}

# Chooses the preset and sets CFG / DROPIN / UNITS for it.
choose_preset() {
  if [[ -z "$PRESET" ]]; then
    if [[ $cfg_given -eq 1 ]]; then PRESET=containerd; PRESET_WHY="--containerd-config";
    else detect_preset; fi
  else
    PRESET_WHY="--preset"
  fi
  case "$PRESET" in
    containerd)
      [[ $cfg_given -eq 1 ]] || CFG="$HOST_ROOT/etc/containerd/config.toml"
      UNITS=(containerd)
      local dir
      dir="$(imports_dir "$CFG")"
      # The imports name the node's paths.
      if [[ -n "$dir" ]]; then DROPIN="$HOST_ROOT$dir/wasmtime.toml"; fi
      ;;
    k3s | rke2)
      CFG="$(k3s_dir "$PRESET")/config.toml.tmpl"
      TMPL_FROM="$(k3s_dir "$PRESET")/config.toml"
      if [[ "$PRESET" == k3s ]]; then UNITS=(k3s k3s-agent); else UNITS=(rke2-server rke2-agent); fi
      ;;
    k0s)
      DROPIN="$HOST_ROOT/etc/k0s/containerd.d/wasmtime.toml"
      CFG="$DROPIN"
      UNITS=()
      ;;
    microk8s)
      CFG="$HOST_ROOT/var/snap/microk8s/current/args/containerd-template.toml"
      UNITS=(snap.microk8s.daemon-containerd)
      ;;
    *) die "unknown preset '$PRESET': one of $PRESETS" ;;
  esac
  if [[ -n "$DROPIN" ]]; then CFG="$DROPIN"; fi
  say "node preset: $PRESET ($PRESET_WHY); containerd config: $CFG"
}

# The directory of the first `imports = ["<dir>/*.toml"]` glob of a config (empty if
# none): containerd merges every file matching it, so the runtime goes into one of its own.
imports_dir() {
  [[ -f "$1" ]] || return 0
  awk '
    /^[ \t]*\[/ { exit }
    /^[ \t]*imports[ \t]*=/ {
      while (match($0, /"[^"]*\/\*\.toml"/)) {
        p = substr($0, RSTART + 1, RLENGTH - 2); sub(/\/\*\.toml$/, "", p); print p; exit
      }
    }' "$1"
}

SYSTEMCTL_CMD=()
# The unit to restart: the first of UNITS that systemd knows (SYSTEMCTL reaches it).
choose_unit() {
  UNIT=""
  [[ ${#UNITS[@]} -gt 0 ]] || return 0
  read -r -a SYSTEMCTL_CMD <<<"${SYSTEMCTL:-systemctl}"
  local u
  for u in "${UNITS[@]}"; do
    if "${SYSTEMCTL_CMD[@]}" cat "$u.service" >/dev/null 2>&1; then UNIT="$u"; return 0; fi
  done
  die "--restart: none of the units ${UNITS[*]} is known to '${SYSTEMCTL_CMD[*]}' (preset $PRESET); restart containerd yourself and drop --restart, or set SYSTEMCTL. Nothing was changed."
}

restart_containerd() {
  if [[ "$CONFIG_CHANGED" -eq 0 ]]; then
    say "$CFG unchanged: containerd not restarted"
  elif [[ -z "$UNIT" ]]; then
    say "$PRESET restarts its containerd itself when $CFG changes"
  else
    say "restarting $UNIT to load $CFG"
    "${SYSTEMCTL_CMD[@]}" restart "$UNIT" || die "'${SYSTEMCTL_CMD[*]} restart $UNIT' failed: restart it by hand to load $CFG"
  fi
}

# The drop-in: a whole file of ours, so --uninstall removes it.
dropin_text() {
  runtime_block 1
}

configure_dropin() {
  local tmp
  if [[ -f "$DROPIN" ]] && [[ "$(cat "$DROPIN")" == "$(dropin_text)" ]]; then
    say "$DROPIN already has the runtime $RUNTIME_NAME: unchanged"
    return 0
  fi
  [[ ! -e "$DROPIN" ]] || grep -qF "$MARK_BEGIN" "$DROPIN" \
    || die "$DROPIN exists and was not written by install.sh; move it away and re-run. Nothing was changed."
  mkdir -p "$(dirname "$DROPIN")" || die "cannot create $(dirname "$DROPIN")"
  config_tmp
  tmp="$CFG_TMP"
  dropin_text >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$DROPIN" || die "cannot write $DROPIN"
  CONFIG_CHANGED=1
  say "added the runtime $RUNTIME_NAME in the drop-in $DROPIN"
}

unconfigure_dropin() {
  if [[ -f "$DROPIN" ]] && grep -qF "$MARK_BEGIN" "$DROPIN"; then
    rm -f "$DROPIN"
    CONFIG_CHANGED=1
    say "removed the drop-in $DROPIN"
  else
    say "no drop-in $DROPIN written by install.sh: unchanged"
  fi
}

# k3s/RKE2 regenerate config.toml at each start: the template is what lasts. A
# missing one starts as a copy of the generated file, headed so --uninstall knows,
# with the copy's SHA-256 so that --uninstall removes it only while nobody edited it.
make_template() {
  local sum
  [[ -n "$TMPL_FROM" && ! -e "$CFG" ]] || return 0
  [[ -f "$TMPL_FROM" ]] || die "neither $CFG nor $TMPL_FROM exists: start $PRESET once so that it writes its containerd config, then re-run"
  sum="$(sha256sum <"$TMPL_FROM")" || die "cannot read $TMPL_FROM"
  { printf '%s (sha256 %s)\n' "$TMPL_HEADER" "${sum%% *}"; cat "$TMPL_FROM"; } >"$CFG.tmp" &&
    mv "$CFG.tmp" "$CFG" || die "cannot create $CFG from $TMPL_FROM"
  TMPL_CREATED=1
  CONFIG_CHANGED=1
  say "created $CFG from $TMPL_FROM"
}

# template_unedited FILE: FILE (a template with our runtime stripped) is still the copy
# make_template made: its header's SHA-256 matches the rest.
template_unedited() {
  local head sum
  head="$(head -n 1 "$1")"
  [[ "$head" =~ ^"$TMPL_HEADER"\ \(sha256\ ([0-9a-f]{64})\)$ ]] || return 1
  sum="$(tail -n +2 "$1" | sha256sum)" || return 1
  [[ "${sum%% *}" == "${BASH_REMATCH[1]}" ]]
}

# --- installing ------------------------------------------------------------------

# write_launcher PATH ACTION [lifecycle]: a launcher running the application in
# $APP_DIR (its commands come from the application's own launcher_form.sh).
write_launcher() {
  local path="$1" action="$2" lifecycle="${3:-}"
  {
    echo '#!/bin/sh'
    echo "# Installed by containerd-shim-wasmtime's scripts/install.sh (launcher form)."
    printf "app='%s'\n" "$APP_DIR"
    sh "$APP_DIR/launcher_form.sh" launcher "$APP_DIR" "$action" "$lifecycle"
  } >"$path.tmp"
  chmod 0755 "$path.tmp"
  mv "$path.tmp" "$path"
}

# activate_compiled FILE: installs the compiled shim FILE (and the builder's wrapper).
activate_compiled() {
  rm -rf "$APP_DIR"
  write_dirs_file
  # cp and chmod, not install(1): busybox (the installer image's tools) has no install.
  cp "$1" "$BIN_DIR/$SHIM.tmp"
  chmod 0755 "$BIN_DIR/$SHIM.tmp"
  mv "$BIN_DIR/$SHIM.tmp" "$BIN_DIR/$SHIM"
  cat >"$BIN_DIR/$BUILDER.tmp" <<SH
#!/bin/sh
exec "$BIN_DIR/$SHIM" oci-tar-builder "\$@"
SH
  chmod 0755 "$BIN_DIR/$BUILDER.tmp"
  mv "$BIN_DIR/$BUILDER.tmp" "$BIN_DIR/$BUILDER"
}

# activate_launcher_form DIR: replaces the installation with the launcher-form
# application in DIR (on $APP_DIR's filesystem). The old application moves aside, the
# new one takes its place and its module cache is filled there (the cache is keyed by
# absolute paths), and only then do the launchers change; if anything fails on the
# way, cleanup puts the old installation back.
activate_launcher_form() {
  local new="$1"
  [[ "$APP_DIR" != *"'"* ]] || die "PREFIX=$PREFIX contains a single quote, which the launcher cannot name; choose another PREFIX"
  if [[ -e "$APP_DIR" ]]; then
    OLD_APP="$staging/previous"
    mv "$APP_DIR" "$OLD_APP"
  fi
  NEW_APP=1
  mv "$new" "$APP_DIR"
  sh "$APP_DIR/launcher_form.sh" cache "$APP_DIR" || die "caching the application's modules at $APP_DIR failed; nothing was changed"
  write_dirs_file
  write_launcher "$BIN_DIR/$SHIM" "" lifecycle
  write_launcher "$BIN_DIR/$BUILDER" oci-tar-builder
  NEW_APP=0
}

# This node's architecture, named as release tarballs name it.
node_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) uname -m ;;
  esac
}

# verify_checksum TARBALL: against TARBALL.sha256 (sha256sum's format) when present.
verify_checksum() {
  local tarball="$1" sums="$1.sha256" want="" got
  if [[ ! -f "$sums" ]]; then
    say "note: no $sums beside the tarball, so its checksum is not verified"
    return 0
  fi
  read -r want _ <"$sums" || true
  [[ "$want" =~ ^[0-9a-f]{64}$ ]] || die "$sums holds no SHA-256 digest: download it again; nothing was installed"
  got="$(sha256sum "$tarball" | awk '{print $1}')"
  [[ "$got" == "$want" ]] \
    || die "$tarball does not match $sums (SHA-256 $got, expected $want): the download is corrupt or not the published file; download both again. Nothing was installed."
  say "checksum of $tarball verified"
}

# install_release SRC: installs a release tarball (see scripts/release.ts), or the
# directory it unpacks to, without network: everything is inside it.
install_release() {
  local src="$1" top key value form="" version="" arch="" rev="" here
  if [[ -d "$src" ]]; then
    top="$src"
  else
    [[ -f "$src" ]] || die "$src: no such file (--from takes a release tarball, containerd-shim-wasmtime-<version>-linux-<arch>.tar.gz)"
    verify_checksum "$src"
    mkdir "$staging/unpacked"
    tar -xzf "$src" -C "$staging/unpacked" --no-same-owner 2>"$staging/tar.log" \
      || die "$src is not a complete gzip tar archive ($(grep -m1 -v '^$' "$staging/tar.log" || echo 'tar failed')): the file is corrupt or truncated; download it again. Nothing was installed."
    local entries=("$staging/unpacked"/*)
    [[ ${#entries[@]} -eq 1 && -f "${entries[0]}/RELEASE" ]] \
      || die "$src is not a containerd-shim-wasmtime release tarball (it has no RELEASE file in one top directory); nothing was installed"
    top="${entries[0]}"
  fi
  while IFS='=' read -r key value; do
    case "$key" in
      form) form="$value" ;;
      version) version="$value" ;;
      arch) arch="$value" ;;
      revision) rev="$value" ;;
    esac
  done <"$top/RELEASE"
  here="$(node_arch)"
  [[ "$arch" == "$here" ]] \
    || die "$src is built for linux-$arch, but this node is linux-$here ($(uname -m)): install containerd-shim-wasmtime-$version-linux-$here.tar.gz instead. Nothing was installed."
  case "$form" in
    launcher)
      [[ -x "$top/app/deno" && -f "$top/app/main.ts" && -f "$top/app/launcher_form.sh" ]] \
        || die "$src has no complete application (app/deno, app/main.ts): build the release again; nothing was installed"
      if [[ -d "$src" ]]; then cp -a "$top/app" "$staging/app"; else mv "$top/app" "$staging/app"; fi
      "$staging/app/deno" --version >/dev/null 2>&1 \
        || die "the deno in $src does not run on this node ($(uname -m)); nothing was installed"
      activate_launcher_form "$staging/app"
      say "installed launcher $BIN_DIR/$SHIM -> $APP_DIR (release $version, revision $rev)"
      ;;
    compiled)
      [[ -x "$top/bin/$SHIM" ]] || die "$src has no bin/$SHIM: build the release again; nothing was installed"
      activate_compiled "$top/bin/$SHIM"
      say "installed compiled $BIN_DIR/$SHIM (release $version, revision $rev)"
      ;;
    *) die "$src names the unknown form '$form' in RELEASE (a newer release than this install.sh?); nothing was installed" ;;
  esac
}

# --- arguments ------------------------------------------------------------------

ACTION=install
CONFIGURE=0
FROM=""
# Unpacked from a release tarball, install.sh installs the release around it.
if [[ -f "$SCRIPT_DIR/RELEASE" ]]; then FROM="$SCRIPT_DIR"; fi
CFG=/etc/containerd/config.toml
cfg_given=0
RESTART=0
PRESET="${WASMTIME_SHIM_PRESET:-}"
if [[ "$PRESET" == auto ]]; then PRESET=""; fi
HOST_ROOT="${HOST_ROOT:-}"
HOST_ROOT="${HOST_ROOT%/}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --uninstall) ACTION=uninstall ;;
    --configure-containerd) CONFIGURE=1 ;;
    --restart) RESTART=1 ;;
    --preset)
      [[ $# -ge 2 && -n "$2" ]] || die "--preset needs a name: auto, $PRESETS"
      PRESET="$2"
      [[ "$PRESET" != auto ]] || PRESET=""
      shift
      ;;
    --preset=*)
      PRESET="${1#*=}"
      [[ "$PRESET" != auto ]] || PRESET=""
      ;;
    --from)
      [[ $# -ge 2 && -n "$2" ]] || die "--from needs a release tarball (e.g. --from containerd-shim-wasmtime-0.1.0-linux-amd64.tar.gz)"
      FROM="$2"
      shift
      ;;
    --from=*)
      FROM="${1#*=}"
      [[ -n "$FROM" ]] || die "--from needs a release tarball"
      ;;
    --containerd-config)
      [[ $# -ge 2 && -n "$2" ]] || die "--containerd-config needs a path (e.g. --containerd-config /etc/containerd/config.toml)"
      CFG="$2"
      cfg_given=1
      shift
      ;;
    --containerd-config=*)
      CFG="${1#*=}"
      cfg_given=1
      [[ -n "$CFG" ]] || die "--containerd-config needs a path"
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument: $1 (see scripts/install.sh --help)" ;;
  esac
  shift
done
if [[ $cfg_given -eq 1 && $CONFIGURE -eq 0 ]]; then
  die "--containerd-config applies only with --configure-containerd"
fi
if [[ ($RESTART -eq 1 || -n "$PRESET") && $CONFIGURE -eq 0 ]]; then
  die "--restart and --preset apply only with --configure-containerd"
fi
if [[ $cfg_given -eq 1 && -n "$PRESET" && "$PRESET" != containerd ]]; then
  die "--containerd-config names plain containerd's config; the $PRESET preset finds its own"
fi

if [[ "$ACTION" == uninstall ]]; then
  # The runtime leaves containerd's config before its shim leaves the disk.
  if [[ $CONFIGURE -eq 1 ]]; then
    choose_preset
    configure_preflight uninstall
    if [[ $RESTART -eq 1 ]]; then choose_unit; fi
    unconfigure_containerd
    if [[ $RESTART -eq 1 ]]; then restart_containerd; fi
  fi
  uninstall
  exit 0
fi

# A config that cannot be changed is refused before anything is installed.
if [[ $CONFIGURE -eq 1 ]]; then
  choose_preset
  if [[ $RESTART -eq 1 ]]; then choose_unit; fi
  make_template
  configure_preflight install
fi

# Runs once the shim is in place: containerd must not name a runtime it cannot find.
after_install() {
  if [[ $CONFIGURE -eq 1 ]]; then configure_containerd; fi
  if [[ $RESTART -eq 1 ]]; then restart_containerd; fi
}

read_dirs_file
make_dir "$BIN_DIR"
make_dir "$PREFIX/lib"
staging="$(mktemp -d "${PREFIX}/lib/.containerd-shim-wasmtime.XXXXXX")" \
  || die "cannot create a directory in $PREFIX/lib (read-only or not writable?): choose a writable place with PREFIX=/opt/containerd-shim-wasmtime (and put its bin on containerd's PATH); nothing was installed"

if [[ -n "$FROM" ]]; then
  install_release "$FROM"
  after_install
  exit 0
fi

DENO_BIN="$(find_deno)" || exit 1
# The real binary, not an npm wrapper script.
DENO_BIN="$(readlink -f "$DENO_BIN")"
have_version="$("$DENO_BIN" --version | head -1 | awk '{print $2}')"
[[ "$have_version" == "$DENO_VERSION" ]] || say "warning: deno $have_version found, $DENO_VERSION is the tested version"

# The application, built in $build: sources, lockfile, build info.
build="$staging/app"
mkdir "$build"
cp -r "$SRC_DIR/main.ts" "$SRC_DIR/deno.json" "$SRC_DIR/package.json" "$SRC_DIR/package-lock.json" \
  "$SRC_DIR/src" "$build/"
cp "$SRC_DIR/scripts/launcher_form.sh" "$build/"
[[ -f "$SRC_DIR/deno.lock" ]] && cp "$SRC_DIR/deno.lock" "$build/"
find "$build/src" -name '*_test.ts' -delete
find "$build/src" -type d -name testdata -prune -exec rm -rf {} +
# WASMTIME_SHIM_REVISION names the revision where there is no git checkout (an image).
revision="${WASMTIME_SHIM_REVISION:-$(git -C "$SRC_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
printf '{"revision":"%s"}\n' "$revision" > "$build/build_info.json"

# npm dependencies, exactly as locked (npm tolerates optional platform packages that
# the registry lacks; Deno's own resolver does not, so Deno reads node_modules).
command -v npm >/dev/null 2>&1 || die "npm is needed to install the npm dependencies (apt-get install -y npm), or install a release tarball with --from, which needs none"
(cd "$build" && npm_ install --omit=dev --no-save --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
  || die "npm install failed (is the npm registry reachable?)"

if [[ "${WASMTIME_SHIM_FORM:-auto}" != "launcher" ]]; then
  # --v8-flags: DEFAULT_RUNNER_V8_FLAGS of src/runner/spawn.ts, fixed at build time here.
  if (cd "$build" && NO_COLOR=1 "$DENO_BIN" compile --quiet -A --unstable-net --no-check --v8-flags=--single-threaded-gc,--max-semi-space-size=8,--heap-growing-percent=20 --include build_info.json --include src/wasm/component/http_worker.ts --include src/wasm/component/mod.ts \
        -o "$staging/$SHIM" main.ts) >"$staging/compile.log" 2>&1; then
    activate_compiled "$staging/$SHIM"
    say "installed compiled $BIN_DIR/$SHIM (revision $revision)"
    after_install
    exit 0
  fi
  say "deno compile is not possible here ($(grep -m1 -iE 'error|fail' "$staging/compile.log" || echo 'see compile.log')); installing the launcher form. Set DENORT_BIN to a denort binary to get a single executable."
fi

# Launcher form: a private deno, bundles where `deno bundle` works, and a private
# module cache filled where the application ends up.
cp "$DENO_BIN" "$build/deno"
sh "$build/launcher_form.sh" bundle "$build"
activate_launcher_form "$build"
say "installed launcher $BIN_DIR/$SHIM -> $APP_DIR (revision $revision)"
after_install
