// Text all the way to activations: a JSON-lines corpus tokenised by the model folder's own
// tokenizer.json, packed into rows, harvested by `sae harvest` (rows = runWithCache on exactly the
// token rows openTextRows gives, special tokens left out), and a folder of .txt files read by a live
// training run; the run names its model and hook as SAELens does.
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tensor } from "../tensor/ops/create.ts";
import { storeStream } from "../data/arrow_store.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { openTextRows } from "../data/text/open_rows.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { root } from "./lm_fixtures.ts";
import { brownLines, writeByteTokenizer } from "./text_fixtures.ts";

const HOOK = "blocks.1.hook_resid_post";

/** The tiny GPT-2 fixture with a byte-level tokenizer.json of its 64 ids, in a temp folder. */
async function modelWithTokenizer(dir: string): Promise<string> {
  const m = join(dir, "model");
  await cp(root + "gpt2", m, { recursive: true });
  await writeByteTokenizer(m, { vocabSize: 64 });
  return m;
}

test("sae harvest --data corpus.jsonl: the model's tokenizer, packed rows, specials left out", async () => {
  const dir = await mkdtemp(join(tmpdir(), "text-pipe-"));
  try {
    const model = await modelWithTokenizer(dir);
    const lines = brownLines(12);
    const docs = [lines.slice(0, 3), [], lines.slice(3, 7), lines.slice(7)].map((d) => d.join(" "));
    const data = join(dir, "corpus.jsonl");
    await writeFile(data, docs.map((text) => JSON.stringify({ text })).join("\n") + "\n");
    const out = join(dir, "store");
    const r = await runCli(
      "harvest",
      ...["--model", model, "--hooks", HOOK, "--data", data, "--context", "16"],
      ...["--tokens", "300", "--batch", "4", "--out", out, "--exclude-special"],
    );
    assertEquals(r.code, 0, r.err);

    // What the harvest should have read: the same rows, through the public text API.
    const { rows, special, tokenizer } = await openTextRows(data, model, { context: 16 });
    assert(tokenizer !== null && special.has(0), "the folder's tokenizer, <|endoftext|> special");
    const all: Int32Array[] = [];
    for await (const row of rows.rows()) all.push(row.ids);
    assert(all.length >= 20, `${all.length} rows`);
    assert(all.some((ids) => ids.includes(0)), "documents are separated by <|endoftext|>");
    const m = await loadModel(model);
    const want: { x: Float32Array; tok: number; seq: number; pos: number }[] = [];
    for (let i = 0; i < all.length && want.length < 300; i += 4) {
      const group = all.slice(i, i + 4), ids = new Int32Array(group.length * 16);
      group.forEach((g, j) => ids.set(g, j * 16));
      const { cache } = runWithCache(m, tensor(ids, { shape: [group.length, 16] }), [HOOK], {
        stopEarly: true,
      });
      const v = cache[HOOK].dataSync() as Float32Array, d = v.length / ids.length;
      for (let k = 0; k < ids.length && want.length < 300; k++) {
        if (special.has(ids[k])) continue;
        want.push({ x: v.slice(k * d, (k + 1) * d), tok: ids[k], seq: i + (k >> 4), pos: k % 16 });
      }
    }
    const s = storeStream(out, { tokenIds: true, sequenceIds: true, positions: true });
    assertEquals(s.manifest.rows, 300);
    let n = 0;
    for (let it = s.open(), c = it.next(); !c.done; c = it.next()) {
      const { x, rows: k, tokenIds, sequenceIds, positions } = c.value;
      for (let j = 0; j < k; j++, n++) {
        const w = want[n], d = w.x.length;
        assertEquals(
          [tokenIds![j], sequenceIds![j], positions![j]],
          [w.tok, w.seq, w.pos],
          `row ${n}`,
        );
        for (let e = 0; e < d; e++) {
          if (!Object.is(x[j * d + e], w.x[e])) throw new Error(`row ${n}[${e}] differs`);
        }
      }
    }
    assertEquals(n, 300);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("sae train --model --hook --data FOLDER: text files read live; cfg.json names model and hook", async () => {
  const dir = await mkdtemp(join(tmpdir(), "text-live-"));
  try {
    const model = await modelWithTokenizer(dir);
    const texts = join(dir, "texts");
    await mkdir(texts);
    const lines = brownLines(40);
    for (let f = 0; f < 4; f++) {
      // Blank lines end documents (the plain-text default).
      const body = lines.slice(f * 10, f * 10 + 10).join("\n").replace(/\n(?=.*\n.*$)/, "\n\n");
      await writeFile(join(texts, `part-${f}.txt`), body + "\n");
    }
    const out = join(dir, "run");
    const r = await runCli(
      "train",
      ...["--model", model, "--hook", HOOK, "--data", texts, "--context", "16"],
      ...["--steps", "6", "--batch", "32", "--d-sae", "64", "--k", "4", "--out", out, "--quiet"],
    );
    assertEquals(r.code, 0, r.err);
    const cfg = JSON.parse(await readFile(join(out, "cfg.json"), "utf8"));
    assertEquals([cfg.model_name, cfg.hook_name, cfg.context_size], [model, HOOK, 16]);
    const data = JSON.parse(await readFile(join(out, "data.json"), "utf8"));
    assert(JSON.stringify(data).includes(texts), JSON.stringify(data));
    // Text with a model folder that has no tokenizer.json is refused, naming what is missing.
    const bare = join(dir, "bare");
    await cp(root + "gpt2", bare, { recursive: true });
    const e = await runCli(
      "train",
      ...[
        "--model",
        bare,
        "--hook",
        HOOK,
        "--data",
        texts,
        "--steps",
        "2",
        "--out",
        join(dir, "x"),
      ],
    );
    assert(e.code === 2 && e.err.includes("no tokenizer.json"), e.err);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
