#!/usr/bin/env bash
# Run op test files with the cuda backend as the default backend on the CPU emulation of its
# kernels (tests/cuda_emu; needs g++): what bench/cuda_device.sh runs on a GPU, without one.
# Each file runs in its own process behind a small wrapper that installs the emulated runtime.
#   bash scripts/cuda_emulated_suite.sh [deno|bun] [tests/ops_forward.test.ts ...]
set -uo pipefail
cd "$(dirname "$0")/.."
rt=${1:-deno}
shift || true
files=("$@")
[ ${#files[@]} -eq 0 ] && files=(tests/ops_forward.test.ts tests/ops_layout.test.ts tests/ops_grad.test.ts tests/sparse.test.ts tests/topk_encode.test.ts tests/optim.test.ts)
mkdir -p .cache/emu-wrappers
rc=0
for f in "${files[@]}"; do
  name=$(basename "$f" .test.ts)
  w=.cache/emu-wrappers/emu_$name.test.ts
  cat >"$w" <<TS
import { installRuntime } from "../../tensor/cuda/runtime.ts";
import { useBackend } from "../../tensor/registry.ts";
import { emulatedRuntime } from "../../tests/cuda_emu/runtime.ts";
installRuntime(emulatedRuntime());
useBackend("cuda");
await import("../../$f");
TS
  echo "== $f on emulated cuda ($rt) =="
  if [ "$rt" = deno ]; then node_modules/.bin/deno test -A --v8-flags=--no-maglev "$w" 2>&1 | grep -E "FAILED|passed|failed|error" | head -40
  else node_modules/.bin/bun test "./$w" 2>&1 | grep -E "\(fail\)|pass$|fail$|error" | head -40; fi
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
done
exit $rc
