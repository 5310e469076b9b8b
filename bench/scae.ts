/**
 * The SCAE pruned pass on the shipped 2-layer model's suite shape (models/lm-2l: d 256, 4 heads;
 * attn_0, mlp_0, attn_1, mlp_1 with expansion 4 (F 1024), k 32, C 16): ms per pruned forward and per
 * finetuning step (Σ FVU + CE, backward, Adam), beside bench/scae_torch.py, which computes the same
 * pass the reference's way (dense [F_down, F_up] virtual weights, per head for attention, times a
 * 0/1 connection mask) on the same frozen run, dictionaries and connections. The two sides
 * alternate call by call; medians; each process's peak RSS. Dictionaries: the library's random
 * TopK/transcoder init (untrained); connections: random, C upstream (module, feature) pairs per
 * downstream feature drawn jointly over its upstream modules; tokens: random ids, batch 8 × 128.
 *   npm run bench:scae [-- --reps N] [-- --form gather] [-- --suite DIR]     bun bench/scae.ts [same]
 * --suite DIR times a trained suite on lm-2l (`sae scae train` + `connect`, as `npm run train:scae`
 * writes runs/scae) with its connections cut to C 16 by joint rank, instead of the random ones.
 * --form gather times the gather form instead of the scatter form (a separate run: peaks are per
 * process).
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { cpuThreadsReady } from "../mod.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { tensor } from "../tensor/ops/create.ts";
import { add } from "../tensor/ops/elementwise.ts";
import * as random from "../tensor/random.ts";
import { valueAndGrad } from "../autodiff/grad.ts";
import { adam, applyStep } from "../autodiff/optim.ts";
import { saveSafetensors } from "../data/safetensors.ts";
import { loadModel } from "../data/lm/model.ts";
import { resolveConfig } from "../sae/config.ts";
import { architecture } from "../sae/arch/registry.ts";
import { loadSuite, type ScaeSuite, suiteModules, upstreamOf } from "../sae/scae/suite.ts";
import {
  type Connections,
  CONNECTIONS_FILE,
  loadConnections,
  pairName,
  truncateConnections,
} from "../sae/scae/connections.ts";
import { frozenRun, headWeights, suiteCe } from "../sae/scae/frozen.ts";
import {
  connIndices,
  fvu,
  prunedForward,
  type SuiteContext,
  type SuiteParams,
  suiteResidual,
} from "../sae/scae/pruned.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";
import { peakRssMiB } from "./peak_rss.ts";

const argv = args();
const opt = (name: string, fallback: string) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
};
const reps = Number(opt("--reps", "5")), WARMUP = 1;
const form = opt("--form", "scatter");
if (form !== "scatter" && form !== "gather") {
  throw new Error(`--form: scatter or gather, not ${form}`);
}
const L = 2, B = 8, T = 128, F = 1024, K = 32, C = 16, threads = 2, LR = 1e-4;

await cpuThreadsReady();
const root = fileURLToPath(new URL("../models/lm-2l", import.meta.url));
const model = await loadModel(root, { dtype: "f32" });
if (model.family !== "gpt2") throw new Error(`bench:scae expects a gpt2 model at ${root}`);
const d = model.cfg.dModel, V = model.cfg.vocabSize;

// The suite: random dictionaries, random connections, random tokens (fixed seeds), or a trained one.
const suiteDir = opt("--suite", "");
const trained = suiteDir ? await loadSuite(suiteDir) : null;
const modules = trained?.modules ?? suiteModules(L);
if (modules.length !== 2 * L) throw new Error(`${suiteDir}: expected ${2 * L} modules (lm-2l)`);
const dicts: ScaeSuite["dicts"] = trained?.dicts ?? {};
if (!trained) {
  modules.forEach((m, i) => {
    const cfg = resolveConfig({
      arch: m.kind === "attn" ? "topk" : "transcoder",
      d_in: d,
      d_sae: F,
      d_out: d,
      k: K,
    });
    dicts[m.name] = { cfg, params: architecture(cfg.arch).init(random.key(i + 1), cfg) };
  });
}
for (const m of modules) {
  const c = dicts[m.name].cfg;
  if (c.d_sae !== F || c.k !== K) {
    throw new Error(
      `${suiteDir}/${m.name}: the bench's shape is F ${F}, k ${K}; found ${c.d_sae}, ${c.k}`,
    );
  }
}
const suite: ScaeSuite = { model: "lm-2l", residual: "sequential", modules, k: K, C, dicts };
const rand = (() => {
  let s = 0x9e3779b9;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
})();
let conns: Connections = {};
if (trained) {
  conns = truncateConnections(
    await loadConnections(join(suiteDir, CONNECTIONS_FILE), trained, (m) => dicts[m].cfg.d_sae),
    C,
  );
}
for (const m of trained ? [] : modules) {
  const ups = upstreamOf(suite, m.name);
  if (!ups.length) continue;
  const tabs = ups.map(() => new Int32Array(F * C).fill(-1));
  for (let i = 0; i < F; i++) {
    const picked = new Set<number>(), fill = ups.map(() => 0);
    while (picked.size < C) picked.add(Math.floor(rand() * ups.length * F));
    for (const x of picked) {
      const u = Math.floor(x / F);
      tabs[u][i * C + fill[u]++] = x % F;
    }
  }
  conns[m.name] = Object.fromEntries(ups.map((u, j) => [u.name, { rows: F, C, ids: tabs[j] }]));
}
const tokens = tensor(Int32Array.from({ length: B * T }, () => Math.floor(rand() * (V - 1))), {
  dtype: "i32",
  shape: [B, T],
});
const frozen = frozenRun(model, tokens, suite);
const heads: SuiteContext["heads"] = {};
for (let l = 0; l < L; l++) heads[l] = headWeights(model, l);
const cfgs = Object.fromEntries(modules.map((m) => [m.name, dicts[m.name].cfg]));
const ctx: SuiteContext = { info: suite, cfgs, frozen, heads };
let params: SuiteParams = Object.fromEntries(modules.map((m) => [m.name, dicts[m.name].params]));
let idx = connIndices(conns);
if (form === "gather") {
  idx = Object.fromEntries(
    Object.entries(idx).map(([dn, ups]) => [
      dn,
      Object.fromEntries(Object.entries(ups).map(([u, c]) => [u, { ...c, fan: undefined }])),
    ]),
  );
}

// Everything the PyTorch side needs, in one safetensors file.
const dir = mkdtempSync(join(tmpdir(), "scae-bench-"));
const file = join(dir, "suite.safetensors");
const out: Record<string, Tensor> = {
  tokens,
  embed: frozen.embed,
  lnf_w: model.params.lnF.w,
  lnf_b: model.params.lnF.b,
  wte: model.params.head ?? model.params.wte,
};
for (const m of modules) {
  out[`scale:${m.name}`] = frozen.scale[m.name];
  out[`target:${m.name}`] = frozen.targets[m.name];
  for (const k of ["W_enc", "W_dec", "b_enc", "b_dec"] as const) {
    out[`${m.name}.${k}`] = params[m.name][k]!;
  }
}
for (let l = 0; l < L; l++) {
  out[`pattern:${l}`] = frozen.pattern[l];
  out[`wOV:${l}`] = heads[l].wOV;
  out[`bO:${l}`] = heads[l].bO;
}
for (const [dn, ups] of Object.entries(conns)) {
  for (const [u, t] of Object.entries(ups)) {
    out[`conn:${pairName(dn, u)}`] = tensor(t.ids, { dtype: "i32", shape: [F, C] });
  }
}
await saveSafetensors(file, out, {
  apply_b_dec: JSON.stringify(modules.map((m) => dicts[m.name].cfg.apply_b_dec_to_input)),
});

const py = spawn("/usr/bin/python3", [
  fileURLToPath(new URL("./scae_torch.py", import.meta.url)),
  file,
  String(K),
  String(threads),
  String(LR),
], { stdio: ["pipe", "pipe", "inherit"] });
const lines = createInterface({ input: py.stdout! })[Symbol.asyncIterator]();
const next = async () => {
  const { value, done } = await lines.next();
  if (done) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(
      "bench/scae_torch.py ended early (needs /usr/bin/python3 with torch; see its stderr)",
    );
  }
  return JSON.parse(value as string);
};
const info = await next();
const torch = async (cmd: string) => {
  py.stdin!.write(cmd + "\n");
  return await next();
};

const setupMiB = peakRssMiB();
const lossOf = (p: SuiteParams) => {
  const o = prunedForward(p, ctx, idx);
  const terms = modules.map((m) => fvu(frozen.targets[m.name], o.recon[m.name]));
  return terms.reduce(add, suiteCe(model, suiteResidual(o, frozen), frozen));
};
const adamOpt = adam({ lr: LR });
let state = adamOpt.init(params);
const vg = valueAndGrad(lossOf);

const ours = { fwd: [] as number[], step: [] as number[] };
const theirs = { fwd: [] as number[], step: [] as number[] };
const ourLoss: number[] = [], theirLoss: number[] = [];
let fwdPeak = [0, 0];
for (let r = 0; r < reps + WARMUP; r++) {
  let t0 = performance.now();
  const o = prunedForward(params, ctx, idx);
  await Promise.all(Object.values(o.recon).map((x) => x.data()));
  const f = performance.now() - t0;
  const tf = await torch("fwd");
  // The peaks after the first forward, before any step: what the forward alone needs.
  if (r === 0) fwdPeak = [peakRssMiB(), (await torch("mem")).peak_mib];
  t0 = performance.now();
  const [loss, g] = vg(params) as [Tensor, SuiteParams];
  [params, state] = applyStep(adamOpt, g, state, params);
  await Promise.all(Object.values(params).map((p) => p.W_dec.data()));
  const s = performance.now() - t0;
  ourLoss.push((await loss.data())[0]);
  const ts = await torch("step");
  theirLoss.push(ts.loss);
  if (r >= WARMUP) {
    ours.fwd.push(f), ours.step.push(s);
    theirs.fwd.push(tf.ms), theirs.step.push(ts.ms);
  }
}
const mem = await torch("mem");
py.stdin!.end();
rmSync(dir, { recursive: true, force: true });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const [of, os, tf, ts] = [
  median(ours.fwd),
  median(ours.step),
  median(theirs.fwd),
  median(theirs.step),
];
const peak = peakRssMiB();
const row = (name: string, f: number, s: number, setup: number, fp: number, pk: number) =>
  `  ${name.padEnd(22)} ${f.toFixed(0).padStart(6)} ms/forward ${
    s.toFixed(0).padStart(6)
  } ms/step` +
  `   RSS after setup ${setup.toFixed(0)} MB, peak after a forward ${fp.toFixed(0)} MB, ` +
  `after the steps ${pk.toFixed(0)} MB`;
console.log(
  `scae pruned pass, lm-2l suite (d ${d}, F ${F}, k ${K}, C ${C}, N ${B * T} tokens; ${runtime}; ` +
    `torch ${info.torch}, ${info.threads} threads), median of ${reps}, load ${
      loadavg().map((x) => x.toFixed(2)).join(" ")
    }:`,
);
console.log(row(`ours (${form})`, of, os, setupMiB, fwdPeak[0], peak));
console.log(row("torch (dense × mask)", tf, ts, mem.setup_mib, fwdPeak[1], mem.peak_mib));
console.log(
  `  ours / torch time: forward ${(of / tf).toFixed(2)}x, step ${(os / ts).toFixed(2)}x; ` +
    `peak growth (forward / steps) ours ${(fwdPeak[0] - setupMiB).toFixed(0)} / ${
      (peak - setupMiB).toFixed(0)
    } MB, torch ${(fwdPeak[1] - mem.setup_mib).toFixed(0)} / ${
      (mem.peak_mib - mem.setup_mib).toFixed(0)
    } MB`,
);
const losses = (xs: number[]) => xs.map((x) => x.toFixed(4)).join(" ");
console.log(`  loss by step: ours ${losses(ourLoss)}; torch ${losses(theirLoss)}`);
