// From text to activations: a tokenizer.json, a corpus, rows packed as SAELens packs them, and a
// harvest of a model's activations into an Arrow store that a killed run resumes.
// Run: deno run -A examples/text.ts
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lm, storeStream, text } from "../data/mod.ts";
const fixtures = "tests/golden/fixtures/"; // a tiny model, a 64-id byte tokenizer, a small corpus

const tokenizer = await text.loadTokenizer(fixtures + "text"); // a folder or a Hugging Face repo id
const ids = tokenizer.encode("The ferry stayed on the far bank.");
console.log([...ids], JSON.stringify(tokenizer.decode(ids)));

// .txt (a file or folder), .jsonl(.zst), Parquet (a file or a datasets folder), or .npy ids.
const corpus = await text.openCorpus(fixtures + "text/corpus.jsonl", { field: "text" });
const rows = text.tokenRows(corpus, tokenizer, { context: 16, mode: "pack" });

const out = await mkdtemp(join(tmpdir(), "harvest-"));
const model = await lm.loadModel(fixtures + "lm/gpt2");
const r = await lm.harvestToStore({
  model,
  modelName: "tiny-gpt2",
  hooks: ["blocks.1.hook_resid_post"],
  rows,
  tokens: 200,
  out,
  dtype: "bf16",
  excludeIds: tokenizer.specialIds,
});
// One row per kept token, with token_id, sequence_id and position beside the activation.
const m = storeStream(out, { tokenIds: true }).manifest;
console.log(`${m.rows} rows [${m.row_shape}] ${m.dtype}: ${m.columns.join(", ")}`);
console.log(`started at token row ${r.startRow}; run again after a kill and it continues`);
await rm(out, { recursive: true, force: true });
