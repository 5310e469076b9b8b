#!/usr/bin/env bash
# Every CUDA check that needs a GPU, in one device-machine call for one runtime (the one
# packed in .carry by scripts/pack_runtime.sh): the CUDA tests, the op suite on cuda (values and
# gradients against the reference, SPARSECODER_BACKEND=cuda) plus the cuda-vs-cpu cross-check,
# the TopK training check (metrics vs cpu, flat memory over 10,000 steps), and the benchmarks vs
# PyTorch on the same GPU. Logs go to $OUT (or /tmp/cuda-out); the last lines summarise.
#   bash scripts/pack_runtime.sh deno   # here, then the device call carries .carry:
#   run(command="bash bench/cuda_device.sh", carry=[".carry"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/cuda-out}
mkdir -p "$out"
rt=$([ -f .carry/deno.xz ] && echo deno || echo bun)
[ -f .carry/$rt.xz ] || { echo "no runtime in .carry (run scripts/pack_runtime.sh deno|bun here first)"; exit 2; }
bin=/tmp/sc-$rt
xz -dc .carry/$rt.xz >"$bin" && chmod +x "$bin"
[ -d node_modules/fast-check ] || tar -xJf .carry/js.tar.xz
# NVRTC and cuBLAS may live in the toolkit or in PyTorch's NVIDIA wheels: hand every folder over.
SPARSECODER_CUDA_LIBDIRS=$(find /usr/local /opt /usr/lib -name 'libcublas.so*' -o -name 'libnvrtc.so*' 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd: -)
export SPARSECODER_CUDA_LIBDIRS SPARSECODER_CUDA_CACHE=/tmp/sc-cuda-cache NO_COLOR=1
# Type-checking was done where the code was written; skip it on device time.
if [ $rt = deno ]; then test_cmd=("$bin" test -A --no-check --v8-flags=--no-maglev); run_cmd=("$bin" run -A --no-check --v8-flags=--no-maglev); else test_cmd=("$bin" test); run_cmd=("$bin"); fi
nvidia-smi -L 2>&1 | tee "$out/$rt-gpu.log"
echo "libraries: $SPARSECODER_CUDA_LIBDIRS" | tee -a "$out/$rt-gpu.log"
status=()
# Each step has its own time limit so one hang leaves time for the rest (the call has 600 s).
step() { # name log seconds command...
  local name=$1 log=$2 limit=$3
  shift 3
  echo "== $name =="
  timeout "$limit" "$@" 2>&1 | tee "$out/$log"
  local rc=${PIPESTATUS[0]}
  status+=("$name: $([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)")")
}
step "cuda tests" "$rt-cuda-tests.log" 120 "${test_cmd[@]}" tests/cuda_backend.test.ts tests/cuda_vs_cpu.test.ts tests/cuda_ffi.test.ts tests/cuda_plan.test.ts
step "op suite on cuda" "$rt-op-suite.log" 200 env SPARSECODER_BACKEND=cuda "${test_cmd[@]}" tests/ops_forward.test.ts tests/ops_layout.test.ts tests/ops_grad.test.ts tests/sparse.test.ts tests/topk_encode.test.ts tests/optim.test.ts tests/sae_golden.test.ts tests/sae_invariants.test.ts
step "training check" "$rt-train.log" 120 "${run_cmd[@]}" bench/cuda_train_check.ts
step "benchmarks" "$rt-bench.log" 130 "${run_cmd[@]}" bench/cuda_bench.ts
echo "== summary ($rt) =="
printf '%s\n' "${status[@]}" | tee "$out/$rt-summary.log"
