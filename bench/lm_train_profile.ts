/**
 * One training step of the issue-16 language model (GPT-2 layout: 1 layer, d_model 256, 4 heads,
 * MLP 1024, vocab 4096, context 128, batch 16, tied head): the mean cross-entropy's value and
 * gradient through data/lm/gpt2.ts's forward, then AdamW, timed per step and per kernel (every
 * backend kernel wrapped with a timer, operand shapes shown, "T" a transposed view).
 * bench/lm_train_torch.py is the same step in PyTorch.
 *   deno run -A --v8-flags=--no-maglev bench/lm_train_profile.ts [steps] [--batch=16]
 *     [--without=ce,act,norm,attn]   compose those ops from primitives (the step before fusion)
 *     [--quiet]                      no kernel table, steps only
 *   bun bench/lm_train_profile.ts …
 */
import * as t from "../mod.ts";
import { forward } from "../data/lm/gpt2.ts";
import type { Gpt2Config } from "../data/lm/config.ts";
import type { Gpt2Params } from "../data/lm/load.ts";
import { args } from "../tensor/platform/runtime.ts";
import { timeKernels } from "./kernel_timer.ts";

const argv = args();
const opt = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const steps = Number(argv.find((a) => !a.startsWith("--")) ?? 6), WARMUP = 2;
const B = Number(opt("batch") ?? 16), T = 128, d = 256, V = 4096, P = 256;
const without = new Set((opt("without") ?? "").split(",").filter(Boolean));
const quiet = argv.includes("--quiet");

// Composing an op = taking its kernels (both halves) away from the backend for this process.
const KERNELS: Record<string, string[]> = {
  ce: ["crossEntropy", "crossEntropyGrad"],
  act: ["activation", "activationGrad"],
  norm: ["rowNorm", "rowNormGrad"],
  attn: ["attnSoftmax", "attnSoftmaxGrad"],
};
const fused = t.getBackend().fused as Record<string, unknown>;
for (const w of without) {
  if (!KERNELS[w]) throw new Error(`--without: ${w} is not one of ${Object.keys(KERNELS)}`);
  for (const k of KERNELS[w]) delete fused[k];
}

const cfg: Gpt2Config = {
  modelType: "gpt2",
  vocabSize: V,
  nPositions: P,
  dModel: d,
  nLayer: 1,
  nHead: 4,
  dMlp: 4 * d,
  gelu: "none",
  layerNormEps: 1e-5,
  scaleAttnByInverseLayerIdx: false,
  scaleAttnWeights: true,
} as unknown as Gpt2Config;
let key = t.random.key(0);
const normal = (shape: number[]) => {
  const [a, b] = t.random.split(key);
  key = a;
  return t.mul(t.random.normal(b, shape), 0.02);
};
const ln = () => ({ w: t.ones([d]), b: t.zeros([d]) });
let params = {
  wte: normal([V, d]),
  wpe: normal([P, d]),
  lnF: ln(),
  blocks: [{
    ln1: ln(),
    wQkv: normal([d, 3 * d]),
    bQkv: t.zeros([3 * d]),
    wO: normal([d, d]),
    bO: t.zeros([d]),
    ln2: ln(),
    wIn: normal([d, 4 * d]),
    bIn: t.zeros([4 * d]),
    wOut: normal([4 * d, d]),
    bOut: t.zeros([d]),
  }],
};
type Params = typeof params;
const toks = t.random.randint(t.random.key(1), [B, T + 1], 0, V);
const inputs = t.sliceAxis(toks, 1, 0, T), targets = t.contiguous(t.sliceAxis(toks, 1, 1, T + 1));

const loss = (p: Params) => {
  const logits = forward(p as unknown as Gpt2Params, inputs, cfg);
  if (without.has("ce")) {
    // The composition a trainer would write without the fused op.
    const lp = t.logSoftmax(logits, -1);
    return t.neg(t.mean(t.takeAlongAxis(lp, t.reshape(targets, [B, T, 1]), -1)));
  }
  return t.mean(t.crossEntropy(logits, targets));
};
const vg = t.valueAndGrad(loss);
const adam = t.adamw({ lr: 1e-3 });
let state = adam.init(params);

await t.cpuThreadsReady();
const timer = timeKernels();
const times: number[] = [];
for (let i = 0; i < WARMUP + steps; i++) {
  if (i === WARMUP) timer.clear();
  const t0 = performance.now();
  const [l, g] = vg(params);
  [params, state] = t.applyStep(adam, g, state, params);
  const value = (await l.data())[0];
  await params.wte.data();
  const ms = performance.now() - t0;
  if (i >= WARMUP) times.push(ms);
  if (!quiet) console.log(`step ${i}: loss ${value.toFixed(4)}, ${ms.toFixed(0)} ms`);
}
const median = times.sort((a, b) => a - b)[times.length >> 1];
console.log(
  `step (fwd+bwd+AdamW) B=${B} T=${T}${without.size ? ` without ${[...without]}` : ""}: median ${
    median.toFixed(0)
  } ms, ${(B * T / median * 1000).toFixed(0)} tok/s (${t.getBackend().info()})`,
);
if (!quiet) {
  const kernels = timer.report(steps, 3);
  console.log(`kernels ${kernels.toFixed(0)} ms/step`);
}
