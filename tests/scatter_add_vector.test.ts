/**
 * scatterAdd into a vector from contiguous index and update vectors (∂b_enc, the features that
 * fired) takes a one-loop path: the same bits as adding in index order with f32 rounding after
 * each add (the generic kernel's order), ints exact, and a bad index named.
 */
import { assert, test } from "./harness.ts";
import * as t from "../mod.ts";

test("vector scatterAdd: index order, rounded after each add, as the generic kernel", () => {
  const n = 37, m = 5000;
  const idx = Int32Array.from({ length: m }, (_, i) => (i * 7919) % n);
  const upd = Float32Array.from({ length: m }, (_, i) => Math.fround(Math.sin(i) * 10 ** (i % 5)));
  const base = Float32Array.from({ length: n }, (_, i) => i / 3);
  const got = t.scatterAdd(
    t.tensor(base, { shape: [n] }),
    t.tensor(idx, { shape: [m], dtype: "i32" }),
    t.tensor(upd, { shape: [m] }),
    0,
  ).dataSync();
  const want = Float32Array.from(base);
  for (let i = 0; i < m; i++) want[idx[i]] += upd[i];
  for (let j = 0; j < n; j++) assert(Object.is(got[j], want[j]), `[${j}]: ${got[j]} vs ${want[j]}`);
  // The generic kernel (a strided update vector takes it) agrees bit for bit.
  const wide = t.tensor(Float32Array.from({ length: 2 * m }, (_, i) => upd[i >> 1]), {
    shape: [m, 2],
  });
  const strided = t.squeeze(t.sliceAxis(wide, 1, 0, 1), 1);
  assert(!strided.isContiguous(), "the update is a strided view");
  const generic = t.scatterAdd(
    t.tensor(base, { shape: [n] }),
    t.tensor(idx, { shape: [m], dtype: "i32" }),
    strided,
    0,
  ).dataSync();
  for (let j = 0; j < n; j++) assert(Object.is(generic[j], got[j]), `generic [${j}]`);
  const ints = t.scatterAdd(
    t.zeros([n], "i32"),
    t.tensor(idx, { shape: [m], dtype: "i32" }),
    t.ones([m], "i32"),
    0,
  ).dataSync();
  assert(Array.from(ints).reduce((a, b) => a + b, 0) === m, "integer counts are exact");
});

test("vector scatterAdd: an index out of range is named", () => {
  let message = "";
  try {
    t.scatterAdd(t.zeros([4]), t.tensor([1, 4], { dtype: "i32" }), t.ones([2]), 0);
  } catch (e) {
    message = String(e);
  }
  assert(/scatterAdd: index 4 is out of range for an axis of size 4/.test(message), message);
});
