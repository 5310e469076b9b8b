/**
 * BPE training speed and the compression it buys, on a fixed sample of real text from this machine:
 *   English: the Brown corpus (tags stripped, ~500 documents) and nlp-corpus's 100 documents;
 *   German: the fortunes under /usr/share/games/fortunes/de (one document per file);
 *   code: the Python standard library's .py files (/usr/lib/python3.11) and hono's dist .js files.
 * Every 10th document of each part is held out. The rest is counted once (the regex split), then
 * trained for each vocabulary size (merges only; the count is shared). Compression is UTF-8 bytes
 * per token of the held-out text, encoded by the written tokenizer.json through loadTokenizer's
 * path (tokenizerFromJson), per domain; vocabulary 256 is bytes alone (one token per byte), and
 * GPT-2's 50257 (trained on WebText) is the reference. Last, the merge step's worst case: 10 MB of
 * Japanese-like text (kana and kanji morphemes, Zipf-distributed, no spaces), so nearly every
 * sentence is one long distinct word that many merges must rewrite.
 *   deno run -A --v8-flags=--no-maglev bench/text_bpe_train.ts [--sizes 1024,4096] [--json]
 *   bun bench/text_bpe_train.ts
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { bpeTokenizerJson } from "../data/text/bpe_json.ts";
import { trainBpe, trainBpeCounts } from "../data/text/bpe_train.ts";
import { countDocuments } from "../data/text/bpe_words.ts";
import { loadTokenizer, type Tokenizer, tokenizerFromJson } from "../data/text/tokenizer.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";
import { brownLines, writeGpt2Tokenizer } from "../tests/text_fixtures.ts";

const argv = args();
const json = argv.includes("--json");
const at = argv.indexOf("--sizes");
const sizes = at >= 0 ? argv[at + 1].split(",").map(Number) : [256, 1024, 4096, 8192];
const out: Record<string, unknown>[] = [];
const report = (r: Record<string, unknown>) => {
  out.push(r);
  if (!json) console.log(Object.entries(r).map(([k, v]) => `${k}=${v}`).join("  "));
};
const modules = fileURLToPath(new URL("../node_modules/", import.meta.url));

/** Files under `dir` whose names end in `ext`, recursively, in code-unit order. */
function files(dir: string, ext: string): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      const st = statSync(p, { throwIfNoEntry: false });
      if (st?.isDirectory()) walk(p);
      else if (st?.isFile() && e.endsWith(ext)) found.push(p);
    }
  };
  try {
    walk(dir);
  } catch {
    console.error(`(skipped ${dir}: not readable)`);
  }
  return found;
}
const read = (f: string) => readFileSync(f, "utf8");

function english(): string[] {
  const lines = brownLines(Infinity), per = Math.ceil(lines.length / 500), docs: string[] = [];
  for (let i = 0; i < lines.length; i += per) docs.push(lines.slice(i, i + per).join("\n"));
  for (const f of files(modules + "nlp-corpus/builds", ".json")) {
    docs.push((JSON.parse(read(f)) as string[]).join("\n"));
  }
  return docs;
}
const domains: Record<string, string[]> = {
  english: english(),
  german: files("/usr/share/games/fortunes/de", ".u8").map(read),
  code: [
    ...files("/usr/lib/python3.11", ".py").map(read),
    ...files(modules + "hono/dist", ".js").map(read),
  ],
};
const enc = new TextEncoder();
const bytesOf = (docs: string[]) => docs.reduce((s, d) => s + enc.encode(d).length, 0);
const train: string[] = [], held: Record<string, string[]> = {};
for (const [name, docs] of Object.entries(domains)) {
  held[name] = docs.filter((_, i) => i % 10 === 9);
  train.push(...docs.filter((_, i) => i % 10 !== 9));
  report({ domain: name, documents: docs.length, MB: +(bytesOf(docs) / 1e6).toFixed(1) });
}
const trainMB = bytesOf(train) / 1e6;

let t = performance.now();
const counts = await countDocuments(train);
const countS = (performance.now() - t) / 1000;
report({
  runtime,
  step: "count words",
  MB: +trainMB.toFixed(1),
  documents: train.length,
  distinct_words: counts.counts.size,
  seconds: +countS.toFixed(1),
  MB_per_s: +(trainMB / countS).toFixed(1),
});

const compression = (tok: Tokenizer) => {
  const r: Record<string, number> = {};
  let bytes = 0, tokens = 0;
  for (const [name, docs] of Object.entries(held)) {
    let b = 0, n = 0;
    for (const d of docs) b += enc.encode(d).length, n += tok.encode(d).length;
    r[name] = +(b / n).toFixed(2);
    bytes += b, tokens += n;
  }
  return { ...r, all: +(bytes / tokens).toFixed(2), held_out_tokens: tokens };
};

for (const size of sizes) {
  t = performance.now();
  const result = trainBpeCounts(counts.counts, { vocabSize: Math.max(size, 257) });
  const mergeS = (performance.now() - t) / 1000;
  const tok = tokenizerFromJson(bpeTokenizerJson(result));
  report({
    runtime,
    vocab: size,
    merges: result.merges.length,
    merge_seconds: +mergeS.toFixed(1),
    total_seconds: +(countS + mergeS).toFixed(1),
    MB_per_s: +(trainMB / (countS + mergeS)).toFixed(2),
    train_bytes_per_token: +(result.bytes / result.tokens).toFixed(2),
    rss_MB: Math.round(process.memoryUsage().rss / 1e6),
  });
  report({ vocab: size, held_out_bytes_per_token: JSON.stringify(compression(tok)) });
}

/** A fixed pseudo-random stream (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function japaneseLike(mb: number): string[] {
  const rnd = random(1);
  const kana = (i: number) => String.fromCharCode(0x3041 + i);
  const kanji = (i: number) => String.fromCharCode(0x4e00 + 7 * i);
  const morphemes = Array.from({ length: 5000 }, () => {
    let s = "";
    for (let n = 1 + Math.floor(rnd() * 3); n > 0; n--) {
      s += rnd() < 0.5 ? kana(Math.floor(rnd() ** 2 * 83)) : kanji(Math.floor(rnd() ** 3 * 2000));
    }
    return s;
  });
  const docs: string[] = [];
  for (let bytes = 0; bytes < mb * 1e6;) {
    let d = "";
    for (let s = 0; s < 30; s++) {
      for (let n = 5 + Math.floor(rnd() * 30); n > 0; n--) {
        d += morphemes[Math.floor(5000 ** rnd()) - 1];
      }
      d += rnd() < 0.3 ? "、" : "。";
    }
    docs.push(d);
    bytes += enc.encode(d).length;
  }
  return docs;
}
{
  const docs = japaneseLike(10);
  t = performance.now();
  const r = await trainBpe(docs, { vocabSize: 4096 });
  const s = (performance.now() - t) / 1000;
  report({
    runtime,
    step: "worst case: Japanese-like, 4096 ids",
    MB: +(r.bytes / 1e6).toFixed(1),
    distinct_words: r.words,
    seconds: +s.toFixed(1),
    train_bytes_per_token: +(r.bytes / r.tokens).toFixed(2),
  });
}

const dir = mkdtempSync(join(tmpdir(), "bench-bpe-"));
try {
  await writeGpt2Tokenizer(dir);
  report({
    vocab: "gpt2 50257",
    held_out_bytes_per_token: JSON.stringify(compression(await loadTokenizer(dir))),
  });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
if (json) console.log(JSON.stringify(out));
