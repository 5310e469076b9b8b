/**
 * Where the bench's GPT-2-small-shaped forward spends its time: every kernel of the current
 * backend wrapped with a timer, per-forward time of each primitive with operand shapes ("T" marks
 * a transposed view), as bench/sae_profile.ts does for a training step.
 *   deno run -A --v8-flags=--no-maglev bench/lm_profile.ts [runs]     bun bench/lm_profile.ts …
 */
import * as t from "../mod.ts";
import { timeKernels } from "./kernel_timer.ts";
import { runWithCache } from "../data/lm/model.ts";
import { args } from "../tensor/platform/runtime.ts";
import { benchConfig, benchParams, benchTokens } from "./lm_weights.ts";

const runs = Number(args()[0] ?? 2), WARMUP = 1, B = 8, T = 128;
const hook = "blocks.6.hook_resid_post";

const cfg = benchConfig({ nLayer: 12, dModel: 768, nHead: 12, vocabSize: 50257, nPositions: T });
const model = { family: "gpt2" as const, cfg, params: benchParams(cfg) };
const ids = benchTokens(B, T, cfg.vocabSize);
const timer = timeKernels();
await t.cpuThreadsReady();
let total = 0;
for (let i = 0; i < WARMUP + runs; i++) {
  if (i === WARMUP) timer.clear();
  const t0 = performance.now();
  const { logits, cache } = t.tidy(() => runWithCache(model, ids, [hook]));
  // What the bench reads back: the cached activation and one logit (all of them would time a 200 MB
  // copy, not the forward).
  await cache[hook].data();
  await t.tidy(() => t.slice(logits!, [B - 1, T - 1, cfg.vocabSize - 1])).data();
  t.dispose([logits, cache]);
  if (i >= WARMUP) total += performance.now() - t0;
}
console.log(`forward B=${B} T=${T}: ${(total / runs).toFixed(0)} ms (${t.getBackend().info()})`);
const kernels = timer.report(runs, 5);
console.log(
  `kernels ${kernels.toFixed(0)} ms, outside them ${(total / runs - kernels).toFixed(0)} ms`,
);
