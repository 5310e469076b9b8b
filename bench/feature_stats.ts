/**
 * Feature statistics throughput beside the forward's own, on the shipped 1-layer model
 * (models/lm-1l, hook blocks.0.mlp.hook_post, d 1024) and its held-out text, with a TopK SAE of
 * random weights (k 32, d_sae --features); batches of 8 rows of 128 tokens. Per batch, alternating
 * in one run (A/B/C on the same ids, medians):
 *   forward   the model up to the hook + readback (the bare forward)
 *   encode    forward + the SAE's codes, dense [B·T, F], read back (what any statistic needs)
 *   stats     encode + the collector's pass (top contexts, histogram, interval samples, domains)
 * and once: the logit effects of all F decoder rows.
 * With --rss it instead saves such an SAE with d_sae --features and runs `sae features` over --tokens
 * of the corpus in a fresh process, printing its peak resident memory beside its memory before the
 * command (runtime and modules loaded).
 *   deno run -A --v8-flags=--no-maglev bench/feature_stats.ts [--features 4096] [--batches 6] [--json]
 *   deno run -A --v8-flags=--no-maglev bench/feature_stats.ts --rss --features 16384 --tokens 16384
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { directLogitMap } from "../data/lm/direct_logits.ts";
import { openTextRows } from "../data/text/open_rows.ts";
import { resolveConfig } from "../sae/config.ts";
import { architecture } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { saveSae } from "../sae/io/saelens.ts";
import { featureStats } from "../sae/eval/feature_stats.ts";
import { featuresCommand } from "../sae/eval/features_cli.ts";
import { logitEffects } from "../sae/eval/logit_effects.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";
import { scriptCommand } from "../tensor/platform/process.ts";
import { peakRssMiB } from "./peak_rss.ts";

const argv = args();
const flag = (name: string, fallback: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const json = argv.includes("--json");
const MODEL = "models/lm-1l", DATA = "models/corpus/heldout.jsonl";
const HOOK = "blocks.0.mlp.hook_post", T = 128, B = 8;
const F = flag("--features", 4096);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function randomSae() {
  const cfg = resolveConfig({
    arch: "topk",
    d_in: 1024,
    d_sae: F,
    k: 32,
    extra: { hook_name: HOOK, context_size: T },
  });
  return { cfg, params: architecture("topk").init(t.random.key(0), cfg) };
}

async function throughput(): Promise<void> {
  const batches = flag("--batches", 6);
  const model = await loadModel(MODEL);
  const { cfg, params } = randomSae();
  const { rows, special } = await openTextRows(DATA, MODEL, { context: T, labelField: "domain" });
  const groups: { ids: Int32Array; labels: string[] }[] = [];
  let ids = new Int32Array(B * T), labels: string[] = [], n = 0;
  for await (const r of rows.rows()) {
    ids.set(r.ids, n * T);
    labels.push(...(r.segments ?? []).map((s) => s.label));
    if (++n < B) continue;
    groups.push({ ids, labels });
    if (groups.length === batches) break;
    [ids, labels, n] = [new Int32Array(B * T), [], 0];
  }
  const forward = (g: Int32Array) =>
    t.tidy(() =>
      runWithCache(model, t.tensor(g, { shape: [B, T], dtype: "i32" }), [HOOK], {
        stopEarly: true,
      }).cache[HOOK]
    );
  const encode = (g: Int32Array) =>
    t.tidy(() => {
      const x = t.reshape(forward(g), [B * T, 1024]);
      return toDense(architecture("topk").encodeInference(params, x, cfg), F);
    });
  const collector = featureStats({
    features: F,
    slices: 1,
    top: 10,
    before: 8,
    after: 4,
    bins: 32,
    intervals: 8,
    samples: 3,
    seed: 0,
  });
  const id = collector.labelId("en");
  const time = { forward: [] as number[], encode: [] as number[], stats: [] as number[] };
  let row = 0;
  for (let i = -1; i < batches; i++) {
    const g = groups[Math.max(i, 0)].ids;
    const keep = Uint8Array.from(g, (x) => (special.has(x) ? 0 : 1));
    for (const which of ["forward", "encode", "stats"] as const) {
      const t0 = performance.now();
      const y = which === "forward" ? forward(g) : encode(g);
      const v = (await y.data()) as Float32Array;
      y.dispose();
      if (which === "stats") {
        const rowIds = Array.from({ length: B }, () => row++);
        collector.add({ ids: g, codes: v, rowIds, keep, labels: new Int32Array(B * T).fill(id) });
      }
      if (i >= 0) time[which].push(performance.now() - t0);
    }
  }
  const t0 = performance.now();
  await logitEffects(params.W_dec, directLogitMap(model, HOOK), 10);
  const logitsMs = performance.now() - t0;
  const tps = (ms: number) => Math.round((B * T * 1000) / ms);
  const [fw, en, st] = [median(time.forward), median(time.encode), median(time.stats)];
  const out = {
    runtime,
    backend: t.getBackend().info(),
    d_sae: F,
    batch: B,
    context: T,
    batches,
    forward_tokens_per_s: tps(fw),
    encode_tokens_per_s: tps(en),
    stats_tokens_per_s: tps(st),
    stats_over_encode: (st - en) / en,
    logit_effects_s: logitsMs / 1000,
  };
  if (json) console.log(JSON.stringify(out));
  else {
    console.log(
      `${runtime}, ${out.backend}, d_sae ${F}, ${B}×${T} tokens a batch, ${batches} batches (medians):`,
    );
    console.log(`  forward to ${HOOK}     ${out.forward_tokens_per_s} tokens/s`);
    console.log(`  + SAE codes read back          ${out.encode_tokens_per_s} tokens/s`);
    console.log(
      `  + feature statistics           ${out.stats_tokens_per_s} tokens/s (the statistics add ${
        (100 * out.stats_over_encode).toFixed(0)
      } % to forward + codes)`,
    );
    console.log(`  logit effects of ${F} features  ${out.logit_effects_s.toFixed(2)} s once`);
  }
}

/** --rss: the dictionary saved here, `sae features` measured in a fresh process (--rss-child). */
async function rss(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "bench-features-"));
  try {
    const { cfg, params } = randomSae();
    await saveSae(dir, { cfg, params });
    const child = spawnSync(
      scriptCommand("bench/feature_stats.ts")[0],
      [...scriptCommand("bench/feature_stats.ts").slice(1), "--rss-child", dir, ...argv],
      { stdio: ["ignore", "inherit", "inherit"] },
    );
    if (child.status !== 0) throw new Error(`the measuring process failed (${child.status})`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function rssChild(dir: string): Promise<void> {
  const tokens = flag("--tokens", 16384);
  const before = peakRssMiB();
  const t0 = performance.now();
  const log = console.log;
  console.log = () => {};
  try {
    await featuresCommand(dir, {
      model: MODEL,
      data: DATA,
      tokens: String(tokens),
      "domain-field": "domain",
      show: "0",
      quiet: true,
    }, (m) => {
      throw new Error(m);
    });
  } finally {
    console.log = log;
  }
  const s = (performance.now() - t0) / 1000;
  const out = {
    runtime,
    d_sae: F,
    tokens,
    seconds: s,
    tokens_per_s: Math.round(tokens / s),
    peak_rss_before_mib: Math.round(before),
    peak_rss_mib: Math.round(peakRssMiB()),
  };
  if (json) console.log(JSON.stringify(out));
  else {
    console.log(
      `${runtime}: sae features, d_sae ${F}, ${tokens} tokens in ${
        s.toFixed(1)
      } s (${out.tokens_per_s} tokens/s); peak RSS ${out.peak_rss_mib} MiB (${out.peak_rss_before_mib} MiB before the command: runtime and modules)`,
    );
  }
}

const child = argv.indexOf("--rss-child");
await (child >= 0 ? rssChild(argv[child + 1]) : argv.includes("--rss") ? rss() : throughput());
