/**
 * Forward tokens/s of a GPT-2-small-shaped model (12 layers, d 768, 12 heads, vocabulary 50257)
 * at context 128, batch 8, with one hook cached (blocks.6.hook_resid_post), through the
 * library's runWithCache on the default backend, beside the same forward written in plain
 * PyTorch (bench/lm_forward_torch.py, f32, no_grad, 2 threads) run from this process on the same
 * machine, with the ratio. Both sides build the same weights and tokens (bench/lm_weights.ts), so
 * the bench also reports how far apart their logits and cached values are.
 *   deno task bench:lm [--json] [--runs N]        bun bench/lm_forward.ts [--json] [--runs N]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import * as t from "../mod.ts";
import { runWithCache } from "../data/lm/model.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";
import { benchConfig, benchParams, benchTokens } from "./lm_weights.ts";

const argv = args();
const json = argv.includes("--json");
const runsAt = argv.indexOf("--runs");
const runs = runsAt >= 0 ? Number(argv[runsAt + 1]) : 5;
const nLayer = 12, dModel = 768, nHead = 12, vocabSize = 50257, T = 128, B = 8, WARMUP = 2;
const hookLayer = 6, hook = `blocks.${hookLayer}.hook_resid_post`, torchThreads = 2;

interface Probe {
  logits: number[];
  cache: number[];
}

/** The values at the positions the Python side probes. */
function probe(logits: t.Tensor, cache: t.Tensor): Probe {
  const lg = logits.dataSync(), c = cache.dataSync();
  const at = (x: ArrayLike<number>, i: number, j: number, k: number, dims: number[]) =>
    x[(i * dims[1] + j) * dims[2] + k];
  return {
    logits: Array.from(
      { length: 16 },
      (_, b) => at(lg, b % B, (7 * b) % T, (7919 * b) % vocabSize, [B, T, vocabSize]),
    ),
    cache: Array.from(
      { length: 16 },
      (_, b) => at(c, b % B, (5 * b) % T, (131 * b) % dModel, [B, T, dModel]),
    ),
  };
}

/** Largest |a − b| over max |b|: how far apart the two sides' values are. */
function relDiff(a: number[], b: number[]): number {
  const scale = Math.max(...b.map(Math.abs));
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]))) / scale;
}

let torch: { tokens_per_s: number; threads: number; torch: string; probe: Probe } | null = null;
let why = "";
if (existsSync("/usr/bin/python3")) {
  const r = spawnSync("/usr/bin/python3", [
    new URL("./lm_forward_torch.py", import.meta.url).pathname,
    ...[nLayer, dModel, nHead, vocabSize, T, B, hookLayer, runs, torchThreads].map(String),
  ], { encoding: "utf8", maxBuffer: 1 << 24 });
  if (r.status === 0) torch = JSON.parse(r.stdout.trim().split("\n").pop()!);
  else why = `python3-torch failed: ${(r.stderr || "").trim().split("\n").pop()}`;
} else why = "no /usr/bin/python3 (apt-get install python3-torch)";

const cfg = benchConfig({ nLayer, dModel, nHead, vocabSize, nPositions: T });
const model = { family: "gpt2" as const, cfg, params: benchParams(cfg) };
const ids = benchTokens(B, T, vocabSize);
await t.cpuThreadsReady();

/** One forward with the hook cached; the cached activation read back, as a harvester would. */
const one = async (): Promise<{ logits: t.Tensor; cache: t.Tensor }> => {
  const { logits, cache } = t.tidy(() => runWithCache(model, ids, [hook]));
  await cache[hook].data();
  await logits!.data();
  return { logits: logits!, cache: cache[hook] };
};
for (let i = 0; i < WARMUP; i++) t.dispose(await one());
const times: number[] = [];
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  const out = await one();
  times.push(performance.now() - t0);
  t.dispose(out);
}
times.sort((a, b) => a - b);
const m = times.length >> 1;
const ms = times.length % 2 ? times[m] : (times[m - 1] + times[m]) / 2;
const tps = (B * T * 1000) / ms;
const last = await one();
const ours = probe(last.logits, last.cache);
const agree = torch
  ? {
    logits: relDiff(ours.logits, torch.probe.logits),
    cache: relDiff(ours.cache, torch.probe.cache),
  }
  : null;

const pt = torch?.tokens_per_s;
if (json) {
  console.log(JSON.stringify({
    bench: "lm_forward",
    layers: nLayer,
    d: dModel,
    heads: nHead,
    vocab: vocabSize,
    context: T,
    batch: B,
    hook,
    tokens_per_s: tps,
    ms_per_forward: ms,
    torch_tokens_per_s: pt ?? null,
    torch_threads: torch?.threads ?? null,
    ratio: pt ? tps / pt : null,
    rel_diff: agree,
    runtime,
    backend: t.getBackend().info(),
  }));
} else {
  console.log(
    `GPT-2-small-shaped forward, L=${nLayer} d=${dModel} H=${nHead} V=${vocabSize}, ` +
      `batch ${B} × context ${T}, ${hook} cached (${runtime}; ${t.getBackend().info()})`,
  );
  console.log(
    `  ours ${tps.toFixed(0)} tok/s (${ms.toFixed(0)} ms)   pytorch ${
      pt ? `${pt.toFixed(0)} tok/s (${torch!.threads} threads, torch ${torch!.torch})` : "n/a"
    }   ratio ${pt ? (tps / pt).toFixed(2) + "x" : why}`,
  );
  if (agree) {
    console.log(
      `  same weights and tokens on both sides: relative difference logits ${
        agree.logits.toExponential(1)
      }, cache ${agree.cache.toExponential(1)}`,
    );
  }
}
