#!/usr/bin/env bash
# The NCCL checks that need a GPU, in one device-machine call (same packing as cuda_device.sh):
# the NCCL binding tests (nccl.h constants and arity where a header is found), bench/nccl_check.ts
# under mpirun with one rank per GPU (NCCL chosen, device all-reduce = host result, the 8.4M-float
# all-reduce time), and with two or more GPUs a data-parallel TopK run with NCCL against the same
# run through host memory. Needs Open MPI on the machine (apt-get install openmpi-bin).
#   bash scripts/pack_runtime.sh deno   # here, then:
#   run(command="bash bench/nccl_device.sh", carry=[".carry"], timeout_s=300)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/nccl-out}
mkdir -p "$out"
rt=$([ -f .carry/deno.xz ] && echo deno || echo bun)
[ -f .carry/$rt.xz ] || { echo "no runtime in .carry (run scripts/pack_runtime.sh deno|bun here first)"; exit 2; }
bin=/tmp/sc-$rt
xz -dc .carry/$rt.xz >"$bin" && chmod +x "$bin"
[ -d node_modules/fast-check ] || tar -xJf .carry/js.tar.xz
command -v mpirun >/dev/null || { apt-get install -y -q openmpi-bin libopenmpi-dev >/dev/null 2>&1 || true; }
command -v mpirun >/dev/null || { echo "no mpirun on this machine (Open MPI): the NCCL job cannot start"; exit 2; }
libs=$(find /usr/local /opt /usr/lib -name 'libcublas.so*' -o -name 'libnvrtc.so*' -o -name 'libnccl.so*' 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd: -)
export SPARSECODER_CUDA_LIBDIRS=$libs SPARSECODER_CUDA_CACHE=/tmp/sc-cuda-cache NO_COLOR=1
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
ranks=$(( gpus >= 2 ? 2 : 1 ))
mpi=(mpirun --allow-run-as-root --oversubscribe -np "$ranks")
if [ $rt = deno ]; then test_cmd=("$bin" test -A --no-check --v8-flags=--no-maglev); run_cmd=("$bin" run -A --no-check --v8-flags=--no-maglev); else test_cmd=("$bin" test); run_cmd=("$bin"); fi
echo "GPUs: $gpus, ranks: $ranks, libraries: $libs" | tee "$out/$rt-nccl.log"
status=()
step() { # name seconds command...
  local name=$1 limit=$2
  shift 2
  echo "== $name =="
  timeout "$limit" "$@" 2>&1 | tee -a "$out/$rt-nccl.log"
  local rc=${PIPESTATUS[0]}
  status+=("$name: $([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)")")
}
step "nccl binding tests" 60 "${test_cmd[@]}" tests/nccl_ffi.test.ts
step "nccl check, $ranks rank(s)" 120 "${mpi[@]}" "${run_cmd[@]}" bench/nccl_check.ts --out /tmp/nccl.bin
if [ "$ranks" -ge 2 ]; then
  step "same run through host memory" 120 "${mpi[@]}" -x SPARSECODER_NO_NCCL=1 "${run_cmd[@]}" bench/nccl_check.ts --out /tmp/host.bin
  step "NCCL = host memory (1e-5)" 10 python3 -c "
import struct,sys
a=open('/tmp/nccl.bin','rb').read(); b=open('/tmp/host.bin','rb').read()
x=struct.unpack(f'{len(a)//4}f',a); y=struct.unpack(f'{len(b)//4}f',b)
d=max(abs(p-q) for p,q in zip(x,y)); print('max |dparam|', d); sys.exit(0 if len(a)==len(b) and d<=1e-5 else 1)"
fi
echo "== summary ($rt) =="
printf '%s\n' "${status[@]}" | tee "$out/$rt-nccl-summary.log"
