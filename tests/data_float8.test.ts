// safetensors F8_E4M3 / F8_E5M2 (read-only, decoded to f32): values fixed by the formats'
// definitions (OCP FP8: E4M3FN without infinities, E5M2 with them), monotonic code order, and a
// hand-built file read through loadSafetensors.
import { parseSafetensors, toTensor } from "../data/safetensors.ts";
import { E4M3, E5M2 } from "../data/float8.ts";
import { assert, assertEquals, test } from "./harness.ts";

test("float8: E4M3FN and E5M2 code points from the format definitions", () => {
  const e4: [number, number][] = [
    [0x38, 1],
    [0xc0, -2],
    [0x7e, 448],
    [0xfe, -448],
    [0x01, 2 ** -9],
    [0x08, 2 ** -6],
    [0x00, 0],
    [0x3c, 1.5],
  ];
  for (const [b, v] of e4) assertEquals([b, E4M3[b]], [b, v]);
  assert(Number.isNaN(E4M3[0x7f]) && Number.isNaN(E4M3[0xff]), "S.1111.111 is NaN in E4M3FN");
  assertEquals(E4M3.filter((v) => !Number.isFinite(v)).length, 2, "no infinities in E4M3FN");
  const e5: [number, number][] = [
    [0x3c, 1],
    [0xc0, -2],
    [0x7b, 57344],
    [0x7c, Infinity],
    [0xfc, -Infinity],
    [0x01, 2 ** -16],
    [0x04, 2 ** -14],
  ];
  for (const [b, v] of e5) assertEquals([b, E5M2[b]], [b, v]);
  assert(Number.isNaN(E5M2[0x7d]) && Number.isNaN(E5M2[0x7f]), "E5M2 NaNs");
  // Positive codes in increasing order give increasing values (up to the specials).
  for (const [t, last] of [[E4M3, 0x7e], [E5M2, 0x7c]] as const) {
    for (let b = 1; b <= last; b++) assert(t[b] > t[b - 1], `code ${b}`);
  }
});

test("float8: safetensors F8 tensors read as f32", async () => {
  const header = JSON.stringify({
    a: { dtype: "F8_E4M3", shape: [2, 2], data_offsets: [0, 4] },
    b: { dtype: "F8_E5M2", shape: [3], data_offsets: [4, 7] },
  });
  const h = new TextEncoder().encode(header.padEnd(Math.ceil(header.length / 8) * 8, " "));
  const file = new Uint8Array(8 + h.length + 7);
  new DataView(file.buffer).setBigUint64(0, BigInt(h.length), true);
  file.set(h, 8);
  file.set([0x38, 0xc0, 0x7e, 0x01, 0x3c, 0x7c, 0x7b], 8 + h.length);
  const p = parseSafetensors(file, "f8.safetensors");
  const a = toTensor(p.tensors.get("a")!), b = toTensor(p.tensors.get("b")!);
  assertEquals([a.dtype, a.shape, Array.from(await a.data())], ["f32", [2, 2], [
    1,
    -2,
    448,
    2 ** -9,
  ]]);
  assertEquals(Array.from(await b.data()), [1, Infinity, 57344]);
  a.dispose(), b.dispose();
});
