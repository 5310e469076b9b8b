/**
 * On a CUDA machine: (1) the same TopK SAE training run (same seed, same synthetic batches) on the
 * cpu and cuda backends, evaluated on held-out batches; the metrics must agree within the stated
 * tolerance (runs diverge at the level of float rounding, so statistics are compared, not weights);
 * (2) a 10,000-step training loop on cuda whose device memory stays flat after warm-up.
 * Exit status 1 when a check fails.
 *   deno run -A bench/cuda_train_check.ts [--steps 400] [--loop 10000]   |   bun bench/cuda_train_check.ts
 */
import process from "node:process";
import * as t from "../mod.ts";
import { args } from "../tensor/platform/runtime.ts";

const { sae } = t;
const argv = args();
const opt = (
  name: string,
  d: number,
) => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : d);
/** |cuda − cpu| ≤ ABS + REL·|cpu| for FVU, MSE, cosine and the fraction of live features. */
const ABS = 0.01, REL = 0.05;

type Sae = typeof sae;
type State = Awaited<ReturnType<Sae["initTrainState"]>>;

/** Steps 1..steps on data batches of size B; `each` sees the step number after it ran. */
async function runSteps(
  state: State,
  data: ReturnType<Sae["syntheticData"]>,
  cfg: ReturnType<Sae["resolveConfig"]>,
  tc: ReturnType<Sae["resolveTrainConfig"]>,
  steps: number,
  B: number,
  each?: (i: number) => void,
): Promise<State> {
  for (let i = 1; i <= steps; i++) {
    const batch = data.batch(i, B);
    const { state: next } = await sae.trainStep(state, batch, cfg, tc);
    t.disposeReplaced(sae.stateTensors(state), sae.stateTensors(next));
    t.dispose(batch);
    state = next;
    each?.(i);
  }
  return state;
}

async function train(backend: string, steps: number, d: number, F: number, B: number, k: number) {
  t.useBackend(backend);
  const data = sae.syntheticData(t.synthetic.makeSynthetic({ d, nFeatures: F / 2 }));
  const cfg = sae.resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
  const tc = sae.resolveTrainConfig(cfg, { steps, batch_size: B });
  let state = await sae.initTrainState(t.random.key(0), cfg, tc, [data.batch(0, B)]);
  const t0 = performance.now();
  state = await runSteps(state, data, cfg, tc, steps, B);
  const ms = performance.now() - t0;
  const held = [0, 1, 2].map((i) => data.batch(1_000_000 + i, 2048));
  const m = await sae.evaluate(state.params, cfg, held);
  t.dispose([sae.stateTensors(state), held]);
  return { m, ms };
}

let failed = false;
const steps = opt("--steps", 400), [d, F, B, k] = [64, 512, 512, 8];
console.log(
  `TopK SAE d=${d} F=${F} batch=${B} k=${k}, ${steps} steps, cpu vs cuda (${t.backendInfo().backends.cuda})`,
);
const cpu = await train("cpu", steps, d, F, B, k);
const gpu = await train("cuda", steps, d, F, B, k);
for (const key of ["fvu", "mse", "cosine", "frac_alive", "l0"] as const) {
  const a = cpu.m[key], b = gpu.m[key];
  const ok = Math.abs(b - a) <= ABS + REL * Math.abs(a);
  failed ||= !ok;
  console.log(
    `  ${key.padEnd(11)} cpu ${a.toFixed(5)}  cuda ${b.toFixed(5)}  ${
      ok ? "ok" : `MISMATCH (tolerance ${ABS} + ${REL}·|cpu|)`
    }`,
  );
}
console.log(
  `  time: cpu ${(cpu.ms / steps).toFixed(2)} ms/step, cuda ${(gpu.ms / steps).toFixed(2)} ms/step`,
);

// Flat memory over 10,000 steps: no new driver allocations and the same bytes in use after warm-up.
{
  t.useBackend("cuda");
  const [d2, F2, B2, k2, total] = [32, 128, 64, 4, opt("--loop", 10_000)];
  const data = sae.syntheticData(t.synthetic.makeSynthetic({ d: d2, nFeatures: 64 }));
  const cfg = sae.resolveConfig({ arch: "topk", d_in: d2, d_sae: F2, k: k2 });
  const tc = sae.resolveTrainConfig(cfg, { steps: total, batch_size: B2 });
  let state = await sae.initTrainState(t.random.key(1), cfg, tc, [data.batch(0, B2)]);
  let after100: ReturnType<typeof t.cudaMemoryStats> = null, live100 = 0;
  const t0 = performance.now();
  state = await runSteps(state, data, cfg, tc, total, B2, (i) => {
    if (i === 100) (after100 = t.cudaMemoryStats()), (live100 = t.memoryStats().liveBuffers);
  });
  t.cudaSynchronize();
  const end = t.cudaMemoryStats()!;
  const flat = end.driverAllocs === after100!.driverAllocs && end.inUse === after100!.inUse &&
    t.memoryStats().liveBuffers === live100;
  failed ||= !flat;
  console.log(
    `${total}-step loop on cuda (${
      ((performance.now() - t0) / total).toFixed(2)
    } ms/step): after step 100 ${after100!.inUse} B in use, ${
      after100!.driverAllocs
    } driver allocations, ${live100} live buffers; after step ${total} ${end.inUse} B, ${end.driverAllocs}, ${t.memoryStats().liveBuffers} → ${
      flat ? "flat" : "NOT FLAT"
    }`,
  );
  t.dispose(sae.stateTensors(state));
}
process.exit(failed ? 1 : 0);
