#!/bin/sh
# Rebuilds the preview1 host's test guests in this directory from their sources.
# Needs clang 14+ with wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)
# and wabt (wat2wasm).
set -eu
cd "$(dirname "$0")"
clang --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -s fsops.c -o fsops.wasm \
  -lc-printscan-no-floating-point
for wat in *.wat; do
  wat2wasm --debug-names "$wat" -o "${wat%.wat}.wasm"
done
