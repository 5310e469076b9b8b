/**
 * Document labels through the text pipeline: a JSON-lines field read as each document's label,
 * and token rows that say, per position, which document's label holds there — packed rows (a
 * document running on into the next row, separators counted with the document they precede) and
 * one-document rows — equal to a stream built by hand from each document's own tokens.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { openCorpus } from "../data/text/corpus.ts";
import { loadTokenizer } from "../data/text/tokenizer.ts";
import { type TokenRow, tokenRows } from "../data/text/token_rows.ts";

const TEXT = "tests/golden/fixtures/text";
const DOCS = [
  ["The river rose overnight and the ferry stayed on the far bank.", "en"],
  ["Der Zug fährt um neun Uhr.", "de"],
  ["def mean(xs):\n    return sum(xs) / len(xs)", "code"],
  ["Tokenizers turn text into ids.", "en"],
  ["Ja.", "de"],
];

/** Position p of row r's label, from the row's segments. */
const labelAt = (row: TokenRow, p: number) => row.segments!.filter((s) => s.at <= p).at(-1)!.label;

test("token rows: per-position document labels, packed and truncated", async () => {
  await withTempDir("labels-", async (dir) => {
    const path = join(dir, "c.jsonl");
    await writeFile(
      path,
      DOCS.map(([text, domain]) => JSON.stringify({ text, domain })).join("\n"),
    );
    const tok = await loadTokenizer(TEXT);
    const corpus = await openCorpus(path, { labelField: "domain" });
    // Pack (GPT-2's way: no BOS, EOS between documents, none at a row's start): the stream by
    // hand, then cut into rows.
    const T = 7, ids: number[] = [], labels: string[] = [];
    DOCS.forEach(([text, domain], i) => {
      const own = [...(i > 0 && ids.length % T ? [tok.eosId!] : []), ...tok.encode(text)];
      ids.push(...own);
      labels.push(...own.map(() => domain));
    });
    const packed: TokenRow[] = [];
    for await (const r of tokenRows(corpus, tok, { context: T }).rows()) packed.push(r);
    assertEquals(packed.length, Math.floor(ids.length / T));
    for (const r of packed) {
      for (let p = 0; p < T; p++) {
        assertEquals(r.ids[p], ids[r.index * T + p]);
        assertEquals(labelAt(r, p), labels[r.index * T + p], `row ${r.index} position ${p}`);
      }
    }
    const rows: TokenRow[] = [];
    for await (const r of tokenRows(corpus, tok, { context: T, mode: "truncate" }).rows()) {
      rows.push(r);
    }
    assertEquals(rows.map((r) => r.segments), DOCS.map(([, label]) => [{ at: 0, label }]));
    // Unlabelled corpora carry no segments.
    for await (const r of tokenRows(await openCorpus(path), tok, { context: T }).rows()) {
      assertEquals(r.segments, undefined);
    }
  });
});

test("corpus label field: a missing label names the line; other formats refuse it", async () => {
  await withTempDir("labels-bad-", async (dir) => {
    const path = join(dir, "c.jsonl");
    await writeFile(path, `{"text": "a", "domain": "en"}\n{"text": "b"}\n`);
    let err = "";
    try {
      for await (const _ of (await openCorpus(path, { labelField: "domain" })).documents()) {
        // read through
      }
    } catch (e) {
      err = (e as Error).message;
    }
    assert(err.includes("line 2") && err.includes(`label field "domain" is missing`), err);
    const txt = join(dir, "c.txt");
    await writeFile(txt, "plain text\n");
    err = "";
    await openCorpus(txt, { labelField: "domain" }).catch((e) => (err = (e as Error).message));
    assert(err.includes("read from JSON lines only"), err);
  });
});
