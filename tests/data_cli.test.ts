// `sae convert`, `sae inspect` and `sae train --data` over every activation format, run in-process
// through main(argv) with console output captured; formats.ts detection and its errors.
import process from "node:process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as t from "../mod.ts";
import { readManifest, storeStream, writeStore } from "../data/arrow_store.ts";
import { activationData, detectActivations, openActivations } from "../data/formats.ts";
import { loadSae } from "../sae/io/saelens.ts";
import { main } from "../cli.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

const readAll = (dir: string) => {
  const xs: number[] = [];
  const s = storeStream(dir);
  for (let it = s.open(), r = it.next(); !r.done; r = it.next()) xs.push(...r.value.x);
  return xs;
};
const fx = (p: string) => fileURLToPath(new URL(`./fixtures/data/${p}`, import.meta.url));

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const [log, error, write] = [console.log, console.error, process.stderr.write];
  console.log = (...a: unknown[]) => void out.push(a.map(String).join(" "));
  console.error = (...a: unknown[]) => void err.push(a.map(String).join(" "));
  try {
    return { code: await main(argv), out: out.join("\n"), err: err.join("\n") };
  } finally {
    [console.log, console.error, process.stderr.write] = [log, error, write];
  }
}

test("formats: detection of every activation format, and clear errors for the rest", async () => {
  assertEquals(detectActivations(fx("saelens_cache")), "saelens-cache");
  assertEquals(detectActivations(fx("saelens_cache/data-00000-of-00002.arrow")), "arrow");
  assertEquals(detectActivations(fx("dl_cache/resid_out")), "dictionary_learning-cache");
  assertEquals(detectActivations(fx("dl_topk")), null);
  let msg = "";
  await openActivations(fx("dl_topk")).catch((e) => (msg = e.message));
  assert(msg.includes("not activation data we recognise"), msg);
  await openActivations(fx("nope")).catch((e) => (msg = e.message));
  assert(msg.includes("no such file or folder"), msg);
  await openActivations(`${fx("dl_cache/resid_out")},${fx("saelens_cache")}`).catch((
    e,
  ) => (msg = e.message));
  assert(msg.includes("only dictionary_learning caches can be joined"), msg);
  await activationData(fx("saelens_cache"), { targets: "y.npy" }).catch((e) => (msg = e.message));
  assert(msg.includes("--targets needs inputs in an .npy or .safetensors file"), msg);
});

test("sae convert: SAELens cache → bf16 store with token ids; store → .npy; .npy → store; dictionaries → SAELens folders", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sc-cli-"));
  try {
    const store = join(dir, "store");
    let r = await run(
      "convert",
      fx("saelens_cache"),
      store,
      "--dtype",
      "bf16",
      "--token-ids",
      "--hook-point",
      "blocks.0.hook_resid_pre",
      "--rows-per-shard",
      "10",
    );
    assertEquals(r.code, 0, r.err);
    assert(r.out.includes("28 rows of [3] bf16 in 3 shards"), r.out);
    const m = readManifest(store);
    assertEquals([m.columns, m.hook_point], [
      ["activation", "token_id"],
      "blocks.0.hook_resid_pre",
    ]);
    const ids: number[] = [];
    const s = storeStream(store, { tokenIds: true });
    for (let it = s.open(), c = it.next(); !c.done; c = it.next()) ids.push(...c.value.tokenIds!);
    assertEquals(ids, Array.from({ length: 28 }, (_, i) => 1000 + i));
    // store → npy → store round trip keeps the (bf16-exact) values.
    const npy = join(dir, "acts.npy");
    r = await run("convert", store, npy);
    assertEquals(r.code, 0, r.err);
    const x = await t.loadNpy(npy);
    assertEquals(x.shape, [28, 3]);
    assertClose(await x.data(), Array.from({ length: 84 }, (_, i) => i / 4 - 3), {
      rtol: 4e-3,
      atol: 1e-2,
    });
    r = await run("convert", npy, join(dir, "store2"));
    assertEquals(r.code, 0, r.err);
    assertEquals(readManifest(join(dir, "store2")).dtype, "f32");
    x.dispose();
    // A dictionary_learning ae.pt becomes a SAELens folder our loader reads.
    r = await run("convert", fx("dl_batchtopk/ae.pt"), join(dir, "dict"));
    assertEquals(r.code, 0, r.err);
    const saved = await loadSae(join(dir, "dict"));
    assertEquals([saved.cfg.arch, saved.cfg.d_sae], ["batchtopk", 10]);
    assertClose([saved.threshold as number], [0.15], { rtol: 1e-6 });
    t.dispose(saved.params);
    r = await run("convert", store);
    assertEquals(r.code, 2);
    assert(r.err.includes("expected IN and OUT"), r.err);
    r = await run("convert", fx("saelens_cache"), join(dir, "x"), "--dtype", "f64");
    assertEquals([r.code, r.err.includes("--dtype must be f32, f16 or bf16")], [2, true]);
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("sae inspect: activations (statistics, checksums) and dictionaries, text and --json", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sc-cli-"));
  try {
    const x = Float32Array.from({ length: 100 * 4 }, (_, i) => (i % 4) + (i % 7) * 0.1);
    await writeStore(join(dir, "s"), x, { rowShape: [4], model: "m", rowsPerShard: 40 });
    let r = await run("inspect", join(dir, "s"), "--verify", "--json");
    assertEquals(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assertEquals([j.format, j.rows, j.row_shape, j.shards, j.model], [
      "arrow-store",
      100,
      [4],
      3,
      "m",
    ]);
    assert(j.checksums.includes("3 shards verified"), j.checksums);
    assertClose([j.statistics.mean_of_means], [1.5 + 0.3], { rtol: 0.01 });
    let sq = 0;
    for (const v of x) sq += v * v;
    assertClose([j.statistics.mean_squared_norm], [sq / 100], { rtol: 1e-9 });
    r = await run("inspect", `${fx("dl_cache/resid_out")},${fx("dl_cache/mlp_out")}`, "--json");
    assertEquals(JSON.parse(r.out).row_shape, [2, 5]);
    r = await run("inspect", fx("dl_gated"));
    assertEquals(r.code, 0, r.err);
    assert(
      /architecture\s+gated/.test(r.out) && r.out.includes("b_gate") &&
        r.out.includes("[6, 10] f32"),
      r.out,
    );
    r = await run("inspect", fx("sparsify/layers.0"), "--json");
    assertEquals([JSON.parse(r.out).format, JSON.parse(r.out).k], ["sparsify", 3]);
    r = await run("inspect", join(dir, "nothing"));
    assertEquals(r.code, 1);
    assert(r.err.includes("no such file or folder"), r.err);
    r = await run("inspect", "--help");
    assertEquals(r.code, 0);
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("sae train --data: an Arrow store (streamed through the shuffle buffer) and lockstep caches for MLSAE", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sc-cli-"));
  try {
    const x = t.random.normal(t.random.key(3), [600, 8]);
    await writeStore(join(dir, "s"), x, { rowShape: [8], dtype: "bf16", rowsPerShard: 256 });
    x.dispose();
    let r = await run(
      "train",
      "--data",
      join(dir, "s"),
      "--steps",
      "6",
      "--batch",
      "32",
      "--d-sae",
      "16",
      "--k",
      "4",
      "--out",
      join(dir, "run"),
      "--quiet",
    );
    assertEquals(r.code, 0, r.err);
    const saved = await loadSae(join(dir, "run"));
    assertEquals([saved.cfg.d_in, saved.cfg.d_sae], [8, 16]);
    t.dispose(saved.params);
    r = await run(
      "eval",
      join(dir, "run"),
      "--data",
      join(dir, "s"),
      "--json",
      "--batches",
      "2",
      "--batch",
      "100",
    );
    assertEquals(r.code, 0, r.err);
    assertEquals(JSON.parse(r.out).tokens, 200);
    // bf16 words in an .npy (NumPy has no bf16) with the #bf16 suffix.
    const words = t.cast(t.random.normal(t.random.key(4), [64, 8]), "bf16");
    const npy = join(dir, "w.npy");
    await t.saveNpy(npy, words);
    r = await run("convert", `${npy}#bf16`, join(dir, "w"), "--dtype", "bf16");
    assertEquals(r.code, 0, r.err);
    assertEquals(Array.from(await words.data()), readAll(join(dir, "w")));
    words.dispose();
    r = await run("convert", npy, join(dir, "w2"));
    assertEquals(r.code, 1);
    assert(r.err.includes("must be floating point, got i32"), r.err);
    r = await run(
      "train",
      "--arch",
      "mlsae",
      "--data",
      `${fx("dl_cache/resid_out")},${fx("dl_cache/mlp_out")}`,
      "--steps",
      "3",
      "--batch",
      "4",
      "--d-sae",
      "8",
      "--k",
      "2",
      "--out",
      join(dir, "ml"),
      "--quiet",
    );
    assertEquals(r.code, 0, r.err);
    r = await run("train", "--data", join(dir, "missing"), "--quiet");
    assertEquals(r.code, 2);
    assert(r.err.includes("--data:") && r.err.includes("no such file or folder"), r.err);
  } finally {
    await rm(dir, { recursive: true });
  }
});
