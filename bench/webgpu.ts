/**
 * The webgpu backend: matmul GFLOP/s (f32, square) and the TopK SAE training step (d=512,
 * F=8192, batch 2048, k=32; the library's real trainStep), each timed to completion by a readback.
 * On a software adapter (Mesa's llvmpipe) only correctness matters; `--quick` keeps it short there.
 * `--memory N` instead runs N steps of a small TopK SAE (d=32, F=128, batch 256) and reports live
 * buffers and device bytes after the first and the last step (flat = no leak, the pool reuses).
 *   deno run -A --v8-flags=--no-maglev bench/webgpu.ts [--quick] [--json] [--memory N]
 */
import process from "node:process";
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { args } from "../tensor/platform/runtime.ts";

const argv = args();
const json = argv.includes("--json"), quick = argv.includes("--quick");

const r = await t.initWebGPU();
if (!r.ok) {
  console.log(json ? JSON.stringify({ skipped: r.reason }) : `webgpu: no adapter: ${r.reason}`);
  process.exit(0);
}
t.useBackend("webgpu");
const out = (o: Record<string, unknown>, text: string) =>
  console.log(json ? JSON.stringify(o) : text);
if (!json) console.log(r.backend.info());

const memIdx = argv.indexOf("--memory");
if (memIdx >= 0) {
  const steps = Number(argv[memIdx + 1] ?? 1000);
  const cfg = resolveConfig({ arch: "topk", d_in: 32, d_sae: 128, k: 4 });
  const tc = resolveTrainConfig(cfg, {
    steps,
    batch_size: 256,
    geometric_median_init: false,
    normalize_activations: false,
  });
  const x = t.random.normal(t.random.key(1), [256, 32]);
  let state = await initTrainState(t.random.key(0), cfg, tc, []);
  const samples: number[][] = [];
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const { state: next } = await trainStep(state, { x }, cfg, tc);
    t.disposeReplaced(stateTensors(state), stateTensors(next));
    state = next;
    if (i === 0 || i === steps - 1) {
      samples.push([t.memoryStats().liveBuffers, r.backend.gpuMemory().allocatedBytes]);
    }
    // Progress lines, so a long run cut short still shows the trend.
    if (!json && (i + 1) % Math.max(1, Math.floor(steps / 10)) === 0) {
      console.log(
        `  step ${
          i + 1
        }: live buffers ${t.memoryStats().liveBuffers}, device bytes ${r.backend.gpuMemory().allocatedBytes}, ${
          ((performance.now() - t0) / (i + 1)).toFixed(1)
        } ms/step`,
      );
    }
  }
  const s = (performance.now() - t0) / 1000;
  out(
    { bench: "memory", steps, first: samples[0], last: samples[1], seconds: s },
    `${steps} TopK steps (${(s / steps * 1000).toFixed(1)} ms/step): live buffers ${
      samples[0][0]
    } → ${samples[1][0]}, device bytes ${samples[0][1]} → ${samples[1][1]}`,
  );
  process.exit(0);
}

for (const n of quick ? [256, 512] : [512, 1024, 2048, 4096]) {
  const a = t.random.normal(t.random.key(1), [n, n]), b = t.random.normal(t.random.key(2), [n, n]);
  await t.matmul(a, b).data(); // compile and warm up
  const reps = quick ? 2 : 10;
  const t0 = performance.now();
  let c: t.Tensor | null = null;
  for (let i = 0; i < reps; i++) {
    c?.dispose();
    c = t.matmul(a, b);
  }
  await t.sum(c!).data(); // waits for all queued work
  const s = (performance.now() - t0) / 1000;
  out(
    { bench: "matmul", n, gflops: (2 * n ** 3 * reps) / s / 1e9 },
    `matmul ${n}³ f32: ${((2 * n ** 3 * reps) / s / 1e9).toFixed(2)} GFLOP/s`,
  );
  t.dispose([a, b, c!]);
}

const d = 512, F = 8192, B = 2048, k = 32, steps = quick ? 1 : 5;
const cfg = resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
const tc = resolveTrainConfig(cfg, {
  steps: 1000,
  batch_size: B,
  geometric_median_init: false,
  normalize_activations: false,
});
const x = t.random.normal(t.random.key(1), [B, d]);
let state = await initTrainState(t.random.key(0), cfg, tc, []);
const one = async () => {
  const { state: next, metrics } = await trainStep(state, { x }, cfg, tc);
  t.disposeReplaced(stateTensors(state), stateTensors(next));
  state = next;
  return metrics;
};
await one(); // compile pipelines
const t0 = performance.now();
let m = null;
for (let i = 0; i < steps; i++) m = await one();
const s = (performance.now() - t0) / 1000;
out(
  { bench: "topk_step", d, F, B, k, tokens_per_s: (B * steps) / s, loss: m?.loss },
  `TopK SAE step d=${d} F=${F} B=${B} k=${k}: ${(s / steps * 1000).toFixed(0)} ms/step, ${
    ((B * steps) / s).toFixed(0)
  } tok/s (loss ${m?.loss})`,
);
t.dispose([stateTensors(state), x]);
const mem = r.backend.gpuMemory();
out(
  { bench: "memory", ...mem },
  `device memory ${(mem.allocatedBytes / 2 ** 20).toFixed(0)} MiB (pool ${
    (mem.pooledBytes / 2 ** 20).toFixed(0)
  } MiB), ${mem.pipelines} pipelines`,
);
