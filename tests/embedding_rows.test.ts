/**
 * The CPU backend's row paths for an embedding lookup (gather along axis 0 with one index per row)
 * and its gradient (scatterAdd of rows): the same bits as a plain reference that sums in index
 * order, repeated ids included, and an out-of-range id still named.
 */
import * as t from "../mod.ts";
import { assertEquals, assertThrows, test } from "./harness.ts";

const V = 37, d = 19, n = 64;
const ids = Array.from({ length: n }, (_, i) => (i * 11) % V); // every id, most twice
const tableValues = Array.from({ length: V * d }, (_, i) => Math.sin(0.3 * i));
const gValues = Array.from({ length: n * d }, (_, i) => Math.cos(0.7 * i));

for (const dtype of ["f32", "f64"] as const) {
  test(`embedding rows: take and its gradient give the reference's bits (${dtype})`, () => {
    const table = t.tensor(tableValues, { shape: [V, d], dtype });
    const idx = t.tensor(ids, { dtype: "i32" });
    const Arr = dtype === "f32" ? Float32Array : Float64Array;
    const tab = Arr.from(tableValues), g = Arr.from(gValues);
    const rows = new Arr(n * d), sums = new Arr(V * d);
    ids.forEach((j, i) => {
      for (let c = 0; c < d; c++) {
        rows[i * d + c] = tab[j * d + c];
        sums[j * d + c] += g[i * d + c];
      }
    });
    const [y, back] = t.vjp((w: t.Tensor) => t.take(w, idx, 0), table);
    assertEquals(Array.from(y.dataSync()), Array.from(rows));
    const [gw] = back(t.tensor(gValues, { shape: [n, d], dtype }));
    assertEquals(Array.from(gw.dataSync()), Array.from(sums));
  });
}

test("embedding rows: an id outside the table is named", () => {
  const table = t.tensor(tableValues, { shape: [V, d] });
  assertThrows(() => t.take(table, t.tensor([3, V], { dtype: "i32" }), 0), `index ${V}`);
});
