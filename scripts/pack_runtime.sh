#!/usr/bin/env bash
# Pack one JavaScript runtime from node_modules (xz) and the npm packages the tests import into
# .carry/, the ignored folder a device-machine call carries (64 MiB per call: one runtime at a time;
# Deno ≈ 31 MB, Bun ≈ 39 MB compressed). Usage: bash scripts/pack_runtime.sh deno|bun
set -euo pipefail
cd "$(dirname "$0")/.."
rt=${1:?usage: pack_runtime.sh deno|bun}
case $rt in
  deno) src=node_modules/deno/deno ;;
  bun) src=node_modules/bun/bin/bun.exe ;;
  *) echo "pack_runtime.sh: expected deno or bun, got $rt" >&2; exit 2 ;;
esac
[ -x "$src" ] || { echo "pack_runtime.sh: $src missing (npm install first)" >&2; exit 1; }
mkdir -p .carry
rm -f .carry/deno.xz .carry/bun.xz
xz -T0 -9 -c "$src" >.carry/$rt.xz.tmp && mv .carry/$rt.xz.tmp .carry/$rt.xz
# fast-check (and its one dependency) for the op tests; everything else is our own code.
tar -cJf .carry/js.tar.xz.tmp node_modules/fast-check node_modules/pure-rand && mv .carry/js.tar.xz.tmp .carry/js.tar.xz
du -sh .carry/*
