#!/usr/bin/env bash
# Runs the whole suite under Deno and under Bun (both from node_modules) and ends with one line
# "N passed, N failed" counting both. Exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/deno ] && [ -x node_modules/.bin/bun ] && [ -x node_modules/.bin/tsc ] || npm install --no-audit --no-fund >/dev/null
export NO_COLOR=1
# Deno's WebGPU on Vulkan only (Mesa's lavapipe in CI): without a Vulkan driver wgpu falls back to
# OpenGL through glvnd's libEGL, whose per-thread teardown at process exit can write to freed memory
# (glibc then aborts, e.g. "corrupted size vs. prev_size in fastbins"). Set it to override.
export DENO_WEBGPU_BACKEND=${DENO_WEBGPU_BACKEND:-vulkan}
out=$(mktemp -d)

echo "== deno test =="
node_modules/.bin/deno test -A --v8-flags=--no-maglev tests/ 2>&1 | tee "$out/deno.log"
deno_rc=${PIPESTATUS[0]}
echo "== bun test =="
node_modules/.bin/bun test tests/ 2>&1 | tee "$out/bun.log"
bun_rc=${PIPESTATUS[0]}

# Deno's summary: "ok | 12 passed | 0 failed"; Bun's: " 12 pass" / " 0 fail" lines.
read -r dp df < <(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$out/deno.log" | tail -1 | sed -E 's/.*\| ([0-9]+) passed[^|]*\| ([0-9]+) failed.*/\1 \2/')
bp=$(grep -E '^ *[0-9]+ pass$' "$out/bun.log" | tail -1 | tr -dc '0-9')
bf=$(grep -E '^ *[0-9]+ fail$' "$out/bun.log" | tail -1 | tr -dc '0-9')
dp=${dp:-0} df=${df:-0} bp=${bp:-0} bf=${bf:-0}
# A runner that crashed before its summary counts as one failure.
[ "$deno_rc" -ne 0 ] && [ "$df" -eq 0 ] && df=1
[ "$bun_rc" -ne 0 ] && [ "$bf" -eq 0 ] && bf=1
echo "deno: $dp passed, $df failed; bun: $bp passed, $bf failed"
echo "$((dp + bp)) passed, $((df + bf)) failed"
[ $((df + bf)) -eq 0 ]
