/**
 * What bf16 matmuls do to TopK SAE training on the CPU: the same run (seed, synthetic batches) with
 * f32 matmuls and with bf16 ones (cblas_sbgemm where the library and CPU have it, else bf16-rounded
 * inputs through sgemm, the same numbers without the speed), then FVU and MSE on held-out batches,
 * recovery of the true features, and the median step time of each.
 *   deno run -A --v8-flags=--no-maglev bench/bf16_matmul.ts [--steps 300] [--json]
 *   bun bench/bf16_matmul.ts [same]
 */
import * as t from "../mod.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const { sae } = t;
const argv = args();
const json = argv.includes("--json");
const opt = (name: string, d: number) =>
  argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : d;
const steps = opt("--steps", 300), d = opt("--d", 256), F = opt("--F", 2048);
const B = opt("--batch", 1024), k = opt("--k", 16);

async function run(precision: "f32" | "bf16") {
  const status = t.setCpuMatmulPrecision(precision, { emulate: true });
  const src = t.synthetic.makeSynthetic({ d, nFeatures: F / 2 });
  const data = sae.syntheticData(src);
  const cfg = sae.resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
  const tc = sae.resolveTrainConfig(cfg, { steps, batch_size: B });
  let state = await sae.initTrainState(t.random.key(0), cfg, tc, [data.batch(0, B)]);
  const times: number[] = [];
  for (let i = 1; i <= steps; i++) {
    const batch = data.batch(i, B);
    const t0 = performance.now();
    const { state: next } = await sae.trainStep(state, batch, cfg, tc);
    times.push(performance.now() - t0);
    t.disposeReplaced(sae.stateTensors(state), sae.stateTensors(next));
    t.dispose(batch);
    state = next;
  }
  // The trained dictionary is evaluated in f32: the effect measured is that on training.
  t.setCpuMatmulPrecision("f32");
  const held = [0, 1, 2].map((i) => data.batch(1_000_000 + i, 2048));
  const m = await sae.evaluate(state.params, cfg, held);
  const folded = sae.foldScale(state.params, state.scale, state.scaleOut);
  const rec = await t.synthetic.featureRecovery(src.features, folded.W_dec);
  times.sort((a, b) => a - b);
  const out = {
    precision,
    running: status.running,
    reason: status.reason,
    fvu: m.fvu,
    mse: m.mse,
    recovered: rec.fraction,
    mmcs: rec.mmcs,
    ms_per_step: times[times.length >> 1],
  };
  t.dispose([sae.stateTensors(state), held]);
  if (folded !== state.params) t.dispose(folded);
  return out;
}

const rows = [await run("f32"), await run("bf16")];
if (json) {
  for (const r of rows) {
    console.log(JSON.stringify({ ...r, steps, d, F, B, k, runtime }));
  }
} else {
  console.log(
    `TopK SAE d=${d} F=${F} batch=${B} k=${k}, ${steps} steps, synthetic data (${runtime})`,
  );
  for (const r of rows) {
    console.log(
      `  ${r.running.padEnd(13)} FVU ${r.fvu.toFixed(4)}  MSE ${
        r.mse.toExponential(3)
      }  recovered ${(100 * r.recovered).toFixed(1)}%  MMCS ${r.mmcs.toFixed(4)}  ${
        r.ms_per_step.toFixed(1)
      } ms/step${r.reason ? `   (${r.reason})` : ""}`,
    );
  }
}
