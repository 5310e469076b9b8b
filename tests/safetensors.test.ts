// safetensors: reference fixtures (tests/fixtures/make_io_fixtures.py), bit-exact round trips,
// atomic file writes, every kind of malformed input, and fuzzing of valid files.
import fc from "fast-check";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as t from "../mod.ts";
import { ensureDir, readFileBytes, writeFileAtomic, writeJsonAtomic } from "../data/atomic.ts";
import {
  loadSafetensors,
  parseSafetensors,
  SafetensorsError,
  saveSafetensors,
  serializeSafetensors,
  tensorBytes,
  toTensor,
} from "../data/safetensors.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import { runs } from "./ref.ts";

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/io/${name}`, import.meta.url));
type Expected = { dtype: string; shape: number[]; values: (number | string)[]; bits?: number[] };
const expected = JSON.parse(await readFile(fixture("expected.json"), "utf8")) as {
  safetensors: Record<string, Expected>;
  safetensors_metadata: Record<string, string>;
  writable: string[];
};
const num = (v: number | string) => (typeof v === "string" ? Number(v) : v);
const ITEM: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  U16: 2,
  U32: 4,
  U64: 8,
};
const OUR: Record<string, t.DType> = {
  F32: "f32",
  F64: "f64",
  F16: "f16",
  BF16: "bf16",
  BOOL: "bool",
};

const u16 = async (x: t.Tensor) => {
  const b = await tensorBytes(x);
  return Array.from(new Uint16Array(b.slice().buffer));
};

/** A file from a header (object or raw text) and a data buffer; the header length is filled in. */
function build(header: unknown, data: Uint8Array = new Uint8Array(0), pad = true): Uint8Array {
  let json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  if (pad && json.length % 8) {
    json = new Uint8Array([...json, ...new Uint8Array(8 - (json.length % 8)).fill(0x20)]);
  }
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

async function rejects(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected the promise to reject");
}

function throwsST(fn: () => unknown, ...fragments: string[]): Error {
  const e = assertThrows(fn, ...fragments);
  assert(e instanceof SafetensorsError, `expected a SafetensorsError, got ${e.name}: ${e.message}`);
  return e;
}

test("safetensors: the hand-written reference file decodes to numpy/torch's values", async () => {
  const path = fixture("mixed.safetensors");
  const { metadata, tensors } = await loadSafetensors(path);
  assertEquals(metadata, expected.safetensors_metadata);
  assertEquals(Object.keys(tensors).sort(), Object.keys(expected.safetensors).sort());
  for (const [name, e] of Object.entries(expected.safetensors)) {
    const x = tensors[name];
    assertEquals(x.shape, e.shape, name);
    assertEquals(x.dtype, OUR[e.dtype] ?? "i32", name);
    assertClose(await x.data(), e.values.map(num), { rtol: 0, atol: 0, msg: name });
    if (e.bits) assertEquals(await u16(x), e.bits, `${name} bits`);
  }
  assert(Object.is((await tensors.b_f32.data())[1], -0), "-0 survives");
  // The parse result indexes the same file without copying.
  const bytes = await readFileBytes(path);
  const parsed = parseSafetensors(bytes, path);
  const f32 = parsed.tensors.get("b_f32")!;
  assertEquals(f32.data.buffer === bytes.buffer, true);
  assertEquals(
    f32.data.byteOffset % 4 !== 0,
    true,
    "the fixture puts b_f32 at an unaligned offset",
  );
});

test("safetensors: our writer reproduces the reference file byte for byte", async () => {
  const bytes = await readFileBytes(fixture("writable.safetensors"));
  const { metadata, tensors } = parseSafetensors(bytes);
  const loaded = Object.fromEntries([...tensors].map(([k, v]) => [k, toTensor(v)]));
  assertEquals(Object.keys(loaded).sort(), [...expected.writable].sort());
  const again = await serializeSafetensors(loaded, metadata);
  assertEquals(again.length, bytes.length);
  assert(again.every((b, i) => b === bytes[i]), "bytes differ");
});

test("safetensors: toTensor widens integers, range-checks I64 and casts on request", async () => {
  const { tensors } = parseSafetensors(
    await readFileBytes(fixture("mixed.safetensors")),
    "mixed.safetensors",
  );
  const bf = toTensor(tensors.get("e_bf16")!, { dtype: "f32" });
  assertEquals(bf.dtype, "f32");
  assertClose(await bf.data(), expected.safetensors.e_bf16.values.map(num), { rtol: 0, atol: 0 });
  const i8 = toTensor(tensors.get("i_i8")!, { dtype: "f32" });
  assertEquals([i8.dtype, Array.from(await i8.data())], ["f32", [-128, 5, 127]]);

  const big = new Uint8Array(new BigInt64Array([1n, 2n ** 40n, -(2n ** 31n) - 1n]).buffer);
  const file = build({ big: { dtype: "I64", shape: [3], data_offsets: [0, 24] } }, big);
  const entry = parseSafetensors(file, "ids.safetensors").tensors.get("big")!;
  throwsST(
    () => toTensor(entry),
    "ids.safetensors",
    'tensor "big"',
    "element 1",
    "1099511627776",
    "i32 range",
  );
  const asF64 = toTensor(entry, { dtype: "f64" });
  assertEquals(Array.from(await asF64.data()), [1, 2 ** 40, -(2 ** 31) - 1]);
  const u64 = build(
    { u: { dtype: "U64", shape: [1], data_offsets: [0, 8] } },
    new Uint8Array(new BigUint64Array([2n ** 63n]).buffer),
  );
  throwsST(() => toTensor(parseSafetensors(u64).tensors.get("u")!), "U64 element 0");
  // Hand-built entries are checked too.
  throwsST(
    () => toTensor({ dtype: "F32", shape: [-1, 0], data: new Uint8Array(0) }),
    "invalid shape [-1,0]",
  );
  throwsST(
    () => toTensor({ dtype: "F32", shape: [3], data: new Uint8Array(8), name: "x" }),
    'tensor "x"',
    "8 bytes of data do not fit shape [3] F32",
  );
  throwsST(
    () => toTensor({ dtype: "C64", shape: [1], data: new Uint8Array(8) }),
    'unknown dtype "C64"',
  );
});

test("safetensors: U32 and U64 values come back exactly (i32 where they fit, f64 up to 2^53); past that an error names the element and byte", async () => {
  // Little-endian words written with DataView, independent of the reader's typed arrays.
  const words = (vals: bigint[], size: 4 | 8) => {
    const b = new Uint8Array(vals.length * size), dv = new DataView(b.buffer);
    vals.forEach((
      v,
      i,
    ) => (size === 4 ? dv.setUint32(i * 4, Number(v), true) : dv.setBigUint64(i * 8, v, true)));
    return b;
  };
  const read = (dtype: "U32" | "U64", vals: bigint[], opts: { dtype?: t.DType } = {}) => {
    const size = dtype === "U32" ? 4 : 8;
    const file = build({
      pad: { dtype: "U8", shape: [3], data_offsets: [0, 3] },
      v: { dtype, shape: [vals.length], data_offsets: [3, 3 + vals.length * size] },
    }, new Uint8Array([...new Uint8Array(3), ...words(vals, size)]));
    const dataStart = 8 + Number(new DataView(file.buffer).getBigUint64(0, true)) + 3; // unaligned on purpose
    return {
      x: () => toTensor(parseSafetensors(file, "u.safetensors").tensors.get("v")!, opts),
      dataStart,
    };
  };
  const values = async (x: t.Tensor) => {
    const v = [x.dtype, Array.from(await x.data())];
    x.dispose();
    return v;
  };
  const fitsI32 = [0n, 1n, 65536n, 2n ** 31n - 1n];
  for (const dtype of ["U32", "U64"] as const) {
    assertEquals(await values(read(dtype, fitsI32).x()), ["i32", fitsI32.map(Number)], dtype);
  }
  const u32 = [0n, 2n ** 31n, 3000000000n, 2n ** 32n - 1n];
  assertEquals(await values(read("U32", u32, { dtype: "f64" }).x()), ["f64", u32.map(Number)]);
  const r32 = read("U32", u32);
  throwsST(
    r32.x,
    "u.safetensors",
    'tensor "v"',
    "U32 element 1 is 2147483648, outside the i32 range",
    `file byte ${r32.dataStart + 4}`,
    'pass { dtype: "f64" }',
  );
  const u64 = [0n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n];
  assertEquals(await values(read("U64", u64, { dtype: "f64" }).x()), ["f64", u64.map(Number)]);
  // 2^53 + 1 would round to 2^53 as a double: refused, for f32 as for f64, never rounded silently.
  for (const [vals, bad] of [[[1n, 2n ** 53n + 1n], 1], [[2n ** 64n - 1n], 0]] as const) {
    const r = read("U64", [...vals]);
    for (const target of ["f64", "f32"] as const) {
      const c = read("U64", [...vals], { dtype: target });
      throwsST(
        c.x,
        'tensor "v"',
        `U64 element ${bad} is ${vals[bad]}, beyond ±2^53`,
        `file byte ${r.dataStart + 8 * bad}`,
      );
    }
    throwsST(r.x, `U64 element ${bad} is ${vals[bad]}, outside the i32 range`);
  }
  const i64 = build(
    { v: { dtype: "I64", shape: [2], data_offsets: [0, 16] } },
    new Uint8Array(new BigInt64Array([-(2n ** 53n), -(2n ** 53n) - 1n]).buffer),
  );
  throwsST(
    () => toTensor(parseSafetensors(i64).tensors.get("v")!, { dtype: "f64" }),
    "I64 element 1 is -9007199254740993, beyond ±2^53",
  );
});

test("safetensors: round trip of every dtype we write, bit-exact, with metadata, scalars and empties", async () => {
  const f16Words = new Uint16Array([
    0x0000,
    0x8000,
    0x0001,
    0x03ff,
    0x7bff,
    0x7c00,
    0xfc00,
    0x7c01,
    0x7e00,
    0xfe3f,
  ]);
  const bf16Words = new Uint16Array([
    0x3f80,
    0x0001,
    0x7f7f,
    0x7f80,
    0xff80,
    0x7f81,
    0xffff,
    0x8000,
  ]);
  const src: Record<string, t.Tensor> = {
    f32: t.tensor(
      new Float32Array([0, -0, 1e-45, 3.4028234663852886e38, NaN, Infinity, -Infinity, 1 / 3]),
      { shape: [2, 4] },
    ),
    f64: t.tensor(
      new Float64Array([Math.PI, 5e-324, -1.7976931348623157e308, NaN, -Infinity, -0]),
      { shape: [3, 2] },
    ),
    f16: t.tensor(f16Words, { dtype: "f16", shape: [2, 5] }),
    bf16: t.tensor(bf16Words, { dtype: "bf16", shape: [8] }),
    i32: t.tensor(new Int32Array([-2147483648, 2147483647, 0, -1]), { shape: [4] }),
    bool: t.tensor([[true, false, true], [false, false, true]]),
    scalar: t.scalar(7.25, "f64"),
    scalar16: t.tensor(new Uint16Array([0x7e01]), { dtype: "f16", shape: [] }),
    empty: t.zeros([0], "f32"),
    empty3: t.zeros([3, 0, 2], "bf16"),
    // Views: a transposed f16 goes through the strided raw-word path, a sliced f32 through data().
    f16T: t.transpose(t.tensor(f16Words, { dtype: "f16", shape: [2, 5] })),
    f32Slice: t.slice(t.reshape(t.arange(0, 12, 1, "f32"), [3, 4]), [1, 1], [3, 3]),
    "ünïcode name/with.dots": t.tensor([1, 2]),
    ["__proto__"]: t.tensor([3]), // computed key: an own property, not the prototype
  };
  // In sorted order, as the writer emits them (assertEquals compares JSON text).
  const metadata = {
    ["__proto__"]: "not a prototype",
    empty: "",
    format: "pt",
    "ключ": "значение",
  };
  const bytes = await serializeSafetensors(src, metadata);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assertEquals(n % 8, 0, "header padded to a multiple of 8");
  const parsed = parseSafetensors(bytes, "rt");
  assertEquals(parsed.metadata, metadata);
  assertEquals(Object.getPrototypeOf(parsed.metadata), Object.prototype);
  assertEquals(
    [...parsed.tensors.keys()],
    Object.keys(src).sort(),
    "tensors are written sorted by name",
  );
  for (const [name, x] of Object.entries(src)) {
    const y = toTensor(parsed.tensors.get(name)!);
    assertEquals([y.dtype, y.shape], [x.dtype, x.shape], name);
    const [a, b] = [await tensorBytes(x), await tensorBytes(y)];
    assertEquals(Array.from(b), Array.from(a), `${name} bytes`);
  }
  assertEquals(await u16(src.f16T), [
    0x0000,
    0x7c00,
    0x8000,
    0xfc00,
    0x0001,
    0x7c01,
    0x03ff,
    0x7e00,
    0x7bff,
    0xfe3f,
  ], "strided f16 words");
  // Same input, same bytes.
  const twice = await serializeSafetensors(src, metadata);
  assert(twice.every((v, i) => v === bytes[i]) && twice.length === bytes.length, "deterministic");
  // An empty file is valid too.
  const none = await serializeSafetensors({});
  assertEquals(none.length, 16);
  assertEquals(parseSafetensors(none).tensors.size, 0);
});

test("safetensors: save/load through the file system is atomic and leaves no temp files", async () => {
  const dir = await mkdtemp(join(tmpdir(), "st-test-"));
  try {
    const sub = join(dir, "a", "b");
    await ensureDir(sub);
    await ensureDir(sub); // idempotent
    const path = join(sub, "model.safetensors");
    const W = t.tensor([[1, 2], [3, 4]]);
    await saveSafetensors(path, { W }, { step: "1" });
    await saveSafetensors(path, { W: t.mul(W, 2) }, { step: "2" }); // overwrite in place
    const { metadata, tensors } = await loadSafetensors(path);
    assertEquals(metadata, { step: "2" });
    assertEquals(Array.from(await tensors.W.data()), [2, 4, 6, 8]);
    assertEquals(await readdir(sub), ["model.safetensors"]);
    await writeJsonAtomic(join(sub, "cfg.json"), { a: [1, 2] });
    assertEquals(JSON.parse(await readFile(join(sub, "cfg.json"), "utf8")), { a: [1, 2] });
    await writeFileAtomic(join(sub, "note.txt"), "héllo");
    assertEquals(await readFile(join(sub, "note.txt"), "utf8"), "héllo");
    // A failed write (target directory missing) names the path and leaves nothing behind.
    const missing = join(dir, "nope", "x.bin");
    assert(
      (await rejects(writeFileAtomic(missing, new Uint8Array(4)))).message.includes(missing),
      "error names the path",
    );
    // Renaming onto a directory fails after the temp file was written: it must be cleaned up.
    await ensureDir(join(sub, "isdir"));
    await rejects(writeFileAtomic(join(sub, "isdir"), new Uint8Array(4)));
    assertEquals((await readdir(sub)).sort(), [
      "cfg.json",
      "isdir",
      "model.safetensors",
      "note.txt",
    ]);
    assert(
      (await rejects(readFileBytes(join(dir, "absent.safetensors")))).message.includes(
        "absent.safetensors",
      ),
      "readFileBytes names the path",
    );
    assert(
      (await rejects(loadSafetensors(join(dir, "absent.safetensors")))).message.includes(
        "absent.safetensors",
      ),
      "loadSafetensors names the path",
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("safetensors: truncation at every length is a SafetensorsError", async () => {
  const file = await readFileBytes(fixture("mixed.safetensors"));
  for (let len = 0; len < file.length; len++) {
    throwsST(() => parseSafetensors(file.subarray(0, len), "cut.safetensors"), "cut.safetensors: ");
  }
  throwsST(
    () => parseSafetensors(new Uint8Array(5), "tiny"),
    "tiny: file is 5 bytes",
    "8-byte header length",
  );
});

test("safetensors: malformed headers give messages that say what and where", () => {
  const f32x4 = new Uint8Array(16);
  const ok = { W: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] } };
  parseSafetensors(build(ok, f32x4)); // the baseline parses

  // Header length pointing past the end, and an absurd one that must not be allocated.
  const past = build(ok, f32x4);
  new DataView(past.buffer).setBigUint64(0, BigInt(past.length), true);
  throwsST(
    () => parseSafetensors(past, "m.st"),
    "m.st: header length",
    "points past the end",
    "byte 0",
  );
  const huge = build(ok, f32x4);
  new DataView(huge.buffer).setBigUint64(0, 2n ** 60n, true);
  throwsST(() => parseSafetensors(huge, "m.st"), "header length 1152921504606846976", "exceeds");
  new DataView(huge.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
  throwsST(() => parseSafetensors(huge), "18446744073709551615");

  throwsST(
    () => parseSafetensors(build('{"W": {"dtype": "F32",', f32x4), "m.st"),
    "m.st: header (bytes 8..",
    "not valid JSON",
  );
  throwsST(() => parseSafetensors(build("[1, 2]")), "JSON object");
  throwsST(() => parseSafetensors(build(" {}")), "JSON object");
  throwsST(() => parseSafetensors(build('"x"')), "JSON object");
  throwsST(() => parseSafetensors(build("\uFEFF{}")), "JSON object");
  const badUtf8 = build("{}      ");
  badUtf8[9] = 0xff;
  throwsST(() => parseSafetensors(badUtf8), "not valid UTF-8");

  const one = (entry: unknown, data = f32x4, name = "W_enc") => () =>
    parseSafetensors(build({ [name]: entry }, data), "model.safetensors");
  throwsST(
    one({ dtype: "F32", shape: [4, 8], data_offsets: [0, 100] }, new Uint8Array(128)),
    'model.safetensors: tensor "W_enc": data_offsets [0, 100]',
    "hold 100 bytes",
    "shape [4, 8] F32 needs 128",
  );
  throwsST(
    one({ dtype: "F32", shape: [2, 2], data_offsets: [0, 17] }),
    'tensor "W_enc"',
    "run past the end of the data buffer (16 bytes",
  );
  throwsST(one({ dtype: "F32", shape: [2, 2], data_offsets: [8, 4] }), "begin after they end");
  throwsST(
    one({ dtype: "F32", shape: [2, 2], data_offsets: [0] }),
    "data_offsets must be [begin, end]",
  );
  throwsST(one({ dtype: "F32", shape: [2, 2] }), "data_offsets must be [begin, end]");
  throwsST(
    one({ dtype: "F32", shape: [2, 2], data_offsets: [-1, 15] }),
    "data_offsets begin is -1",
  );
  throwsST(
    one({ dtype: "F32", shape: [2, 2], data_offsets: [0, 2 ** 64] }),
    "data_offsets end is 18446744073709552000",
  );
  throwsST(
    one({ dtype: "F32", shape: [2, 2], data_offsets: [0, "16"] }),
    'data_offsets end is "16"',
  );
  throwsST(
    one({ dtype: "F128", shape: [2], data_offsets: [0, 16] }),
    'unknown dtype "F128"',
    "F32",
  );
  throwsST(
    one({ dtype: "toString", shape: [2], data_offsets: [0, 16] }),
    'unknown dtype "toString"',
  );
  throwsST(one({ shape: [2], data_offsets: [0, 16] }), "unknown dtype undefined");
  throwsST(
    one({ dtype: "F32", shape: [-4], data_offsets: [0, 16] }),
    "shape[0] is -4, not a non-negative integer",
  );
  throwsST(one({ dtype: "F32", shape: [2, 1.5], data_offsets: [0, 16] }), "shape[1] is 1.5");
  throwsST(
    one({ dtype: "F32", shape: [2 ** 53], data_offsets: [0, 16] }),
    "shape[0] is 9007199254740992",
  );
  throwsST(one({ dtype: "F32", shape: [null], data_offsets: [0, 16] }), "shape[0] is null");
  throwsST(one({ dtype: "F32", shape: "2,2", data_offsets: [0, 16] }), "shape must be an array");
  throwsST(
    one({ dtype: "F32", shape: [2 ** 52, 2 ** 52, 3], data_offsets: [0, 16] }),
    "needs at least",
  );
  throwsST(one([1, 2, 3]), 'tensor "W_enc": expected an object');
  throwsST(one(null), "expected an object");
  // Zero elements make any dims fine; the byte count is then 0.
  assertEquals(
    parseSafetensors(
      build({ z: { dtype: "F32", shape: [2 ** 52, 2 ** 52, 0], data_offsets: [0, 0] } }),
    ).tensors.get("z")!.data.length,
    0,
  );

  const two = (a: number[], b: number[]) => () =>
    parseSafetensors(
      build({
        a: { dtype: "F32", shape: [2], data_offsets: a },
        b: { dtype: "F32", shape: [2], data_offsets: b },
      }, f32x4),
      "o.st",
    );
  throwsST(two([0, 8], [4, 12]), "o.st", "overlap", '"a" at [0, 8]', "file byte");
  throwsST(two([8, 16], [0, 8].map((v) => v + 4)), "overlap");
  throwsST(two([0, 8], [0, 8]), "overlap");
  two([8, 16], [0, 8])(); // out of order but disjoint is fine
  // A gap or trailing bytes are tolerated (the reference writer never makes them, but they are harmless).
  parseSafetensors(build({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, f32x4));

  throwsST(
    () => parseSafetensors(build({ __metadata__: { a: 1 } })),
    "__metadata__",
    '["a"] must be a string, got 1',
  );
  throwsST(
    () => parseSafetensors(build({ __metadata__: ["x"] })),
    "__metadata__ must be an object",
  );
  assertEquals(parseSafetensors(build({ __metadata__: null })).metadata, {});
  // Headers need not be padded (other writers may not pad).
  parseSafetensors(build({ W: ok.W }, f32x4, false));
});

test("safetensors: the writer rejects what it cannot represent", async () => {
  const reserved = await rejects(serializeSafetensors({ __metadata__: t.tensor([1]) }));
  assert(
    reserved instanceof SafetensorsError && reserved.message.includes("reserved"),
    reserved.message,
  );
  const meta = await rejects(
    serializeSafetensors({ a: t.tensor([1]) }, { n: 5 as unknown as string }),
  );
  assert(
    meta instanceof SafetensorsError && meta.message.includes('metadata "n" must be a string'),
    meta.message,
  );
});

// ---- fuzzing ----

async function validFile(): Promise<Uint8Array> {
  return await serializeSafetensors({
    a: t.tensor([[true, false, true]]),
    b: t.tensor(new Float32Array([1.5, NaN, -2, 4]), { shape: [2, 2] }),
    c: t.tensor(new Uint16Array([0x3c00, 0x7e00]), { dtype: "f16" }),
    d: t.tensor(new Int32Array([-7, 9, 11])),
    e: t.scalar(0.5, "f64"),
    f: t.zeros([0, 4]),
  }, { k: "v" });
}

function checkParse(bytes: Uint8Array): void {
  let parsed;
  try {
    parsed = parseSafetensors(bytes, "fuzz");
  } catch (e) {
    assert(
      e instanceof SafetensorsError,
      `parse threw ${(e as Error).name}: ${(e as Error).message}`,
    );
    assert((e as Error).message.startsWith("fuzz: "), "message names the source");
    return;
  }
  for (const [name, entry] of parsed.tensors) {
    const n = entry.shape.reduce((a, b) => a * b, 1);
    assertEquals(entry.data.byteLength, n * ITEM[entry.dtype], `${name}: bytes match the shape`);
    try {
      const x = toTensor(entry);
      assertEquals(x.shape, entry.shape);
      x.dispose();
    } catch (e) {
      assert(
        e instanceof SafetensorsError,
        `toTensor threw ${(e as Error).name}: ${(e as Error).message}`,
      );
    }
  }
}

test("safetensors: fuzzed files parse or throw SafetensorsError, nothing else", async () => {
  const base = await validFile();
  const hdrEnd = 8 + Number(new DataView(base.buffer).getBigUint64(0, true));
  const pos = (max: number) => fc.nat({ max: max - 1 });
  const mutation = fc.oneof(
    // random bytes anywhere
    fc.array(fc.tuple(pos(base.length), fc.integer({ min: 0, max: 255 })), {
      minLength: 1,
      maxLength: 6,
    }).map((flips) => {
      const m = base.slice();
      for (const [i, v] of flips) m[i] = v;
      return m;
    }),
    // JSON-significant characters inside the header, where parsing is most fragile
    fc.array(
      fc.tuple(
        fc.integer({ min: 8, max: hdrEnd - 1 }),
        fc.constantFrom(...'0123456789-.,:[]{}"e '),
      ),
      { minLength: 1, maxLength: 4 },
    ).map((edits) => {
      const m = base.slice();
      for (const [i, c] of edits) m[i] = c.charCodeAt(0);
      return m;
    }),
    // the u64 header length
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((n) => {
      const m = base.slice();
      new DataView(m.buffer).setBigUint64(0, n, true);
      return m;
    }),
    // truncation
    pos(base.length).map((n) => base.slice(0, n)),
    // splice: delete a range and insert random bytes
    fc.tuple(pos(base.length), fc.nat({ max: 16 }), fc.uint8Array({ maxLength: 16 })).map((
      [i, del, ins],
    ) =>
      new Uint8Array([
        ...base.subarray(0, i),
        ...ins,
        ...base.subarray(Math.min(base.length, i + del)),
      ])
    ),
  );
  fc.assert(fc.property(mutation, (m) => checkParse(m)), { numRuns: runs(300) });
});

test("safetensors: random header objects parse or throw SafetensorsError", () => {
  const dim = fc.oneof(fc.nat({ max: 5 }), fc.constantFrom(-1, 1.5, 2 ** 53, 2 ** 31, "3", null));
  const entry = fc.record({
    dtype: fc.constantFrom("F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "U64", "X", 3),
    shape: fc.oneof(fc.array(dim, { maxLength: 3 }), fc.constant("nope")),
    data_offsets: fc.oneof(
      fc.tuple(fc.nat({ max: 40 }), fc.nat({ max: 40 })),
      fc.array(fc.integer({ min: -2, max: 40 }), { maxLength: 3 }),
    ),
  }, { requiredKeys: [] });
  const header = fc.dictionary(
    fc.constantFrom("a", "b", "c", "__metadata__", "__proto__", ""),
    fc.oneof(entry, fc.dictionary(fc.string(), fc.string()), fc.jsonValue()),
  );
  fc.assert(
    fc.property(header, fc.uint8Array({ maxLength: 40 }), (h, data) => checkParse(build(h, data))),
    { numRuns: runs(300) },
  );
});
