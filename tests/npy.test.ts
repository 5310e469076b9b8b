// .npy: files written by numpy (tests/fixtures/make_io_fixtures.py), byte-identical writing,
// bit-exact round trips, malformed input with useful messages, and fuzzing.
import fc from "fast-check";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as t from "../mod.ts";
import { readFileBytes } from "../data/atomic.ts";
import { loadNpy, NpyError, parseNpy, saveNpy, serializeNpy } from "../data/npy.ts";
import { tensorBytes } from "../data/safetensors.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import { runs } from "./ref.ts";

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/io/${name}`, import.meta.url));
type Expected = {
  shape: number[];
  descr: string;
  fortran: boolean;
  values: (number | string)[];
  bits?: number[];
  bf16?: boolean;
};
const expected = (JSON.parse(await readFile(fixture("expected.json"), "utf8")) as {
  npy: Record<string, Expected>;
}).npy;
const num = (v: number | string) => (typeof v === "string" ? Number(v) : v);
// Read up front so that parse errors can be asserted synchronously.
const fixtureBytes = new Map<string, Uint8Array>();
for (const name of Object.keys(expected)) {
  fixtureBytes.set(fixture(name), await readFileBytes(fixture(name)));
}
const DTYPE: Record<string, t.DType> = {
  "<f4": "f32",
  ">f4": "f32",
  "<f8": "f64",
  ">f8": "f64",
  "<f2": "f16",
  "|b1": "bool",
};

const words = async (x: t.Tensor) =>
  Array.from(new Uint16Array((await tensorBytes(x)).slice().buffer));
const same = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((v, i) => v === b[i]);

function throwsNpy(fn: () => unknown, ...fragments: string[]): Error {
  const e = assertThrows(fn, ...fragments);
  assert(e instanceof NpyError, `expected an NpyError, got ${e.name}: ${e.message}`);
  return e;
}

/** An .npy file from header text and data, with the given version's length field. */
function npy(header: string, data: Uint8Array = new Uint8Array(0), version = 1): Uint8Array {
  const h = new TextEncoder().encode(header);
  const pre = version === 1 ? 10 : 12;
  const out = new Uint8Array(pre + h.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const dv = new DataView(out.buffer);
  if (version === 1) dv.setUint16(8, h.length, true);
  else dv.setUint32(8, h.length, true);
  out.set(h, pre);
  out.set(data, pre + h.length);
  return out;
}
const hdr = (descr: string, shape: string, fortran = "False") =>
  `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }\n`;

test("npy: every numpy-written fixture decodes to numpy's values in C order", async () => {
  for (const [name, e] of Object.entries(expected)) {
    if (name === "i64_big.npy") continue;
    const x = await loadNpy(fixture(name), { bf16: e.bf16 });
    assertEquals(x.shape, e.shape, name);
    assertEquals(x.dtype, e.bf16 ? "bf16" : DTYPE[e.descr] ?? "i32", name);
    if (e.bf16) assertEquals(await words(x), e.values, `${name} words`);
    else assertClose(await x.data(), e.values.map(num), { rtol: 0, atol: 0, msg: name });
    if (e.bits) assertEquals(await words(x), e.bits, `${name} bits`);
  }
  assert(Object.is((await (await loadNpy(fixture("f32_c.npy"))).data())[1], -0), "-0 survives");
  assertEquals(
    expected["f64_fortran.npy"].fortran && expected["f8_be_fortran.npy"].fortran &&
      expected["i32_fortran.npy"].fortran,
    true,
  );
  // Without { bf16: true }, '<u2' is plain unsigned integers.
  const u2 = await loadNpy(fixture("bf16_u2.npy"));
  assertEquals([u2.dtype, Array.from(await u2.data())], ["i32", expected["bf16_u2.npy"].values]);
  const asF32 = await loadNpy(fixture("bf16_u2.npy"), { bf16: true, dtype: "f32" });
  assertEquals(asF32.dtype, "f32");
  assertEquals(Array.from(await asF32.data()).slice(0, 2), [1, -2.5]);
});

test("npy: int64 beyond i32 is an error unless read as a float", async () => {
  const path = fixture("i64_big.npy");
  const e = assertThrows(
    () => parseNpy(fixtureBytes.get(path)!, path),
    "i64_big.npy",
    "element 1",
    "1099511627776",
    "i32 range",
  );
  assert(e instanceof NpyError, e.name);
  const x = await loadNpy(path, { dtype: "f64" });
  assertEquals([x.dtype, Array.from(await x.data())], ["f64", [1, 2 ** 40]]);
  // As a float, exact up to ±2^53; one past it would round, so it is an error naming the element.
  const big = (v: bigint) =>
    npy(hdr("<i8", "(2,)"), new Uint8Array(new BigInt64Array([-(2n ** 53n), v]).buffer));
  assertEquals(Array.from(await parseNpy(big(2n ** 53n), "ok.npy", { dtype: "f64" }).data()), [
    -(2 ** 53),
    2 ** 53,
  ]);
  throwsNpy(
    () => parseNpy(big(2n ** 53n + 1n), "b.npy", { dtype: "f64" }),
    "b.npy",
    "element 1",
    "9007199254740993",
    "beyond ±2^53",
  );
});

test("npy: our writer matches numpy.save byte for byte", async () => {
  for (
    const name of [
      "f32_c.npy",
      "f16.npy",
      "bool.npy",
      "i32.npy",
      "f64_scalar.npy",
      "f32_empty.npy",
      "bf16_u2.npy",
    ]
  ) {
    const bytes = fixtureBytes.get(fixture(name))!;
    const x = parseNpy(bytes, name, { bf16: expected[name].bf16 });
    assert(same(await serializeNpy(x), bytes), `${name}: bytes differ`);
  }
  // A Fortran-order file is written back in C order with the same values.
  const f = await loadNpy(fixture("f64_fortran.npy"));
  const back = parseNpy(await serializeNpy(f));
  assertEquals(Array.from(await back.data()), Array.from(await f.data()));
});

test("npy: bit-exact round trips of every dtype, views, scalars, empties", async () => {
  const f16Words = new Uint16Array([
    0x0000,
    0x8000,
    0x0001,
    0x7bff,
    0x7c00,
    0xfc00,
    0x7c01,
    0xfe3f,
  ]);
  const bf16Words = new Uint16Array([0x3f80, 0x0001, 0x7f80, 0x7f81, 0xffff, 0x8000]);
  const cases: [string, t.Tensor][] = [
    [
      "f32",
      t.tensor(new Float32Array([0, -0, 1e-45, NaN, Infinity, -Infinity]), { shape: [3, 2] }),
    ],
    ["f64", t.tensor(new Float64Array([Math.E, 5e-324, NaN, -0]), { shape: [2, 1, 2] })],
    ["f16", t.tensor(f16Words, { dtype: "f16", shape: [2, 4] })],
    ["bf16", t.tensor(bf16Words, { dtype: "bf16", shape: [6] })],
    ["i32", t.tensor(new Int32Array([-2147483648, 2147483647, 0]))],
    ["bool", t.tensor([true, false, true, true])],
    ["scalar", t.scalar(-3, "i32")],
    ["empty", t.zeros([2, 0], "f16")],
    ["f16T", t.transpose(t.tensor(f16Words, { dtype: "f16", shape: [2, 4] }))],
    ["f32T", t.transpose(t.reshape(t.arange(0, 6, 1, "f32"), [2, 3]))],
    [
      "bcast",
      t.broadcastTo(t.tensor(new Uint16Array([0x7e01, 0x0002]), { dtype: "bf16", shape: [1, 2] }), [
        3,
        2,
      ]),
    ],
  ];
  for (const [name, x] of cases) {
    const y = parseNpy(await serializeNpy(x), name, { bf16: x.dtype === "bf16" });
    assertEquals([y.dtype, y.shape], [x.dtype, x.shape], name);
    assertEquals(
      Array.from(await tensorBytes(y)),
      Array.from(await tensorBytes(x)),
      `${name} bytes`,
    );
  }
  assertEquals(await words(cases[8][1]), [
    0x0000,
    0x7c00,
    0x8000,
    0xfc00,
    0x0001,
    0x7c01,
    0x7bff,
    0xfe3f,
  ]);
  // The data starts on a 64-byte boundary, as numpy lays it out.
  const b = await serializeNpy(cases[0][1]);
  assertEquals((b.length - 24) % 64, 0);
  // A header too long for version 1.0 switches to 2.0 (numpy does the same).
  const deep = t.zeros(new Array(22000).fill(1), "f32");
  const v2 = await serializeNpy(deep);
  assertEquals(v2[6], 2);
  assertEquals(parseNpy(v2).shape.length, 22000);
});

test("npy: saveNpy/loadNpy through the file system", async () => {
  const dir = await mkdtemp(join(tmpdir(), "npy-test-"));
  try {
    const path = join(dir, "x.npy");
    await saveNpy(path, t.tensor([[1, 2, 3]]));
    await saveNpy(path, t.tensor([[4, 5, 6]], { dtype: "f64" }));
    const x = await loadNpy(path);
    assertEquals([x.dtype, x.shape, Array.from(await x.data())], ["f64", [1, 3], [4, 5, 6]]);
    assertEquals(await readdir(dir), ["x.npy"]);
    let msg = "";
    await loadNpy(join(dir, "missing.npy")).catch((e) => (msg = (e as Error).message));
    assert(msg.includes("missing.npy"), msg);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("npy: truncation at every length is an NpyError", () => {
  for (const name of ["f32_c.npy", "v3.npy", "f8_be_fortran.npy"]) {
    const file = fixtureBytes.get(fixture(name))!;
    for (let len = 0; len < file.length; len++) {
      throwsNpy(() => parseNpy(file.subarray(0, len), "cut.npy"), "cut.npy: ");
    }
    // Trailing bytes are an error too: the data length must be exact.
    throwsNpy(() => parseNpy(new Uint8Array([...file, 0]), "long.npy"), "long.npy", "needs");
  }
});

test("npy: malformed input gives messages that name the field and byte", () => {
  const f4 = new Uint8Array(8);
  parseNpy(npy(hdr("<f4", "(2,)"), f4)); // the baseline parses
  throwsNpy(
    () => parseNpy(new Uint8Array([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x5a, 1, 0]), "a.npy"),
    "a.npy: not an npy file: byte 5",
  );
  throwsNpy(() => parseNpy(new TextEncoder().encode("PK\x03\x04 a zip file"), "z.npy"), "byte 0");
  const v = (major: number, minor: number) => {
    const b = npy(hdr("<f4", "(2,)"), f4);
    b[6] = major;
    b[7] = minor;
    return b;
  };
  throwsNpy(() => parseNpy(v(4, 0)), "unsupported format version 4.0", "bytes 6..8");
  throwsNpy(() => parseNpy(v(1, 1)), "version 1.1");
  const past = npy(hdr("<f4", "(2,)"), f4);
  past[8] = 0xff;
  throwsNpy(
    () => parseNpy(past, "p.npy"),
    "p.npy: header length",
    "at byte 8",
    "points past the end",
  );
  const hugeV2 = npy(hdr("<f4", "(2,)"), f4, 2);
  new DataView(hugeV2.buffer).setUint32(8, 0xffffffff, true);
  throwsNpy(() => parseNpy(hugeV2), "header length 4294967295", "exceeds");
  parseNpy(npy(hdr("<f4", "(2,)"), f4, 2));
  parseNpy(npy(hdr("<f4", "(2,)"), f4, 3));
  const badUtf8 = npy(hdr("<f4", "(2,)") + "\xff", f4, 3);
  badUtf8[12 + hdr("<f4", "(2,)").length] = 0xff;
  throwsNpy(() => parseNpy(badUtf8), "not valid UTF-8");

  const bad = (header: string, ...frags: string[]) =>
    throwsNpy(() => parseNpy(npy(header, f4), "m.npy"), "m.npy: ", ...frags);
  bad("", "expected a dict", "at byte 10");
  bad(
    "{'descr': '<f4', 'fortran_order': False}",
    "keys must be exactly",
    "'descr', 'fortran_order'",
  );
  bad(
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
    "keys must be exactly",
    "'extra'",
  );
  bad(
    "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    'duplicate key "descr"',
    "at byte 27",
  );
  bad(
    "{'descr': '<f4', 'fortran_order': False, 'shape': __import__('os').system('true')}",
    'unexpected "_"',
    "at byte 60",
  );
  bad(
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk",
    'unexpected "j" after the dict',
  );
  bad("{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", 'expected "," or "}"');
  bad(
    "{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}",
    'expected "," or "}", found "f" at byte 27',
  );
  bad("{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}", 'expected ":", found "\'"');
  bad(
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)",
    'expected "," or "}", found the end of the header',
  );
  bad("{'descr': '<f4', 3: 1}", 'expected a string key, found "3"');
  bad("{'descr': '<f4\n', 'fortran_order': False, 'shape': (2,)}", "unterminated string");
  bad("{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (2,)}", "unsupported escape");
  bad(hdr("<f4", "(-2,)"), "shape[0] is -2, not a non-negative integer");
  bad(hdr("<f4", "(2.5,)"), "only integers are allowed");
  bad(hdr("<f4", "(1e3,)"), "only integers are allowed");
  bad(hdr("<f4", "[2]"), "shape must be a tuple", "[2]");
  bad(hdr("<f4", "(2)"), "shape must be a tuple", "got 2");
  bad(hdr("<f4", "(2, 'a')"), "shape[1] is 'a'");
  bad(hdr("<f4", "(99999999999999999999,)"), "shape[0] is 100000000000000000000");
  bad(hdr("<f4", "(2,)", "'no'"), "fortran_order must be True or False, got 'no'");
  bad(hdr("<f4", "(2,)", "1"), "fortran_order must be True or False, got 1");
  bad(hdr("<c8", "(1,)"), "unsupported descr '<c8'");
  bad(hdr("|f4", "(2,)"), 'byte order "|" is only for 1-byte types');
  bad(hdr("<U3", "(2,)"), "unsupported descr");
  bad(
    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
    "descr [('a', '<f4')] is not supported",
  );
  bad(
    `{'descr': ${"[".repeat(40)}${"]".repeat(40)}, 'fortran_order': False, 'shape': (2,)}`,
    "nesting deeper than 32",
  );
  bad(hdr("<f4", "(3,)"), "data is 8 bytes", "file bytes", "shape (3,) '<f4' needs 12");
  bad(hdr("<f4", "(1,)"), "needs 4");
  bad(hdr("<f8", "(4503599627370496, 4503599627370496)"), "needs at least");
  // Zero elements: any other dims are fine and no data is needed.
  assertEquals(parseNpy(npy(hdr("<f4", "(4503599627370496, 0)"))).shape, [4503599627370496, 0]);
  // Python 2 longs and spacing variations are accepted.
  assertEquals(parseNpy(npy('{"descr":"<f4","fortran_order":False,"shape":(2L,)}', f4)).shape, [2]);
  assertEquals(
    parseNpy(npy("{'shape': ( 1 , 2 ), 'fortran_order': True, 'descr': '<f4'}   \n\n", f4)).shape,
    [1, 2],
  );
  assertEquals(parseNpy(npy(hdr("=f4", "(2,)"), f4)).dtype, "f32");
  assertEquals(
    parseNpy(npy(hdr("<i2", "(4,)"), new Uint8Array([0xff, 0xff, 1, 0, 0, 0x80, 0, 0]))).dataSync(),
    new Int32Array([-1, 1, -32768, 0]),
  );
  assertEquals(
    Array.from(
      parseNpy(npy(hdr("<u4", "(2,)"), new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0x80]), 1), "u.npy", {
        dtype: "f64",
      }).dataSync(),
    ),
    [5, 2 ** 31],
  );
  throwsNpy(
    () => parseNpy(npy(hdr("<u4", "(2,)"), new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0x80])), "u.npy"),
    "'<u4' element 1 (file byte",
    "2147483648",
  );
  const boolish = parseNpy(npy(hdr("|b1", "(3,)"), new Uint8Array([0, 2, 255])), "b.npy");
  assertEquals(Array.from(boolish.dataSync()), [0, 1, 1]);
});

// ---- fuzzing ----

function checkParse(bytes: Uint8Array): void {
  let x: t.Tensor;
  try {
    x = parseNpy(bytes, "fuzz.npy", { bf16: bytes.length % 2 === 0 });
  } catch (e) {
    assert(e instanceof NpyError, `threw ${(e as Error).name}: ${(e as Error).message}`);
    assert((e as Error).message.startsWith("fuzz.npy: "), "message names the source");
    return;
  }
  assertEquals(x.size, x.shape.reduce((a, b) => a * b, 1));
  assertEquals(x.dataSync().length, x.size);
  x.dispose();
}

test("npy: fuzzed files parse or throw NpyError, nothing else", async () => {
  const bases = [
    fixtureBytes.get(fixture("f64_fortran.npy"))!,
    fixtureBytes.get(fixture("v3.npy"))!,
    await serializeNpy(t.tensor([[true, false], [true, true]])),
    await serializeNpy(t.tensor(new Uint16Array([0x3f80, 0x7fc0, 1]), { dtype: "bf16" })),
  ];
  const mutated = fc.nat({ max: bases.length - 1 }).chain((k) => {
    const base = bases[k];
    const pos = fc.nat({ max: base.length - 1 });
    return fc.oneof(
      fc.array(fc.tuple(pos, fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }).map(
        (flips) => {
          const m = base.slice();
          for (const [i, v] of flips) m[i] = v;
          return m;
        },
      ),
      // characters that matter to the dict parser, inside the header
      fc.array(
        fc.tuple(
          fc.integer({ min: 10, max: 60 }),
          fc.constantFrom(..."0123456789-.,:()[]{}'\"TFL \n\\"),
        ),
        { minLength: 1, maxLength: 4 },
      ).map((edits) => {
        const m = base.slice();
        for (const [i, c] of edits) m[i] = c.charCodeAt(0);
        return m;
      }),
      pos.map((n) => base.slice(0, n)),
      fc.tuple(pos, fc.nat({ max: 16 }), fc.uint8Array({ maxLength: 16 })).map(([i, del, ins]) =>
        new Uint8Array([
          ...base.subarray(0, i),
          ...ins,
          ...base.subarray(Math.min(base.length, i + del)),
        ])
      ),
    );
  });
  fc.assert(fc.property(mutated, checkParse), { numRuns: runs(300) });
});

test("npy: random header token soup parses or throws NpyError", () => {
  const token = fc.constantFrom(
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    " ",
    "'descr'",
    "'fortran_order'",
    "'shape'",
    "'<f4'",
    "'|b1'",
    "'>f8'",
    "'<u2'",
    "True",
    "False",
    "None",
    "0",
    "1",
    "2",
    "-1",
    "3L",
    "1.5",
    "'",
    '"',
    "\\",
    "\n",
    "Truex",
  );
  const grammarish = fc.tuple(
    fc.constantFrom("'<f4'", "'|b1'", "'>f8'", "'<u2'", "'<i8'", "'<f2'", "'x'"),
    fc.constantFrom("True", "False"),
    fc.array(fc.oneof(fc.nat({ max: 3 }), fc.constantFrom(-1, 0)), { maxLength: 3 }),
    fc.boolean(),
  ).map(([d, f, s, trailing]) =>
    `{'descr': ${d}, 'fortran_order': ${f}, 'shape': (${s.join(", ")}${
      s.length === 1 || trailing ? "," : ""
    }), }`
  );
  const header = fc.oneof(fc.array(token, { maxLength: 30 }).map((ts) => ts.join("")), grammarish);
  fc.assert(
    fc.property(
      header,
      fc.uint8Array({ maxLength: 48 }),
      fc.constantFrom(1, 2, 3),
      (h, data, version) => checkParse(npy(h, data, version)),
    ),
    { numRuns: runs(300) },
  );
});
