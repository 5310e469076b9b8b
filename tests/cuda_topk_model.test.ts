/**
 * The top-k kernels' algorithm (tensor/cuda/kernels/select.ts), step for step in TypeScript, checked
 * against the cpu backend's top-k on rows with ties, NaN, ±0 and ±∞: order-preserving keys with the
 * reversed index as tie-break, one 8-bit digit per pass with a histogram of the elements matching
 * the prefix so far, the pick of the digit holding the k-th key, collection of the k winners and
 * their rank by counting. A GPU run checks the CUDA code itself; this checks the method.
 */
import fc from "fast-check";
import { assertEquals, test } from "./harness.ts";
import * as t from "../mod.ts";
import { indexDigits } from "../tensor/cuda/kernels/select.ts";

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/** fkey of the kernels: NaN highest, -0 as +0, sign-flipped bits otherwise. */
function fkey(v: number): bigint {
  if (Number.isNaN(v)) return 0xffffffffn;
  f32[0] = v === 0 ? 0 : v;
  const u = u32[0];
  return BigInt((u >>> 31 ? ~u : u ^ 0x80000000) >>> 0);
}

function modelTopk(row: Float32Array, k: number): { values: number[]; indices: number[] } {
  const n = row.length, vd = 4, id = indexDigits(n);
  const key = Array.from(row, fkey), lo = Array.from(row, (_, j) => n - 1 - j);
  const s = { key: 0n, lo: 0, need: k };
  for (let pass = 0; pass < vd + id; pass++) {
    const hist = new Array<number>(256).fill(0);
    for (let j = 0; j < n; j++) {
      // tk_digit
      let digit: number;
      if (pass < vd) {
        const sh = BigInt(8 * (vd - 1 - pass));
        if (pass > 0 && key[j] >> (sh + 8n) !== s.key >> (sh + 8n)) continue;
        digit = Number((key[j] >> sh) & 255n);
      } else {
        const q = pass - vd, sh = 8 * (id - 1 - q);
        if (key[j] !== s.key) continue;
        if (q > 0 && Math.floor(lo[j] / 2 ** (sh + 8)) !== Math.floor(s.lo / 2 ** (sh + 8))) {
          continue;
        }
        digit = Math.floor(lo[j] / 2 ** sh) & 255;
      }
      hist[digit]++;
    }
    // topk_pick
    let above = 0, b = 255;
    for (; b > 0; b--) {
      if (above + hist[b] >= s.need) break;
      above += hist[b];
    }
    s.need -= above;
    if (pass < vd) s.key |= BigInt(b) << BigInt(8 * (vd - 1 - pass));
    else s.lo += b * 2 ** (8 * (id - 1 - (pass - vd)));
  }
  // topk_collect, then topk_rank
  const sel: number[] = [];
  for (let j = 0; j < n; j++) {
    if (key[j] > s.key || (key[j] === s.key && lo[j] >= s.lo)) sel.push(j);
  }
  assertEquals(sel.length, k, "exactly k winners");
  const values = new Array<number>(k), indices = new Array<number>(k);
  for (const j of sel) {
    let rank = 0;
    for (const i of sel) rank += +(key[i] > key[j] || (key[i] === key[j] && lo[i] > lo[j]));
    values[rank] = row[j];
    indices[rank] = j;
  }
  return { values, indices };
}

const special = fc.constantFrom(0, -0, 1, -1, Infinity, -Infinity, NaN, 2.5, 1e-40);

test("cuda top-k method: radix selection with index tie-break equals the cpu top-k", async () => {
  const rows = fc.integer({ min: 1, max: 600 }).chain((n) =>
    fc.tuple(
      fc.array(fc.oneof(special, fc.integer({ min: -3, max: 3 }), fc.float({ noNaN: false })), {
        minLength: n,
        maxLength: n,
      }),
      fc.integer({ min: 1, max: n }),
    )
  );
  await fc.assert(
    fc.asyncProperty(rows, async ([vals, k]) => {
      const row = Float32Array.from(vals);
      const got = modelTopk(row, k);
      const [v, i] = t.topk(t.tensor(row, { shape: [1, row.length] }), k);
      assertEquals(got.indices, [...(await i.data())], "indices");
      assertEquals(got.values.map(String), [...(await v.data())].map(String), "values");
      t.dispose([v, i]);
    }),
    { numRuns: 300 },
  );
  // Rows long enough for three index digits.
  const long = Float32Array.from({ length: 70_000 }, (_, j) => (j * 7919) % 1000);
  const [v, i] = t.topk(t.tensor(long, { shape: [1, long.length] }), 50);
  assertEquals(modelTopk(long, 50).indices, [...(await i.data())]);
  t.dispose([v, i]);
});
