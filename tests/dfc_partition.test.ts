// DFC partitions (sae/crosscoder/partition.ts): the documented sizes, and for random F and shares the sets
// are disjoint, cover every feature once and have sizes floor(F·p); malformed partitions are
// named field by field; the integrity check honours its tolerance and sees NaN.
import fc from "fast-check";
import * as t from "../mod.ts";
import {
  checkPartition,
  featureOwner,
  makePartition,
  PartitionError,
  partitionSizes,
  verifyPartitionIntegrity,
} from "../sae/crosscoder/partition.ts";
import { partitionArb } from "../testing/mod.ts";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";

test("dfc partition: F = 131072 at 5%/5% gives 6553, 6553 and 117966 in the reference layout", () => {
  const p = makePartition(131072, [0.05, 0.05]);
  assertEquals(partitionSizes(p), { exclusive: [6553, 6553], shared: 117966 });
  assertEquals(p.exclusive, [[0, 6553], [6553, 13106]]);
  assertEquals(p.shared, [13106, 131072]);
  // floor(F·p) in doubles, as the reference computes it: 0.29·100 = 28.999999999999996.
  assertEquals(partitionSizes(makePartition(100, [0.29, 0])).exclusive, [28, 0]);
});

test("dfc partition: for random F and shares the sets are disjoint, cover F and have sizes floor(F·p)", () => {
  fc.assert(
    fc.property(partitionArb({ maxInputs: 5 }), ({ partition: p, shares }) => {
      checkPartition(p, p.features, shares.length);
      const owner = featureOwner(p);
      const counts = new Array(shares.length + 1).fill(0);
      for (const o of owner) counts[o < 0 ? shares.length : o]++;
      const sizes = partitionSizes(p);
      shares.forEach((s, l) =>
        assertEquals(sizes.exclusive[l], Math.floor(p.features * s), `input ${l}`)
      );
      assertEquals(counts, [...sizes.exclusive, sizes.shared]);
      assertEquals(counts.reduce((a, b) => a + b, 0), p.features);
      // Each input's set is one contiguous block, in input order, before the shared block.
      for (let i = 1; i < owner.length; i++) {
        assert(
          owner[i] === owner[i - 1] || owner[i] === -1 || owner[i] > owner[i - 1],
          `order at ${i}`,
        );
      }
    }),
    { numRuns: 200 },
  );
});

test("dfc partition: bad shares and malformed partitions are errors naming the field", () => {
  assertThrows(() => makePartition(100, [0.6, 0.5]), "sum to 1.1");
  assertThrows(() => makePartition(100, [-0.1]), "shares[0]");
  assertThrows(() => makePartition(0, [0.1]), "features must be a positive integer");
  const good = makePartition(100, [0.1, 0.2]);
  assertThrows(
    () => checkPartition({ ...good, exclusive: [[0, 10], [9, 30]] }),
    "exclusive[1]",
    "should start at 10",
  );
  assertThrows(() => checkPartition({ ...good, shared: [30, 99] }), "shared", "[30, 100)");
  assertThrows(
    () => checkPartition({ ...good, exclusive: [[0, 10]] }, 100, 2),
    "1 sets for 2 inputs",
  );
  assertThrows(() => checkPartition(good, 64), "the dictionary has 64");
  assertThrows(() => checkPartition({ ...good, exclusive: [[0, "10"], [10, 30]] }), "exclusive[0]");
  assert(assertThrows(() => checkPartition(null)) instanceof PartitionError);
});

test("dfc partition: verifyPartitionIntegrity reports per input, honours tolerance and fails on NaN", async () => {
  const p = makePartition(10, [0.2, 0.3]); // A-only [0,2), B-only [2,5), shared [5,10)
  const L = 2, d = 3, F = 10;
  const enc = new Float32Array(L * d * F).fill(1), dec = new Float32Array(L * F * d).fill(1);
  for (let l = 0; l < L; l++) {
    for (const [a, b] of p.exclusive.filter((_, m) => m !== l)) {
      for (let i = a; i < b; i++) {
        for (let j = 0; j < d; j++) enc[(l * d + j) * F + i] = 0, dec[(l * F + i) * d + j] = 0;
      }
    }
  }
  const check = async (e: Float32Array, dd: Float32Array, tolerance?: number) =>
    await verifyPartitionIntegrity(
      { W_enc: t.tensor(e, { shape: [L, d, F] }), W_dec: t.tensor(dd, { shape: [L, F, d] }) },
      p,
      tolerance === undefined ? {} : { tolerance },
    );
  const ok = await check(enc, dec);
  assert(ok.ok && ok.max === 0, JSON.stringify(ok));
  const e2 = enc.slice();
  e2[(1 * d + 2) * F + 1] = -0.003; // input 1 (B) on A-only feature 1
  const r = await check(e2, dec);
  assert(!r.ok, "a forbidden 0.003 must fail at tolerance 0");
  assertEquals(r.inputs.map((i) => [i.encoderMax, i.decoderMax]), [[0, 0], [
    Math.fround(0.003),
    0,
  ]]);
  assert((await check(e2, dec, 0.01)).ok, "tolerance 0.01 accepts 0.003");
  const d2 = dec.slice();
  d2[(0 * F + 3) * d + 0] = NaN; // input 0 (A) on B-only feature 3
  const n = await check(enc, d2, 1e9);
  assert(!n.ok && Number.isNaN(n.inputs[0].decoderMax), "NaN must never pass");
  await (async () => {
    try {
      await verifyPartitionIntegrity({ W_enc: t.zeros([L, d, 8]), W_dec: t.zeros([L, F, d]) }, p);
    } catch (e) {
      assert(String(e).includes("W_enc must be [2, d, 10]"), String(e));
      return;
    }
    throw new Error("a mis-shaped W_enc must be an error");
  })();
});
