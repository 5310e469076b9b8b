// Files written by the Python tools (fixtures from tests/golden/data_reference.py and
// tests/fixtures/data/make_saelens_cache.ts): torch.save archives through the safe unpickler,
// dictionary_learning / sparsify dictionaries converted to our layout and checked against the
// packages' own encode/decode formulas, dictionary_learning memmap caches, SAELens Arrow caches.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import * as t from "../mod.ts";
import { loadDictionary } from "../sae/io/dictionary_formats.ts";
import { memmapCacheStream, tokensPath } from "../data/memmap_cache.ts";
import { PickleError, type PyValue, unpickle } from "../data/pickle.ts";
import type { RowStream } from "../data/row_stream.ts";
import { saelensCacheStream } from "../data/saelens_cache.ts";
import { loadTorch, parseTorch, TorchFileError } from "../data/torch_pt.ts";
import { crc32, readZip } from "../data/zip.ts";
import { architecture } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

const fx = (p: string) => fileURLToPath(new URL(`./fixtures/data/${p}`, import.meta.url));
const expected = JSON.parse(await readFile(fx("expected.json"), "utf8"));
const all = (s: RowStream, withTokens = false) => {
  const xs: number[] = [], ids: number[] = [];
  for (let it = s.open(), r = it.next(); !r.done; r = it.next()) {
    xs.push(...r.value.x.subarray(0, r.value.rows * s.rowShape.reduce((a, b) => a * b, 1)));
    if (withTokens) ids.push(...r.value.tokenIds!);
  }
  return { xs, ids };
};

test("torch.save: dtypes, a transposed view, shared storage, nested dicts, plain ints", async () => {
  const { tensors, other } = await loadTorch(fx("misc.pt"));
  const e = expected.misc;
  const get = async (k: string) => Array.from(await tensors[k].data());
  assertEquals(tensors.f16.dtype, "f16");
  assertEquals(await get("f16"), e.f16);
  assertEquals(tensors.bf16.dtype, "bf16");
  assertEquals(await get("bf16"), e.bf16);
  assertEquals([tensors.f64.dtype, ...tensors.f64.shape], ["f64", 1, 2]);
  assertEquals(await get("f64"), e.f64);
  assertEquals([tensors.i64.dtype, ...(await get("i64"))], ["i32", ...e.i64]);
  assertEquals([tensors.bool.dtype, ...(await get("bool"))], ["bool", ...e.bool]);
  assertEquals(tensors.transposed.shape, e.transposed_shape);
  assertEquals(await get("transposed"), e.transposed);
  assertEquals(await get("shared_row"), e.shared_row);
  assertEquals(await get("nested.w"), [1, 1]);
  assertEquals(other, { count: 3 });
  t.dispose(Object.values(tensors));
  // int64 that does not fit i32 is refused unless asked for as a float.
  const tok = await loadTorch(fx("dl_cache/tokens.pt"), { dtype: "f64" });
  assertEquals(Array.from(await tok.tensors[""].data()), expected["dl_cache/tokens"]);
  tok.tensors[""].dispose();
});

for (const arch of ["relu", "gated", "jumprelu", "topk", "batchtopk", "matryoshka"]) {
  test(`dictionary_learning ${arch}: ae.pt converts to our layout; codes and reconstructions match the package's formulas`, async () => {
    const e = expected[`dl_${arch}`];
    const s = await loadDictionary(fx(`dl_${arch}`));
    assertEquals(s.format, "dictionary_learning");
    assertEquals(s.cfg.arch, arch === "relu" ? "relu" : arch);
    assertEquals([s.cfg.d_in, s.cfg.d_sae], [6, 10]);
    if (e.threshold !== undefined) {
      assertClose([s.threshold as number], [e.threshold], { rtol: 1e-6 });
    }
    if (e.groups) assertEquals(s.cfg.matryoshka_groups, e.groups);
    const x = t.tensor(Float32Array.from(e.x), { shape: [4, 6] });
    const a = architecture(s.cfg.arch);
    const code = a.encodeInference(s.params, x, s.cfg, s.threshold);
    assertClose(await toDense(code, s.cfg.d_sae).data(), e.f, {
      rtol: 1e-5,
      atol: 1e-5,
      msg: `${arch} codes`,
    });
    assertClose(await a.decode(s.params, code, s.cfg).data(), e.xhat, {
      rtol: 1e-5,
      atol: 1e-5,
      msg: `${arch} reconstruction`,
    });
    t.dispose([s.params, x]);
  });
}

test("dictionary_learning: a real nn.Module state_dict() (OrderedDict with _metadata set by BUILD) converts to our layout", async () => {
  const e = expected.dl_module_relu;
  // The fixture is what it claims: an OrderedDict whose state ({_metadata: …}) BUILD sets last.
  const bytes = new Uint8Array(await readFile(fx("dl_module_relu/ae.pt")));
  const pkl = [...readZip(bytes, "ae.pt").values()].find((x) => x.name.endsWith("/data.pkl"))!;
  const text = String.fromCharCode(...bytes.subarray(pkl.dataOffset, pkl.dataOffset + pkl.size)); // byte for byte ("latin1" decodes as windows-1252)
  assert(
    text.startsWith("\x80\x02ccollections\nOrderedDict\n") && text.includes("_metadata") &&
      text.endsWith("b."),
    "an OrderedDict pickle ending in BUILD, STOP",
  );
  // _metadata is dropped, not flattened into names or values.
  const { tensors, other } = await loadTorch(fx("dl_module_relu/ae.pt"));
  assertEquals([Object.keys(tensors), other], [[
    "bias",
    "encoder.weight",
    "encoder.bias",
    "decoder.weight",
  ], {}]);
  t.dispose(Object.values(tensors));
  const s = await loadDictionary(fx("dl_module_relu"));
  assertEquals([s.format, s.cfg.arch, s.cfg.d_in, s.cfg.d_sae], [
    "dictionary_learning",
    "relu",
    6,
    10,
  ]);
  assertEquals([s.params.W_enc.shape, s.params.W_dec.shape], [[6, 10], [10, 6]]);
  // The values are the module's own f32 parameters, so they must match exactly.
  for (const k of ["W_enc", "b_enc", "W_dec", "b_dec"] as const) {
    assertEquals(Array.from(await s.params[k]!.data()), e[k], k);
  }
  const x = t.tensor(Float32Array.from(e.x), { shape: [4, 6] });
  const a = architecture("relu");
  const code = a.encodeInference(s.params, x, s.cfg);
  assertClose(await toDense(code, 10).data(), e.f, {
    rtol: 1e-5,
    atol: 1e-5,
    msg: "codes (the module's encode)",
  });
  assertClose(await a.decode(s.params, code, s.cfg).data(), e.xhat, {
    rtol: 1e-5,
    atol: 1e-5,
    msg: "reconstruction (the module's decode)",
  });
  t.dispose([s.params, x]);
});

test("sparsify: sae.safetensors + cfg.json converts to a TopK dictionary that encodes as sparsify does", async () => {
  const e = expected.sparsify;
  const s = await loadDictionary(fx("sparsify/layers.0"));
  assertEquals([s.format, s.cfg.arch, s.cfg.k, s.cfg.d_in, s.cfg.d_sae], [
    "sparsify",
    "topk",
    3,
    6,
    10,
  ]);
  const x = t.tensor(Float32Array.from(e.x), { shape: [4, 6] });
  const a = architecture("topk");
  const code = a.encodeInference(s.params, x, s.cfg);
  assertClose(await toDense(code, 10).data(), e.f, { rtol: 1e-5, atol: 1e-5 });
  assertClose(await a.decode(s.params, code, s.cfg).data(), e.xhat, { rtol: 1e-5, atol: 1e-5 });
  t.dispose([s.params, x]);
});

test("dictionary_learning caches: f32 and bf16 (int16 words) shards, lockstep [N, 2, d], tokens.pt", async () => {
  for (const sub of ["resid_out", "mlp_out"]) {
    const e = expected[`dl_cache/${sub}`];
    const s = memmapCacheStream([fx(`dl_cache/${sub}`)], { chunkRows: 3 });
    assertEquals([s.rows, ...s.rowShape], [13, 5]);
    assertEquals(s.dtype, e.dtype === "bfloat16" ? "bf16" : "f32");
    assertEquals(all(s).xs, e.values);
  }
  const pair = memmapCacheStream([fx("dl_cache/resid_out"), fx("dl_cache/mlp_out")], {
    chunkRows: 5,
  });
  assertEquals(pair.rowShape, [2, 5]);
  const xs = all(pair).xs,
    a = expected["dl_cache/resid_out"].values,
    b = expected["dl_cache/mlp_out"].values;
  for (let i = 0; i < 13; i++) {
    assertEquals(xs.slice(i * 10, i * 10 + 5), a.slice(i * 5, i * 5 + 5));
    assertEquals(xs.slice(i * 10 + 5, i * 10 + 10), b.slice(i * 5, i * 5 + 5));
  }
  const withIds = memmapCacheStream([fx("dl_cache/resid_out"), fx("dl_cache/mlp_out")], {
    chunkRows: 5,
    tokenIds: true,
  });
  assertEquals(all(withIds, true).ids, expected["dl_cache/tokens"]);
  const tp = tokensPath(fx("dl_cache/resid_out"));
  assert(tp !== null, "tokens.pt is found beside the cache");
  const tok = await loadTorch(tp!);
  assertEquals(Array.from(await tok.tensors[""].data()), expected["dl_cache/tokens"]);
  tok.tensors[""].dispose();
});

test("SAELens cache: HF datasets folder, Array2D column, token ids, two files and record batches", () => {
  const s = saelensCacheStream(fx("saelens_cache"), { tokenIds: true });
  assertEquals([s.column, s.context, ...s.rowShape], ["blocks.0.hook_resid_pre", 4, 3]);
  const { xs, ids } = all(s, true);
  assertEquals(xs.length, 7 * 4 * 3);
  assert(xs.every((v, i) => v === i / 4 - 3), "values follow the fixture's formula");
  assertEquals(ids, Array.from({ length: 28 }, (_, i) => 1000 + i));
  assertThrows(
    () => saelensCacheStream(fx("saelens_cache"), { column: "blocks.1" }),
    'no column "blocks.1"',
    "columns: blocks.0.hook_resid_pre, token_ids",
  );
});

test("pickle: opcodes outside the subset and globals not allowed are refused, naming the byte", () => {
  const g = { globals: {}, source: "x.pkl" };
  // GLOBAL os.system + REDUCE: the classic code-execution pickle.
  const evil = new Uint8Array([
    0x80,
    2,
    ...new TextEncoder().encode("cos\nsystem\n"),
    0x58,
    2,
    0,
    0,
    0,
    0x6c,
    0x73,
    0x85,
    0x52,
    0x2e,
  ]);
  const e = assertThrows(
    () => unpickle(evil, g),
    "global os.system is not allowed",
    "x.pkl",
    "REDUCE at byte",
  );
  assert(e instanceof PickleError);
  assertThrows(
    () => unpickle(new Uint8Array([0x80, 2, 0x69, 0x2e]), g),
    "opcode 0x69 at byte 2",
    "not in the allowed subset",
  );
  assertThrows(
    () => unpickle(new Uint8Array([0x80, 2, 0x58, 0xff, 0xff, 0xff, 0x7f]), g),
    "BINUNICODE at byte 2",
    "needs 2147483647 bytes",
  );
  assertThrows(
    () => unpickle(new Uint8Array([0x80, 2, 0x68, 9, 0x2e]), g),
    "memo entry 9 was never stored",
  );
  assertThrows(() => unpickle(new Uint8Array([0x80, 2, 0x30]), g), "stack underflow");
  const ok = unpickle(
    new Uint8Array([0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x4b, 7, 0x73, 0x2e]),
    g,
  ) as Map<string, PyValue>;
  assertEquals([...ok.entries()], [["a", 7]]);
});

test("torch files: corrupt archives and tensor views outside their storage are errors naming the file", async () => {
  const bytes = new Uint8Array(await readFile(fx("dl_topk/ae.pt")));
  const zip = readZip(bytes, "ae.pt");
  const entry = [...zip.values()].find((e) => e.name.endsWith("/data/0"))!;
  const bad = bytes.slice();
  bad[entry.dataOffset] ^= 0xff;
  assertThrows(() => parseTorch(bad, "ae.pt"), "ae.pt", "fails its CRC-32 check");
  assertThrows(() => parseTorch(bytes.subarray(0, 100), "ae.pt"), "ae.pt: not a ZIP archive");
  const e = assertThrows(() => parseTorch(new Uint8Array(30), "z.pt"), "z.pt");
  assert(e instanceof TorchFileError, e.name);
  const pkl = [...zip.values()].find((x) => x.name.endsWith("data.pkl"))!;
  assertEquals(crc32(bytes.subarray(pkl.dataOffset, pkl.dataOffset + pkl.size)), pkl.crc32);
  // Pickled by Python itself: a view past its storage, and a __reduce__ calling os.system.
  const view = await readFile(fx("bad_view.pt"));
  assertThrows(
    () => parseTorch(view, "bad_view.pt"),
    "bad_view.pt",
    "torch._utils._rebuild_tensor_v2",
    "reaches element 99 of a 4-element storage",
  );
  const evil = await readFile(fx("evil.pt"));
  assertThrows(() => parseTorch(evil, "evil.pt"), "evil.pt", "global posix.system is not allowed");
});
