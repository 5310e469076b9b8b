/**
 * Where a training step's time goes: wraps every kernel of the current backend with a timer and
 * prints the per-step time of each primitive (with operand shapes; "T" marks a transposed view).
 *   deno run -A --v8-flags=--no-maglev bench/sae_profile.ts [arch] [steps]     bun bench/sae_profile.ts …
 * CPU kernels are synchronous, so the times are the kernels' own; on a GPU backend they would
 * only be launch times. The last lines give the encoder kernel's share of the step and the floor:
 * a plain GEMM of the encoder's shape ([B, d]·[d, F], the backend's matmul at the step's precision,
 * no bias or selection), timed in the same run, as a share of the step.
 */
import { loadavg } from "node:os";
import * as t from "../mod.ts";
import { timeKernels } from "./kernel_timer.ts";
import { type ArchName, resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { args } from "../tensor/platform/runtime.ts";

const argv = args();
const arch = argv[0] ?? "topk", steps = Number(argv[1] ?? 4), WARMUP = 4;
const d = 512, F = 8192, B = 2048, k = 32;

const timer = timeKernels();

const cfg = resolveConfig({ arch: arch as ArchName, d_in: d, d_sae: F, k });
const tc = resolveTrainConfig(cfg, {
  steps: 1000,
  batch_size: B,
  geometric_median_init: false,
  normalize_activations: false,
});
const x = t.random.normal(t.random.key(1), [B, d]);
let state = await initTrainState(t.random.key(0), cfg, tc, []);
await t.cpuThreadsReady();
let total = 0;
for (let i = 0; i < WARMUP + steps; i++) {
  if (i === WARMUP) timer.clear();
  const t0 = performance.now();
  const { state: next } = await trainStep(state, { x }, cfg, tc);
  t.disposeReplaced(stateTensors(state), stateTensors(next));
  state = next;
  if (i >= WARMUP) total += performance.now() - t0;
}
console.log(
  `${arch} step, d=${d} F=${F} batch=${B} k=${k}: ${
    (total / steps).toFixed(1)
  } ms (${t.getBackend().info()})`,
);
const kernels = timer.report(steps, 0.5);
console.log(
  `kernels ${kernels.toFixed(1)} ms of ${(total / steps).toFixed(1)} ms per step`,
);
// The floor: the encoder's one dense matmul (the costliest matmul entry, its bias fused or not,
// or the GEMM with its top-k fused); the rest is overhead.
const gemm =
  timer.entries().filter(([key]) =>
    /^(matmul|fused\.affine|fused\.affineTopk|fused\.affineBatchTopk) /.test(key)
  )
    .sort((a, b) => b[1][0] - a[1][0])[0];
if (gemm) {
  console.log(
    `encoder GEMM (${gemm[0]}): ${(gemm[1][0] / steps).toFixed(1)} ms, ${
      (100 * gemm[1][0] / total).toFixed(1)
    }% of the step (load average ${loadavg().map((v) => v.toFixed(2)).join(" ")})`,
  );
}
// The floor as the plain dense product would set it: what the encoder costs without a fused
// selection. The fused encoder may run under it (it screens in bf16 and sums in f32 only where
// the selection needs it), so its own share of the step is the lower of the two figures.
const W = t.random.normal(t.random.key(2), [d, F]);
const gemmMs: number[] = [];
for (let i = 0; i < 6; i++) {
  const t0 = performance.now();
  const y = t.matmul(x, W); // CPU kernels run synchronously: no read-back in the time
  if (i > 0) gemmMs.push(performance.now() - t0);
  y.dispose();
}
const floor = gemmMs.sort((a, b) => a - b)[gemmMs.length >> 1];
const precision = t.getBackend().name === "cpu"
  ? t.cpuMatmulPrecision().running
  : "backend default";
console.log(
  `floor, a plain GEMM [${B}x${d}]·[${d}x${F}] (${precision}, median of ${gemmMs.length}): ${
    floor.toFixed(1)
  } ms, ${(100 * floor / (total / steps)).toFixed(1)}% of the step`,
);
t.dispose([stateTensors(state), x, W]);
