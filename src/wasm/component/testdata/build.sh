#!/bin/sh
# Rebuilds the component test fixtures in this directory from their sources:
#   command.wasm     <- command.wat     (WASI 0.2.12 command; exit code = last argument)
#   cat.wasm         <- cat.wat         (WASI 0.2.12 command; copies stdin to stdout)
#   http_hello.wasm  <- http_hello.wat  (WASI 0.2.12 wasi:http proxy, tiny)
#   abi.wasm         <- abi.wat         (glue test: every WIT value kind, both ways)
#   http_app.wasm    <- http_app.js     (wasi:http proxy in JS, componentize-js 0.23.0)
# Needs Node and npm (the npm registry): the tools are installed into a scratch
# directory (or $COMPONENT_TOOLS_DIR, kept for reuse), never into the repository.
set -eu
cd "$(dirname "$0")"
tools="${COMPONENT_TOOLS_DIR:-}"
if [ -z "$tools" ]; then
  tools="$(mktemp -d)"
  trap 'rm -rf "$tools"' EXIT
fi
# componentize-js imports preview2-shim without declaring it (it relies on npm hoisting
# some copy), so the version a fresh install hoists (0.25.0) is installed explicitly.
npm install --prefix "$tools" --no-audit --no-fund --loglevel=error \
  @bytecodealliance/componentize-js@0.23.0 @bytecodealliance/preview2-shim@0.25.0
node build.mjs "$tools/node_modules"
