// Loading model folders (data/lm/load.ts): weights kept in their 16-bit dtype compute exactly as
// widened ones, and broken files (truncated data, a cut header, a shard the index names but the
// folder lacks) are errors naming the file, the tensor, what was expected and what was found.
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cast } from "../tensor/ops/elementwise.ts";
import { isFloat } from "../tensor/dtype.ts";
import { parseSafetensorsHeader } from "../data/safetensors.ts";
import { hookNames, loadModel, modelInfo, runWithCache } from "../data/lm/model.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { checkAgainstReference, expectError, root, withBrokenCopy } from "./lm_fixtures.ts";

test("lm load: llama_bf16 with dtype keep holds bf16 weights and matches its reference", async () => {
  const model = await loadModel(root + "llama_bf16", { dtype: "keep" });
  assertEquals(modelInfo(model).dtypes, ["bf16"]);
  await checkAgainstReference(
    "llama_bf16",
    (t) => runWithCache(model, t) as ReturnType<typeof runWithCache> & { logits: never },
    hookNames(model),
  );
  assertEquals(modelInfo(await loadModel(root + "llama_bf16", { dtype: "f32" })).dtypes, ["f32"]);
  await expectError(
    () => loadModel(root + "llama_bf16", { dtype: "f16" as "f32" }),
    ['dtype must be "f32" or "keep"', '"f16"'],
  );
});

for (const fixture of ["gpt2", "gpt_neox", "llama", "qwen2", "gemma2"]) {
  test(`lm load: ${fixture} in bf16 computes the same kept (bf16) as widened (f32)`, async () => {
    await withBrokenCopy(fixture, (w) => {
      for (const [k, t] of Object.entries(w)) if (isFloat(t.dtype)) w[k] = cast(t, "bf16");
    }, async (dir) => {
      const kept = await loadModel(dir, { dtype: "keep" });
      const wide = await loadModel(dir, { dtype: "f32" });
      assertEquals(modelInfo(kept).dtypes, ["bf16"]);
      assertEquals(modelInfo(wide).dtypes, ["f32"]);
      const tokens = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]];
      const a = runWithCache(kept, tokens), b = runWithCache(wide, tokens);
      for (const name of ["logits", ...hookNames(kept)]) {
        const x = name === "logits" ? a.logits! : a.cache[name];
        const y = name === "logits" ? b.logits! : b.cache[name];
        assertEquals(x.dtype, "f32", `${name} dtype`);
        // Exactly equal: a kept weight is widened (exactly) right where it is used.
        assertEquals(Array.from(x.dataSync()), Array.from(y.dataSync()), name);
      }
    });
  });
}

/** A copy of fixture `name`'s folder in a temp dir, changed by `edit`, then `check`ed. */
async function withCopy(
  name: string,
  files: string[],
  edit: (dir: string) => Promise<void>,
  check: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `lm-load-${name}-`));
  try {
    for (const f of files) await copyFile(join(root, name, f), join(dir, f));
    await edit(dir);
    await check(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("lm load: a truncated file names the file, the first tensor cut off, expected and found", async () => {
  const bytes = new Uint8Array(await readFile(join(root, "gpt2", "model.safetensors")));
  const cut = bytes.byteLength - 100;
  // The first tensor in header order whose data ends past the cut.
  const { tensors } = parseSafetensorsHeader(bytes, bytes.byteLength);
  const [victim, entry] = [...tensors].find(([, e]) => e.end > cut)!;
  await withCopy("gpt2", ["config.json"], async (dir) => {
    await writeFile(join(dir, "model.safetensors"), bytes.subarray(0, cut));
  }, async (dir) => {
    await expectError(() => loadModel(dir), [
      join(dir, "model.safetensors"),
      `tensor ${JSON.stringify(victim)}`,
      "truncated",
      `expected at least ${entry.end} bytes, found ${cut}`,
    ]);
  });
  // Cut inside the header: its length points past the end of the file.
  await withCopy("gpt2", ["config.json"], async (dir) => {
    await writeFile(join(dir, "model.safetensors"), bytes.subarray(0, 40));
  }, async (dir) => {
    await expectError(() => loadModel(dir), [
      join(dir, "model.safetensors"),
      "header length",
      "points past the end of the file (32 bytes follow it)",
      "truncated",
    ]);
  });
});

test("lm load: a header whose JSON is cut names the file and the header's bytes", async () => {
  const bytes = new Uint8Array(await readFile(join(root, "gpt2", "model.safetensors")));
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const half = Math.floor(n / 2);
  const broken = new Uint8Array(8 + half + (bytes.byteLength - 8 - n));
  new DataView(broken.buffer).setBigUint64(0, BigInt(half), true);
  broken.set(bytes.subarray(8, 8 + half), 8);
  broken.set(bytes.subarray(8 + n), 8 + half);
  await withCopy("gpt2", ["config.json"], async (dir) => {
    await writeFile(join(dir, "model.safetensors"), broken);
  }, async (dir) => {
    await expectError(() => loadModel(dir), [
      join(dir, "model.safetensors"),
      `header (bytes 8..${8 + half}) is not valid JSON`,
    ]);
  });
});

test("lm load: a shard the index names but the folder lacks is an error naming both", async () => {
  const files = [
    "config.json",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
  ];
  const index = JSON.parse(
    await readFile(join(root, "gpt2_sharded", "model.safetensors.index.json"), "utf8"),
  ) as { weight_map: Record<string, string> };
  const held = Object.entries(index.weight_map).filter(([, f]) =>
    f === "model-00002-of-00002.safetensors"
  );
  assert(held.length > 0, "the fixture's second shard holds tensors");
  await withCopy("gpt2_sharded", files, () => Promise.resolve(), async (dir) => {
    await expectError(() => loadModel(dir), [
      join(dir, "model.safetensors.index.json"),
      'shard "model-00002-of-00002.safetensors"',
      `named for ${held.length} tensors, e.g. ${JSON.stringify(held[0][0])}`,
      `expected ${join(dir, "model-00002-of-00002.safetensors")}, found no such file`,
    ]);
  });
});
