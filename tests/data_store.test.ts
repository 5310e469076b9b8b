// The Arrow activation store: round trips for every dtype, row shapes, extra columns, sharding,
// statistics, checksums, streaming with bounded chunks, and bad manifests/shards.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as A from "apache-arrow";
import * as t from "../mod.ts";
import * as data from "../data/mod.ts";
import { bytesSource, fileSource, readSchema, walkFrames } from "../data/arrow_ipc.ts";
import {
  ArrowStoreError,
  createStoreWriter,
  readManifest,
  shardStats,
  storeStream,
  verifyStore,
  writeStore,
} from "../data/arrow_store.ts";
import { welfordFinish, welfordInit, welfordMerge } from "../data/welford.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../tensor/dtype.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

const tmp = () => mkdtemp(join(tmpdir(), "sc-store-"));
const values = (n: number, seed = 1) =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed) * (1 + (i % 7)));
function readAll(dir: string, opts = {}): { x: Float32Array; chunks: number; maxRows: number } {
  const s = storeStream(dir, opts);
  const parts: Float32Array[] = [];
  let maxRows = 0;
  for (let it = s.open(), r = it.next(); !r.done; r = it.next()) {
    parts.push(r.value.x.slice());
    maxRows = Math.max(maxRows, r.value.rows);
  }
  const x = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) x.set(p, (at += p.length) - p.length);
  return { x, chunks: parts.length, maxRows };
}

test("store: f32 round trip over several shards and record batches, bounded chunks", async () => {
  const dir = await tmp();
  try {
    const d = 12, n = 1000, x = values(n * d);
    const w = createStoreWriter(dir, {
      rowShape: [d],
      rowsPerBatch: 64,
      rowsPerShard: 256,
      model: "gpt2",
      hookPoint: "blocks.3.hook_resid_post",
    });
    // Appends of odd sizes cross batch and shard boundaries.
    for (let r = 0; r < n; r += 333) await w.append(x.subarray(r * d, Math.min(n, r + 333) * d));
    const m = await w.finish();
    assertEquals(m.shards.map((s) => s.rows), [256, 256, 256, 232]);
    assertEquals(m.shards.map((s) => s.batches), [4, 4, 4, 4]);
    assertEquals([m.rows, m.model, m.hook_point, m.dtype], [
      n,
      "gpt2",
      "blocks.3.hook_resid_post",
      "f32",
    ]);
    const back = readAll(dir);
    assertEquals(back.x.length, x.length);
    assert(back.x.every((v, i) => Object.is(v, x[i])), "f32 values must come back bit-exact");
    assertEquals(back.maxRows, 64, "chunks are one record batch");
    assertEquals(back.chunks, 16);
    assertEquals(readManifest(dir).rows, n);
    assertEquals(verifyStore(dir).shards, 4);
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("store: f16 and bf16 store rounded values, read back as f32 exactly as rounded", async () => {
  for (
    const [dtype, enc, dec] of [["f16", f32ToF16, f16ToF32], [
      "bf16",
      f32ToBf16,
      bf16ToF32,
    ]] as const
  ) {
    const dir = await tmp();
    try {
      const d = 8, x = values(50 * d, 3);
      const m = await writeStore(dir, x, { rowShape: [d], dtype, rowsPerBatch: 16 });
      assertEquals(m.dtype, dtype);
      const back = readAll(dir).x;
      const want = Float32Array.from(x, (v) => dec(enc(v)));
      assert(
        back.every((v, i) => Object.is(v, want[i])),
        `${dtype}: values must be the rounded ones`,
      );
      // The column really holds 16-bit values, with the dtype in the schema metadata.
      const bytes = await readFile(join(dir, m.shards[0].file));
      const table = A.tableFromIPC(bytes);
      const type = table.schema.fields[0].type as A.FixedSizeList;
      assertEquals(type.children[0].type.toString(), dtype === "f16" ? "Float16" : "Uint16");
      assertEquals(JSON.parse(table.schema.metadata.get("sparsecoder:store")!).dtype, dtype);
      // Statistics describe the stored (rounded) values.
      const mean0 = want.filter((_, i) => i % d === 0).reduce((a, b) => a + b, 0) / 50;
      assertClose([m.stats.mean[0]], [mean0], { rtol: 1e-12, atol: 1e-12 });
    } finally {
      await rm(dir, { recursive: true });
    }
  }
});

test("store: [N, L, d] rows, tensors as input, optional int32 columns", async () => {
  const dir = await tmp();
  try {
    const x = t.tensor(values(30 * 2 * 4), { shape: [30, 2, 4] });
    const ids = Int32Array.from({ length: 30 }, (_, i) => 1000 + i),
      seq = Int32Array.from({ length: 30 }, (_, i) => i >> 3),
      pos = Int32Array.from({ length: 30 }, (_, i) => i & 7);
    const m = await writeStore(dir, x, {
      rowShape: [2, 4],
      columns: ["token_id", "sequence_id", "position"],
      extras: { token_id: ids, sequence_id: seq, position: pos },
      rowsPerBatch: 7,
    });
    assertEquals(m.columns, ["activation", "token_id", "sequence_id", "position"]);
    assertEquals(m.row_shape, [2, 4]);
    const s = storeStream(dir, { tokenIds: true });
    const got: number[] = [];
    for (let it = s.open(), r = it.next(); !r.done; r = it.next()) got.push(...r.value.tokenIds!);
    assertEquals(got, Array.from(ids));
    assertEquals(Array.from(readAll(dir).x), Array.from(await x.data()));
    // The other columns are real Arrow int32 columns.
    const table = A.tableFromIPC(await readFile(join(dir, m.shards[0].file)));
    assertEquals(Array.from(table.getChild("position")!.toArray() as Int32Array), Array.from(pos));
    x.dispose();
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("store: sequence ids and positions come back through storeStream (asked for, when stored); shard metadata names model and hook point", async () => {
  const dir = await tmp();
  try {
    const n = 50, d = 3;
    const seq = Int32Array.from({ length: n }, (_, i) => Math.floor(i / 16)),
      pos = Int32Array.from({ length: n }, (_, i) => i % 16);
    // Batches of 7 in shards of 21: chunk boundaries fall mid-sequence and mid-shard.
    const m = await writeStore(dir, values(n * d), {
      rowShape: [d],
      columns: ["sequence_id", "position"],
      extras: { sequence_id: seq, position: pos },
      rowsPerBatch: 7,
      rowsPerShard: 21,
      model: "pythia-70m",
      hookPoint: "blocks.2.hook_mlp_out",
    });
    assertEquals(m.shards.length, 3);
    const gotSeq: number[] = [], gotPos: number[] = [];
    const s = storeStream(dir, { sequenceIds: true, positions: true, tokenIds: true });
    for (let it = s.open(), r = it.next(); !r.done; r = it.next()) {
      const c = r.value;
      assertEquals(
        [c.sequenceIds?.length, c.positions?.length],
        [c.rows, c.rows],
        "one value per row of the chunk",
      );
      assertEquals(c.tokenIds, undefined, "no token_id column, no token ids");
      gotSeq.push(...c.sequenceIds!), gotPos.push(...c.positions!);
    }
    assertEquals(gotSeq, Array.from(seq));
    assertEquals(gotPos, Array.from(pos));
    // Not asked for, not returned (as tokenIds), also through openActivations.
    const plain = (await data.openActivations(dir)).open().next().value!;
    assertEquals([plain.sequenceIds, plain.positions], [undefined, undefined]);
    const viaOpen = (await data.openActivations(dir, { positions: true })).open().next().value!;
    assertEquals(Array.from(viaOpen.positions!), Array.from(pos.subarray(0, 7)));
    // Every shard's own schema metadata (not only the manifest) carries the model and hook point.
    for (const e of m.shards) {
      const src = fileSource(join(dir, e.file));
      try {
        const meta = JSON.parse(readSchema(src).schema.metadata.get("sparsecoder:store")!);
        assertEquals([meta.model, meta.hook_point, meta.row_shape, meta.dtype], [
          "pythia-70m",
          "blocks.2.hook_mlp_out",
          [d],
          "f32",
        ], e.file);
      } finally {
        src.close();
      }
    }
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("store: manifest statistics equal a direct computation and the merge of per-shard schema statistics", async () => {
  const dir = await tmp();
  try {
    const d = 5, n = 300, x = values(n * d, 7);
    const m = await writeStore(dir, x, { rowShape: [d], rowsPerShard: 128, rowsPerBatch: 32 });
    const mean = new Array(d).fill(0), v = new Array(d).fill(0);
    for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += x[i * d + j] / n;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < d; j++) v[j] += (x[i * d + j] - mean[j]) ** 2 / n;
    }
    assertClose(m.stats.mean, mean, { rtol: 1e-10, atol: 1e-12 });
    assertClose(m.stats.variance, v, { rtol: 1e-10, atol: 1e-12 });
    let merged = welfordInit(d);
    for (const s of m.shards) merged = welfordMerge(merged, shardStats(dir, s, d));
    assertClose(welfordFinish(merged).variance, v, { rtol: 1e-10, atol: 1e-12 });
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("store: a changed shard fails its checksum (streaming and verifyStore); verify:false skips it", async () => {
  const dir = await tmp();
  try {
    const m = await writeStore(dir, values(40 * 4), { rowShape: [4], rowsPerBatch: 10 });
    const path = join(dir, m.shards[0].file);
    const bytes = await readFile(path);
    const good = Uint8Array.from(bytes); // Buffer.slice would be a view
    // Flip a bit inside the last batch's body: the data still decodes, only the hash can tell.
    bytes[bytes.length - 40] ^= 1;
    await writeFile(path, bytes);
    assertThrows(() => readAll(dir), "sha256", "does not match", path);
    assertThrows(() => verifyStore(dir), "sha256", path);
    assertEquals(readAll(dir, { verify: false }).x.length, 160);
    // Default: each shard is checked on a stream's first pass only; "always" checks every pass.
    await writeFile(path, good);
    const drainOnce = (s: ReturnType<typeof storeStream>) => {
      for (let it = s.open(), r = it.next(); !r.done; r = it.next());
    };
    const once = storeStream(dir), always = storeStream(dir, { verify: "always" });
    drainOnce(once), drainOnce(always);
    await writeFile(path, bytes);
    drainOnce(once);
    assertThrows(() => drainOnce(always), "sha256");
    await writeFile(path, bytes.subarray(0, bytes.length - 3));
    assertThrows(
      () => readAll(dir),
      `${path}: file is ${bytes.length - 3} bytes but the manifest says ${bytes.length}`,
    );
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("store: manifest errors name the field; writer refuses bad options and existing stores", async () => {
  const dir = await tmp();
  try {
    await writeStore(dir, values(20 * 3), { rowShape: [3] });
    const mpath = join(dir, "manifest.json");
    const good = JSON.parse(await readFile(mpath, "utf8"));
    const cases: [(m: any) => void, string][] = [
      [(m) => (m.format = "x"), "format must be"],
      [(m) => (m.version = 2), "version 2 is not supported"],
      [(m) => (m.row_shape = [0]), "row_shape must be"],
      [(m) => (m.dtype = "f64"), "dtype must be"],
      [
        (m) => (m.shards[0].file = "../etc/passwd.arrow"),
        "shards[0].file must be a plain file name",
      ],
      [(m) => (m.shards[0].rows = -1), "shards[0].rows must be a non-negative integer"],
      [(m) => (m.shards[0].sha256 = "zz"), "shards[0].sha256 must be 64 hex digits"],
      [(m) => (m.rows = 21), "rows is 21 but the shards hold 20"],
      [(m) => (m.columns = ["activation", "label"]), "columns must be"],
    ];
    for (const [mutate, msg] of cases) {
      const m = structuredClone(good);
      mutate(m);
      await writeFile(mpath, JSON.stringify(m));
      const e = assertThrows(() => readManifest(dir), msg, mpath);
      assert(e instanceof ArrowStoreError);
    }
    // Rows the manifest does not account for are caught while streaming.
    const m = structuredClone(good);
    m.shards[0].rows = 19, m.rows = 19;
    await writeFile(mpath, JSON.stringify(m));
    assertThrows(() => readAll(dir, { verify: false }), "brings the rows past the manifest's 19");
    // A shard the manifest names but the folder lacks (a fuzzed manifest found this in CI).
    const gone = structuredClone(good);
    gone.shards[0].file = "-hard-00000.arrow";
    await writeFile(mpath, JSON.stringify(gone));
    for (const f of [() => readAll(dir), () => verifyStore(dir)]) {
      const e = assertThrows(
        f,
        "cannot open",
        "-hard-00000.arrow",
        "named in the store's manifest.json",
      );
      assert(e instanceof ArrowStoreError, `${(e as Error).name}`);
    }
    await writeFile(mpath, JSON.stringify(good));
    assertThrows(() => createStoreWriter(dir, { rowShape: [3] }), "already holds a store");
    assertThrows(() => createStoreWriter(dir + "x", { rowShape: [0] }), "rowShape must be");
    assertThrows(
      () => createStoreWriter(dir + "x", { rowShape: [3], dtype: "f64" as never }),
      "dtype must be f32, f16 or bf16",
    );
    const w = createStoreWriter(join(dir, "sub"), { rowShape: [3], columns: ["token_id"] });
    let err = "";
    await w.append(values(6), { token_id: new Int32Array(1) }).catch((e) => (err = e.message));
    assert(err.includes("column token_id needs an Int32Array of 2 values, got 1 values"), err);
    await w.append(values(7)).catch((e) => (err = e.message));
    assert(err.includes("not a whole number of rows"), err);
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("IPC framing: the file format stops at its footer even without an end-of-stream marker", () => {
  const stream = A.tableToIPC(A.tableFromArrays({ a: Float32Array.from([1, 2, 3]) }), "stream");
  const body = stream.subarray(0, stream.length - 8); // drop the end marker
  const footer = new Uint8Array(16).fill(7); // bytes a message walk must never reach
  const f = new Uint8Array(8 + body.length + footer.length + 10);
  f.set([0x41, 0x52, 0x52, 0x4f, 0x57, 0x31, 0, 0]);
  f.set(body, 8);
  f.set(footer, 8 + body.length);
  new DataView(f.buffer).setInt32(8 + body.length + 16, 16, true);
  f.set([0x41, 0x52, 0x52, 0x4f, 0x57, 0x31], f.length - 6);
  assertEquals([...walkFrames(bytesSource(f, "x.arrow"))].map((m) => m.type), [
    "schema",
    "recordbatch",
  ]);
  // Without the footer bound the walk would read the footer's bytes as a message length.
  const noFooter = f.subarray(0, 8 + body.length + 16);
  assertThrows(() => [...walkFrames(bytesSource(noFooter, "y.arrow"))], "y.arrow", "at byte");
});
