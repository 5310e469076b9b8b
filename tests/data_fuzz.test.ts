// Property-based fuzzing (fast-check) of every activation and dictionary parser with mutated valid
// files: each must either read the file or throw its own error type with a message naming the
// file — never another exception (a crash), never a hang, never a wrong tensor where a checksum
// can tell.
import fc from "fast-check";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ArrowStoreError, storeStream, writeStore } from "../data/arrow_store.ts";
import { ArrowIpcError } from "../data/arrow_ipc.ts";
import { DictionaryFormatError, loadDictionary } from "../sae/io/dictionary_formats.ts";
import { MemmapCacheError, memmapCacheStream } from "../data/memmap_cache.ts";
import { PickleError, unpickle } from "../data/pickle.ts";
import type { RowStream } from "../data/row_stream.ts";
import { SafetensorsError } from "../data/safetensors.ts";
import { SaelensCacheError, saelensCacheStream } from "../data/saelens_cache.ts";
import { parseTorch, stateDictOf, TorchFileError } from "../data/torch_pt.ts";
import { crc32, readZip, zipData, type ZipEntry } from "../data/zip.ts";
import { assert, assertEquals, test } from "./harness.ts";

const fx = (p: string) => fileURLToPath(new URL(`./fixtures/data/${p}`, import.meta.url));

/** A mutation of `b`: a few bytes overwritten, or the file truncated. */
const mutation = (len: number) =>
  fc.oneof(
    fc.record({
      kind: fc.constant("set" as const),
      edits: fc.array(fc.tuple(fc.nat({ max: len - 1 }), fc.nat({ max: 255 })), {
        minLength: 1,
        maxLength: 4,
      }),
    }),
    fc.record({ kind: fc.constant("cut" as const), at: fc.nat({ max: len - 1 }) }),
  );
type Mutation = { kind: "set"; edits: [number, number][] } | { kind: "cut"; at: number };
function apply(b: Uint8Array, m: Mutation): Uint8Array {
  if (m.kind === "cut") return b.slice(0, m.at);
  const out = b.slice();
  for (const [i, v] of m.edits) out[i] = v;
  return out;
}
const same = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * A JSON config with one field set to any JSON value (or to a small integer, where the edge cases
 * are), one field removed, or the whole text replaced by another JSON value: mutations that stay
 * valid JSON, which byte edits rarely do.
 */
const jsonEdit = (keys: string[]) =>
  fc.oneof(
    fc.record({
      key: fc.constantFrom(...keys),
      value: fc.oneof(fc.jsonValue(), fc.integer({ min: -2, max: 20 }), fc.constant(undefined)),
    }),
    fc.record({ whole: fc.jsonValue() }),
  );
type JsonEdit = { key: string; value: unknown } | { whole: unknown };
function applyJson(good: Record<string, unknown>, e: JsonEdit): Uint8Array {
  const v = "whole" in e ? e.whole : { ...good, [e.key]: e.value }; // undefined drops the key
  return new TextEncoder().encode(JSON.stringify(v) ?? "");
}

function drain(s: RowStream): number[] {
  const xs: number[] = [];
  for (let it = s.open(), r = it.next(); !r.done; r = it.next()) {
    xs.push(...r.value.x.subarray(0, r.value.rows * s.rowShape.reduce((a, b) => a * b, 1)));
  }
  return xs;
}

/** Run fn in a fresh temporary folder (holding a copy of a fixture folder, if named), removed afterwards. */
async function inTmp(fn: (dir: string) => Promise<void>, fixture?: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "sc-fuzz-"));
  try {
    if (fixture) await cp(fx(fixture), dir, { recursive: true });
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true });
  }
}

/** Run fn; it must succeed or throw one of `types` mentioning `name`. Returns the result or null. */
function ours<T>(fn: () => T, types: (new (...a: never[]) => Error)[], name: string): T | null {
  try {
    return fn();
  } catch (e) {
    assert(
      types.some((t) => e instanceof t),
      `expected ${types.map((t) => t.name).join("/")}, got ${(e as Error).name}: ${
        (e as Error).message
      }`,
    );
    assert(
      (e as Error).message.includes(name),
      `message ${JSON.stringify((e as Error).message)} does not name ${name}`,
    );
    return null;
  }
}

test("fuzz: a mutated Arrow store shard is always an ArrowStoreError, never different data", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sc-fuzz-"));
  try {
    const x = Float32Array.from({ length: 40 * 6 }, (_, i) => Math.sin(i));
    const m = await writeStore(dir, x, { rowShape: [6], rowsPerBatch: 16, dtype: "bf16" });
    const path = join(dir, m.shards[0].file);
    const good = new Uint8Array(await readFile(path));
    const want = drain(storeStream(dir));
    await fc.assert(
      fc.asyncProperty(mutation(good.length), async (mu) => {
        const bad = apply(good, mu);
        await writeFile(path, bad);
        const got = ours(() => drain(storeStream(dir)), [ArrowStoreError], path);
        if (got) {
          assert(
            same(bad, good) && got.every((v, i) => Object.is(v, want[i])),
            "only an unchanged file reads back",
          );
        }
        // Without checksums the framing and schema checks still hold: our error or a read.
        ours(() => drain(storeStream(dir, { verify: false })), [ArrowStoreError], path);
      }),
      { numRuns: 150 },
    );
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("fuzz: mutated SAELens cache files give a SaelensCacheError or a read, never a crash", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sc-fuzz-"));
  try {
    await cp(fx("saelens_cache"), dir, { recursive: true });
    const path = join(dir, "data-00000-of-00002.arrow");
    const good = new Uint8Array(await readFile(path));
    await fc.assert(
      fc.asyncProperty(mutation(good.length), async (mu) => {
        await writeFile(path, apply(good, mu));
        const got = ours(
          () => drain(saelensCacheStream(dir)),
          [SaelensCacheError, ArrowIpcError],
          dir,
        );
        if (got) assert(got.length % 3 === 0, "whole rows of d = 3");
      }),
      { numRuns: 150 },
    );
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("fuzz: mutated torch.save archives give a TorchFileError or a state dict", async () => {
  const good = new Uint8Array(await readFile(fx("dl_topk/ae.pt")));
  fc.assert(
    fc.property(mutation(good.length), (mu) => {
      ours(() => parseTorch(apply(good, mu), "ae.pt"), [TorchFileError], "ae.pt");
    }),
    { numRuns: 300 },
  );
});

test("fuzz: the pickle machine on mutated state-dict pickles: a value or a PickleError", async () => {
  const bytes = new Uint8Array(await readFile(fx("misc.pt")));
  const zip = readZip(bytes, "misc.pt");
  const pkl = zipData(bytes, [...zip.values()].find((e) => e.name.endsWith("data.pkl"))!);
  const opts = {
    source: "data.pkl",
    persistentLoad: () => null,
    globals: {
      "collections.OrderedDict": () => new Map(),
      "torch._utils._rebuild_tensor_v2": () => null,
      "torch._utils._rebuild_parameter": () => null,
    },
  };
  fc.assert(
    fc.property(mutation(pkl.length), (mu) => {
      ours(() => unpickle(apply(pkl, mu), opts), [PickleError], "data.pkl");
    }),
    { numRuns: 500 },
  );
  // Arbitrary bytes too: nothing escapes but PickleError.
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (b) =>
      void ours(
        () => unpickle(b, opts),
        [PickleError],
        "data.pkl",
      )),
    { numRuns: 500 },
  );
});

test("fuzz: mutated dictionary_learning cache metadata and shards give a MemmapCacheError or a read", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sc-fuzz-"));
  try {
    await cp(fx("dl_cache/mlp_out"), dir, { recursive: true });
    const files = ["shard_0.meta", "config.json", "shard_1.memmap"];
    const originals = await Promise.all(
      files.map((f) => readFile(join(dir, f)).then((b) => new Uint8Array(b))),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: files.length - 1 }),
        fc.integer({ min: 0, max: 1 << 20 }),
        async (which, seed) => {
          const good = originals[which];
          const mu = fc.sample(mutation(good.length), { seed, numRuns: 1 })[0] as Mutation;
          await writeFile(join(dir, files[which]), apply(good, mu));
          try {
            const got = ours(() => drain(memmapCacheStream([dir])), [MemmapCacheError], dir);
            if (got) assert(got.length % 5 === 0, "whole rows of d = 5");
          } finally {
            await writeFile(join(dir, files[which]), good);
          }
        },
      ),
      { numRuns: 200 },
    );
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("fuzz (exhaustive): every single-byte overwrite of a shard's schema message is an error or a read", async () => {
  // The region where fuzzing found apache-arrow exhausting memory on a corrupt vector length.
  const dir = await mkdtemp(join(tmpdir(), "sc-fuzz-"));
  try {
    const m = await writeStore(dir, Float32Array.from({ length: 8 * 3 }, (_, i) => i), {
      rowShape: [3],
      rowsPerBatch: 4,
    });
    const path = join(dir, m.shards[0].file);
    const good = new Uint8Array(await readFile(path));
    const schemaEnd = 8 + new DataView(good.buffer).getInt32(4, true);
    for (let i = 0; i < schemaEnd; i++) {
      for (const v of [0x00, 0x7f, 0xff]) {
        const bad = good.slice();
        bad[i] = v;
        await writeFile(path, bad);
        ours(() => drain(storeStream(dir, { verify: false })), [ArrowStoreError], path);
      }
    }
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("fuzz: a mutated manifest.json is an ArrowStoreError naming it, or reads the same rows", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sc-fuzz-"));
  try {
    const x = Float32Array.from({ length: 30 * 4 }, (_, i) => i * 0.5);
    await writeStore(dir, x, { rowShape: [4], rowsPerShard: 16 });
    const path = join(dir, "manifest.json");
    const good = new Uint8Array(await readFile(path));
    const want = drain(storeStream(dir));
    await fc.assert(
      fc.asyncProperty(mutation(good.length), async (mu) => {
        await writeFile(path, apply(good, mu));
        const got = ours(() => drain(storeStream(dir)), [ArrowStoreError], dir);
        // A mutation the manifest survives (e.g. inside the statistics) cannot change the rows.
        if (got) {
          assert(got.length === want.length && got.every((v, i) => v === want[i]), "same rows");
        }
      }),
      { numRuns: 200 },
    );
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("fuzz: a mutated sparsify cfg.json or sae.safetensors gives a DictionaryFormatError/SafetensorsError or a consistent dictionary", () =>
  inTmp(async (dir) => {
    const cfgPath = join(dir, "cfg.json"), stPath = join(dir, "sae.safetensors");
    const goodCfg = new Uint8Array(await readFile(cfgPath)),
      goodSt = new Uint8Array(await readFile(stPath));
    const cfg0 = JSON.parse(new TextDecoder().decode(goodCfg));
    const base = await loadDictionary(dir);
    const want = Object.fromEntries(
      await Promise.all(
        Object.entries(base.params).map(async ([k, v]) => [k, Array.from(await v!.data())]),
      ),
    );
    // Found by this test: a k the config resolver refuses was a ConfigError naming no file.
    await writeFile(cfgPath, JSON.stringify({ ...cfg0, k: 11 }));
    const e = await loadDictionary(dir).then(() => null, (e) => e as Error);
    assert(
      e instanceof DictionaryFormatError &&
        e.message.includes(`${cfgPath}: sae config: k = 11 exceeds d_sae = 10`),
      String(e),
    );
    const mu = fc.oneof(
      fc.record({
        file: fc.constant("cfg" as const),
        json: jsonEdit([...Object.keys(cfg0), "W_skip"]),
      }),
      fc.record({ file: fc.constant("cfg" as const), bytes: mutation(goodCfg.length) }),
      fc.record({ file: fc.constant("st" as const), bytes: mutation(goodSt.length) }),
    );
    await fc.assert(
      fc.asyncProperty(mu, async (m) => {
        const cfgBytes = m.file === "cfg"
          ? ("json" in m ? applyJson(cfg0, m.json) : apply(goodCfg, m.bytes))
          : goodCfg;
        const stBytes = m.file === "st" ? apply(goodSt, m.bytes) : goodSt;
        await writeFile(cfgPath, cfgBytes), await writeFile(stPath, stBytes);
        let s: Awaited<ReturnType<typeof loadDictionary>> | null = null;
        try {
          s = await loadDictionary(dir);
        } catch (e) {
          ours(
            () => {
              throw e;
            },
            [DictionaryFormatError, SafetensorsError],
            dir,
          );
          return;
        }
        try {
          const { cfg, params } = s;
          assert(cfg.arch === "topk" || cfg.arch === "transcoder", cfg.arch);
          assertEquals([params.W_enc.shape, params.b_enc!.shape, params.W_dec.shape[0]], [
            [cfg.d_in, cfg.d_sae],
            [cfg.d_sae],
            cfg.d_sae,
          ]);
          assert(
            Number.isInteger(cfg.k) && cfg.k! >= 1 && cfg.k! <= cfg.d_sae,
            `k ${cfg.k} of ${cfg.d_sae}`,
          );
          // What loaded is what the files say: cfg.json's k, and (safetensors intact) its tensors.
          assertEquals(cfg.k, JSON.parse(new TextDecoder().decode(cfgBytes)).k);
          if (same(stBytes, goodSt)) {
            for (const k of Object.keys(want)) {
              assertEquals(Array.from(await params[k as keyof typeof params]!.data()), want[k], k);
            }
          }
        } finally {
          for (const v of Object.values(s.params)) v?.dispose();
        }
      }),
      { numRuns: 200 },
    );
    for (const v of Object.values(base.params)) v?.dispose();
  }, "sparsify/layers.0"));

test("fuzz: a dictionary_learning cache's config.json set to any JSON gives a MemmapCacheError or a prefix of the rows", () =>
  inTmp(async (dir) => {
    const path = join(dir, "config.json");
    const good = JSON.parse(await readFile(path, "utf8"));
    const all = drain(memmapCacheStream([dir]));
    await fc.assert(
      fc.asyncProperty(jsonEdit(Object.keys(good)), async (e) => {
        await writeFile(path, applyJson(good, e));
        const got = ours(
          () => {
            const s = memmapCacheStream([dir]);
            return { rows: s.rows!, xs: drain(s) };
          },
          [MemmapCacheError],
          dir,
        );
        // Fewer shards (a smaller shard_count) read fewer rows, but never other rows.
        if (got) {
          assert(
            got.xs.length === got.rows * 5 && got.xs.every((v, i) => Object.is(v, all[i])),
            `rows ${got.rows}: a prefix of the cache`,
          );
        }
      }),
      { numRuns: 200 },
    );
  }, "dl_cache/resid_out"));

/** Rewrite the CRC-32 of a stored entry whose bytes were edited in place (central and local headers). */
function reseal(zip: Uint8Array, name: string): void {
  const dv = new DataView(zip.buffer, zip.byteOffset, zip.length);
  const eocd = zip.length - 22; // torch.save writes no archive comment
  let p = dv.getUint32(eocd + 16, true);
  for (let i = 0; i < dv.getUint16(eocd + 10, true); i++) {
    const nameLen = dv.getUint16(p + 28, true);
    if (new TextDecoder().decode(zip.subarray(p + 46, p + 46 + nameLen)) === name) {
      const e = readZip(zip).get(name)!;
      const crc = crc32(zip.subarray(e.dataOffset, e.dataOffset + e.size));
      dv.setUint32(p + 16, crc, true);
      dv.setUint32(dv.getUint32(p + 42, true) + 14, crc, true);
      return;
    }
    p += 46 + nameLen + dv.getUint16(p + 30, true) + dv.getUint16(p + 32, true);
  }
  throw new Error(`reseal: no entry ${name}`);
}

test("fuzz: a mutated tokens.pt (raw, or with its CRCs fixed up) gives a MemmapCacheError/TorchFileError or the ids it holds", () =>
  inTmp(async (root) => {
    const dir = join(root, "resid_out"), path = join(root, "tokens.pt");
    await cp(fx("dl_cache/resid_out"), dir, { recursive: true });
    const good = new Uint8Array(await readFile(fx("dl_cache/tokens.pt")));
    const zip = readZip(good, "tokens.pt");
    const entry = (suffix: string) => [...zip.values()].find((e) => e.name.endsWith(suffix))!;
    const pkl = entry("/data.pkl"), storage = entry("/data/0");
    const ids = () => {
      const s = memmapCacheStream([dir], { tokenIds: true });
      const out: number[] = [];
      for (let it = s.open(), r = it.next(); !r.done; r = it.next()) out.push(...r.value.tokenIds!);
      return out;
    };
    await writeFile(path, good);
    const want = ids();
    // Edits inside the pickle or the storage, resealed so that they get past the CRC check to
    // the pickle machine and the token-id checks; or raw edits and cuts anywhere.
    const inside = (e: ZipEntry) =>
      fc.array(fc.tuple(fc.nat({ max: e.size - 1 }), fc.nat({ max: 255 })), {
        minLength: 1,
        maxLength: 4,
      }).map((edits) => ({ e, edits }));
    const mu = fc.oneof(
      fc.record({ raw: mutation(good.length) }),
      fc.record({ sealed: fc.oneof(inside(pkl), inside(storage)) }),
    );
    await fc.assert(
      fc.asyncProperty(mu, async (m) => {
        let bad: Uint8Array;
        if ("raw" in m) bad = apply(good, m.raw);
        else {
          bad = good.slice();
          for (const [i, v] of m.sealed.edits) bad[m.sealed.e.dataOffset + i] = v;
          reseal(bad, m.sealed.e.name);
        }
        await writeFile(path, bad);
        const got = ours(ids, [MemmapCacheError, TorchFileError], path);
        if (!got) return;
        if ("sealed" in m && m.sealed.e === storage) {
          // The pickle is intact ([13] int64, stride 1): the ids are the edited storage's values.
          const dv = new DataView(bad.buffer, storage.dataOffset, storage.size);
          assertEquals(
            got,
            Array.from({ length: 13 }, (_, i) => Number(dv.getBigInt64(8 * i, true))),
          );
        } else if ("raw" in m) {
          assertEquals(got, want, "a raw edit that reads must not change the ids (CRC-32)");
        } else assertEquals(got.length, 13);
      }),
      { numRuns: 300 },
    );
  }));

test("torch.save int64 read as a float: exact up to ±2^53, an error naming the element beyond", async () => {
  const good = new Uint8Array(await readFile(fx("dl_cache/tokens.pt")));
  const storage = [...readZip(good, "tokens.pt").values()].find((e) => e.name.endsWith("/data/0"))!;
  const withFirst = (v: bigint) => {
    const b = good.slice();
    new DataView(b.buffer, storage.dataOffset, storage.size).setBigInt64(0, v, true);
    reseal(b, storage.name);
    return b;
  };
  const ok = stateDictOf(parseTorch(withFirst(-(2n ** 53n)), "ok.pt"), "ok.pt", { dtype: "f64" });
  assertEquals((await ok.tensors[""].data())[0], -(2 ** 53));
  ok.tensors[""].dispose();
  let msg = "";
  try {
    stateDictOf(parseTorch(withFirst(2n ** 53n + 1n), "big.pt"), "big.pt", { dtype: "f64" });
  } catch (e) {
    assert(e instanceof TorchFileError, String(e));
    msg = e.message;
  }
  for (const s of ["element 0", "9007199254740993", "beyond ±2^53"]) {
    assert(msg.includes(s), `error ${JSON.stringify(msg)} lacks ${s}`);
  }
});
