#!/usr/bin/env bash
# Installs the npm dependencies exactly as locked (package-lock.json) when
# node_modules is missing or older than the lockfile. Run by `deno task test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm is missing (apt-get install -y npm)" >&2; exit 1; }
  # npm ci refuses a lockfile whose optional platform packages the registry lacks;
  # npm install with --no-save installs exactly the locked versions and skips them.
  npm install --no-save --ignore-scripts --no-audit --no-fund --loglevel=error
fi
