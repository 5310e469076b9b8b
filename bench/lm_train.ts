/**
 * The training step of `sae lm train` (forward, backward, clip, AdamW) on the 1-layer d 256 model
 * (4 heads, vocabulary 4096, context 128, batch 16), beside the same step in plain PyTorch
 * (bench/lm_train_torch.py, f32, 2 threads) run from this process on the same machine, the two
 * sides alternating step by step; medians, tokens/s and their ratio.
 *   npm run bench:lm-train [-- --steps N]      bun bench/lm_train.ts [--steps N]
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { cpuThreadsReady } from "../mod.ts";
import { batchWindows } from "../data/lm/train/batches.ts";
import { gpt2ConfigFor, initGpt2 } from "../data/lm/train/init.ts";
import { initTrainState, trainStep } from "../data/lm/train/step.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const argv = args();
const at = argv.indexOf("--steps");
const steps = at >= 0 ? Number(argv[at + 1]) : 8, WARMUP = 2;
const L = 1, d = 256, H = 4, V = 4096, T = 128, B = 16, threads = 2;

const py = spawn("/usr/bin/python3", [
  new URL("./lm_train_torch.py", import.meta.url).pathname,
  ...[L, d, H, V, T, B, threads].map(String),
], { stdio: ["pipe", "pipe", "inherit"] });
const lines = createInterface({ input: py.stdout! })[Symbol.asyncIterator]();
const next = async () => JSON.parse((await lines.next()).value as string);
const info = await next();
const torchStep = async (): Promise<number> => {
  py.stdin!.write("step\n");
  return (await next()).ms;
};

await cpuThreadsReady();
const cfg = gpt2ConfigFor({ layers: L, dModel: d, heads: H, context: T, vocabSize: V });
const h = { lr: 1e-3, minLr: 1e-4, warmup: 10, steps: 1000, weightDecay: 0.1, clip: 1 };
let state = initTrainState(initGpt2(0, cfg), h);
const ids = Int32Array.from({ length: 1 << 16 }, (_, i) => (i * 2654435761) % V);
const ours: number[] = [], theirs: number[] = [];
for (let i = 0; i < steps + WARMUP; i++) {
  const t0 = performance.now();
  state = (await trainStep(state, batchWindows(ids, i, { seed: 0, batch: B, context: T }), cfg, h))
    .state;
  const ms = performance.now() - t0;
  const tm = await torchStep();
  if (i >= WARMUP) ours.push(ms), theirs.push(tm);
}
py.stdin!.end();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const [a, b] = [median(ours), median(theirs)];
const tok = (ms: number) => Math.round((B * T) / (ms / 1000));
console.log(
  `lm train step, 1 layer d ${d} V ${V} T ${T} B ${B} (${runtime}; torch ${info.torch}, ${info.threads} threads), median of ${steps}:`,
);
console.log(`  ours    ${a.toFixed(1)} ms/step  ${tok(a)} tokens/s`);
console.log(`  torch   ${b.toFixed(1)} ms/step  ${tok(b)} tokens/s`);
console.log(`  ours / torch time: ${(a / b).toFixed(2)}x`);
