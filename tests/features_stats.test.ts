/**
 * Streaming feature statistics: top contexts, histograms, interval samples, per-slice and
 * per-label counts equal a brute-force computation over the whole stream at once, whatever the
 * batch cuts, and a state saved mid-stream and restored continues to the same result.
 */
import fc from "fast-check";
import { assertEquals, assertThrows, test } from "./harness.ts";
import {
  emptyStats,
  featureStats,
  restoreStats,
  statsArrays,
  type StatsShape,
} from "../sae/eval/feature_stats.ts";
import { slotsOf } from "../sae/eval/feature_contexts.ts";
import { binOf, powerOfTwoAbove, sampleKey } from "../sae/eval/feature_distribution.ts";

interface Stream {
  R: number;
  T: number;
  ids: Int32Array;
  codes: Float32Array;
  keep: Uint8Array;
  labels: Int32Array;
}

function makeStream(R: number, T: number, S: number, F: number, seed: number): Stream {
  let s = seed;
  const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const ids = Int32Array.from({ length: R * T }, () => Math.floor(rnd() * 50));
  // Few distinct values (ties are common), about half zero, and a wide range (several doublings).
  const codes = Float32Array.from(
    { length: R * T * S * F },
    () => (rnd() < 0.5 ? 0 : [0.25, 0.5, 0.75, 1, 3, 3.5, 7, 40][Math.floor(rnd() * 8)]),
  );
  const keep = Uint8Array.from({ length: R * T }, () => (rnd() < 0.85 ? 1 : 0));
  const labels = Int32Array.from({ length: R * T }, () => Math.floor(rnd() * 3) - 1);
  return { R, T, ids, codes, keep, labels };
}

interface Firing {
  v: number;
  r: number;
  t: number;
  s: number;
}

/** Everything the collector should hold, computed from all firings at once. */
function bruteForce(st: Stream, shape: StatsShape) {
  const { R, T, ids, codes, keep, labels } = st;
  const { features: F, slices: S, top, before, after, bins, intervals, samples, seed } = shape;
  const W = before + 1 + after;
  const window = (f: number, x: Firing) => {
    const tokens: number[] = [], acts: number[] = [];
    for (let p = x.t - before; p < x.t - before + W; p++) {
      const inside = p >= 0 && p < T;
      tokens.push(inside ? ids[x.r * T + p] : -1);
      acts.push(inside ? codes[((x.r * T + p) * S + x.s) * F + f] : 0);
    }
    return { tokens, acts };
  };
  const context = (f: number, x: Firing) => ({
    value: x.v,
    ...window(f, x),
    row: x.r,
    position: x.t,
    slice: x.s,
    label: labels[x.r * T + x.t],
  });
  const out = [];
  for (let f = 0; f < F; f++) {
    const all: Firing[] = [];
    for (let r = 0; r < R; r++) {
      for (let t = 0; t < T; t++) {
        if (!keep[r * T + t]) continue;
        for (let s = 0; s < S; s++) {
          const v = codes[((r * T + t) * S + s) * F + f];
          if (v > 0) all.push({ v, r, t, s });
        }
      }
    }
    const order = (a: Firing, b: Firing) => a.r - b.r || a.t - b.t || a.s - b.s;
    const byValue = [...all].sort((a, b) => b.v - a.v || order(a, b));
    const max = byValue.length ? byValue[0].v : 0;
    const M = max > 0 ? powerOfTwoAbove(max) : 0;
    const hist = new Array(bins).fill(0), counts = new Array(intervals).fill(0);
    const inInterval: Firing[][] = Array.from({ length: intervals }, () => []);
    for (const x of all) {
      if (bins) hist[binOf(x.v, bins, M)]++;
      if (intervals) {
        counts[binOf(x.v, intervals, M)]++;
        inInterval[binOf(x.v, intervals, M)].push(x);
      }
    }
    const key = (x: Firing) => sampleKey(seed, x.r, x.t, x.s, f);
    const sampled = inInterval.flatMap((xs) => {
      const kept = [...xs].sort((a, b) => key(a) - key(b) || order(a, b)).slice(0, samples);
      return kept.map((x) => context(f, x));
    });
    const sliceFires = new Array(S).fill(0), labelFires = [0, 0];
    for (const x of all) {
      sliceFires[x.s]++;
      const l = labels[x.r * T + x.t];
      if (l >= 0) labelFires[l]++;
    }
    out.push({
      top: byValue.slice(0, top).map((x) => context(f, x)),
      scale: M,
      hist,
      counts,
      sampled,
      fires: all.length,
      sliceFires,
      labelFires,
    });
  }
  return out;
}

/** Feed the stream in batches of `cut` rows; at row `pause` save the state and restore it. */
function stream(st: Stream, shape: StatsShape, cut: number, pause: number) {
  let c = featureStats(shape);
  const names = ["a", "b"];
  for (const n of names) c.labelId(n);
  const { R, T } = st;
  for (let r0 = 0; r0 < R; r0 += cut) {
    if (r0 >= pause && r0 - cut < pause) {
      const s = c.result();
      const copies = Object.fromEntries(
        Object.entries(statsArrays(s)).map(([k, v]) => [k, Array.from(v)]),
      );
      c = featureStats(shape, restoreStats(shape, s.labels, s.scanned, copies));
    }
    const r1 = Math.min(R, r0 + cut);
    c.add({
      ids: st.ids.slice(r0 * T, r1 * T),
      codes: st.codes.slice(
        r0 * T * shape.slices * shape.features,
        r1 * T * shape.slices * shape.features,
      ),
      rowIds: Array.from({ length: r1 - r0 }, (_, i) => r0 + i),
      keep: st.keep.slice(r0 * T, r1 * T),
      labels: st.labels.slice(r0 * T, r1 * T),
    });
  }
  return c.result();
}

test("featureStats: equals a brute-force pass, for any batch cuts and a mid-stream restore", () => {
  fc.assert(
    fc.property(
      fc.record({
        R: fc.integer({ min: 1, max: 6 }),
        T: fc.integer({ min: 1, max: 7 }),
        S: fc.integer({ min: 1, max: 3 }),
        F: fc.integer({ min: 1, max: 4 }),
        top: fc.integer({ min: 1, max: 4 }),
        before: fc.integer({ min: 0, max: 3 }),
        after: fc.integer({ min: 0, max: 2 }),
        bins: fc.constantFrom(0, 2, 4, 8),
        intervals: fc.constantFrom(0, 2, 4),
        samples: fc.integer({ min: 0, max: 3 }),
        seed: fc.integer({ min: 0, max: 1e6 }),
        cut: fc.integer({ min: 1, max: 6 }),
        pause: fc.integer({ min: 0, max: 6 }),
      }),
      (p) => {
        const shape: StatsShape = {
          features: p.F,
          slices: p.S,
          top: p.top,
          before: p.before,
          after: p.after,
          bins: p.bins,
          intervals: p.intervals,
          samples: p.samples,
          seed: p.seed,
        };
        const st = makeStream(p.R, p.T, p.S, p.F, p.seed);
        const got = stream(st, shape, p.cut, p.pause);
        const want = bruteForce(st, shape);
        const W = p.before + 1 + p.after, Q = p.intervals, K = p.samples;
        let kept = 0;
        for (const k of st.keep) kept += k;
        assertEquals(got.scanned, kept);
        for (let f = 0; f < p.F; f++) {
          const w = want[f];
          assertEquals(slotsOf(got.top, W, f * p.top, p.top), w.top, `top of ${f}`);
          assertEquals(got.dist.scale[f], w.scale, `scale of ${f}`);
          assertEquals(Array.from(got.dist.hist.subarray(f * p.bins, (f + 1) * p.bins)), w.hist);
          assertEquals(Array.from(got.dist.counts.subarray(f * Q, (f + 1) * Q)), w.counts);
          assertEquals(slotsOf(got.dist, W, f * Q * K, Q * K), w.sampled, `samples of ${f}`);
          assertEquals(got.fires[f], w.fires);
          assertEquals(Array.from(got.sliceFires.subarray(f * p.S, (f + 1) * p.S)), w.sliceFires);
          assertEquals(Array.from(got.labelFires.subarray(f * 2, f * 2 + 2)), w.labelFires);
        }
      },
    ),
    { numRuns: 300 },
  );
});

/** One feature, one slice, one slot; 4 bins, 2 intervals of 1 sample. */
const ONE: StatsShape = {
  features: 1,
  slices: 1,
  top: 1,
  before: 0,
  after: 0,
  bins: 4,
  intervals: 2,
  samples: 1,
  seed: 0,
};

test("featureStats: histogram bins are exact at their edges and merge on doubling", () => {
  const shape = ONE;
  const c = featureStats(shape);
  const add = (v: number, row: number) =>
    c.add({ ids: Int32Array.of(0), codes: Float32Array.of(v), rowIds: [row] });
  // M = 1: bins (0, .25], (.25, .5], (.5, .75], (.75, 1]; edges fall in the lower bin.
  for (const [i, v] of [0.25, 0.5, 0.75, 1, 0.1].entries()) add(v, i);
  assertEquals(Array.from(c.result().dist.hist), [2, 1, 1, 1]);
  // 3 doubles M twice (to 4): bins (0, 1], (1, 2], (2, 3], (3, 4].
  add(3, 5);
  assertEquals(c.result().dist.scale[0], 4);
  assertEquals(Array.from(c.result().dist.hist), [5, 0, 1, 0]);
  assertEquals(Array.from(c.result().dist.counts), [5, 1]);
  assertEquals(powerOfTwoAbove(3), 4);
  assertEquals(powerOfTwoAbove(4), 4);
  assertEquals(powerOfTwoAbove(2 ** -20 * 1.5), 2 ** -19);
});

test("featureStats: bad shapes and batches are errors that name the field", () => {
  const shape: StatsShape = { ...ONE, features: 2 };
  assertThrows(() => emptyStats({ ...shape, bins: 3 }), "bins must be an even integer");
  assertThrows(() => emptyStats({ ...shape, top: 0 }), "top must be an integer >= 1");
  const c = featureStats(shape);
  assertThrows(
    () => c.add({ ids: Int32Array.of(1, 2), codes: new Float32Array(2), rowIds: [0] }),
    "do not fit",
  );
  const s = c.result();
  const arrays = Object.fromEntries(Object.entries(statsArrays(s)));
  assertThrows(
    () => restoreStats({ ...shape, features: 3 }, [], 0, arrays),
    "fires has 2 entries, this shape needs 3",
  );
});
