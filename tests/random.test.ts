import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import * as t from "../mod.ts";

test("same key, same numbers; split keys give different streams", async () => {
  const k = t.random.key(3);
  assertEquals(
    Array.from(await t.random.normal(k, [5]).data()),
    Array.from(await t.random.normal(k, [5]).data()),
  );
  const [a, b] = t.random.split(k);
  const na = await t.random.uniform(a, [4]).data(), nb = await t.random.uniform(b, [4]).data();
  assert(na.some((v, i) => v !== nb[i]), "split keys must differ");
  assert(t.random.foldIn(k, 1).words.join() !== t.random.foldIn(k, 2).words.join());
});

test("uniform range, normal moments, dtypes", async () => {
  const u = await t.random.uniform(t.random.key(1), [20000], { min: -2, max: 3 }).data();
  assert(u.every((v) => v >= -2 && v < 3), "uniform stays in [min, max)");
  const n = t.random.normal(t.random.key(2), [40000], { dtype: "f64", mean: 1, std: 2 });
  assertEquals(n.dtype, "f64");
  assertClose(await t.mean(n).data(), [1], { atol: 0.06 });
  assertClose(await t.sqrt(t.variance(n)).data(), [2], { atol: 0.06 });
  assertEquals(t.random.normal(t.random.key(2), [3], { dtype: "bf16" }).dtype, "bf16");
  assertThrows(() => t.random.normal(t.random.key(2), [3], { dtype: "i32" }), "normal", "float");
});

test("bernoulli, randint, categorical, permutation", async () => {
  const b = await t.random.bernoulli(t.random.key(4), 0.3, [20000]).data();
  assertClose([Array.from(b).reduce((s, v) => s + v, 0) / b.length], [0.3], { atol: 0.02 });
  const r = await t.random.randint(t.random.key(5), [1000], -3, 4).data();
  assert(r.every((v) => v >= -3 && v < 4) && new Set(r).size === 7, "randint covers [lo, hi)");
  const logits = t.log(t.tensor([[0.1, 0.6, 0.3]]));
  const draws = t.random.categorical(t.random.key(6), t.broadcastTo(logits, [30000, 3]));
  const counts = await t.sum(t.oneHot(draws, 3), 0).data();
  assertClose(Array.from(counts, (c) => c / 30000), [0.1, 0.6, 0.3], { atol: 0.015 });
  const p = await t.random.permutation(t.random.key(8), 50).data();
  assertEquals([...p].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
  // Permuting rows of a tensor applies the same permutation as permutation(key, n).
  const rows = await t.random.permutation(
    t.random.key(8),
    t.reshape(t.arange(0, 10, 1, "f32"), [5, 2]),
  ).data();
  const p5 = await t.random.permutation(t.random.key(8), 5).data();
  assertEquals(Array.from(rows), Array.from(p5).flatMap((i) => [2 * i, 2 * i + 1]));
});
