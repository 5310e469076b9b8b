/** Median milliseconds per call of the library's real trainStep on one fixed batch, after warm-up steps. */
import * as t from "../mod.ts";
import type { SaeConfig } from "../sae/config.ts";
import type { TrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";

export async function msPerTrainStep(
  cfg: SaeConfig,
  tc: TrainConfig,
  x: t.Tensor,
  o: { warmup: number; steps: number },
): Promise<number> {
  let state = await initTrainState(t.random.key(0), cfg, tc, []);
  await t.cpuThreadsReady();
  const one = async () => {
    const { state: next } = await trainStep(state, { x }, cfg, tc);
    t.disposeReplaced(stateTensors(state), stateTensors(next));
    state = next;
  };
  // Warm-up: the kernels' long loops reach the optimising JIT tier only after a few steps.
  for (let i = 0; i < o.warmup; i++) await one();
  // The median step: robust to a step disturbed by the machine (the PyTorch scripts do the same).
  const times: number[] = [];
  for (let i = 0; i < o.steps; i++) {
    const t0 = performance.now();
    await one();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const m = times.length >> 1;
  const ms = times.length % 2 ? times[m] : (times[m - 1] + times[m]) / 2;
  t.dispose(stateTensors(state));
  return ms;
}
