// The shuffle buffer (exactly once per epoch, bounded memory, determinism, refill at half),
// Welford statistics (against a direct two-pass computation, merge order), and the training
// DataSource over a stream (resume replays the same batches).
import fc from "fast-check";
import { rowSize, type RowStream } from "../data/row_stream.ts";
import { rng, ShuffleBuffer } from "../data/shuffle_buffer.ts";
import {
  welfordFinish,
  welfordInit,
  welfordMerge,
  welfordOf,
  welfordUpdate,
} from "../data/welford.ts";
import { HELD_OUT_START, streamData } from "../data/sources.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

/** Rows whose every value is the row's index, in chunks of `chunk` rows; counts chunks opened. */
function indexStream(
  n: number,
  d: number,
  chunk: number,
): RowStream & { live: () => number; opened: () => number } {
  let live = 0, opened = 0;
  return {
    rowShape: [d],
    rows: n,
    dtype: "f32",
    format: "test",
    path: "<index stream>",
    *open() {
      opened++;
      for (let r = 0; r < n; r += chunk) {
        const k = Math.min(chunk, n - r);
        const x = new Float32Array(k * d);
        for (let i = 0; i < k; i++) x.fill(r + i, i * d, (i + 1) * d);
        live++;
        try {
          yield { x, rows: k }; // like a file reader: the chunk (its file) is released in finally
        } finally {
          live--;
        }
      }
    },
    live: () => live,
    opened: () => opened,
  };
}

test("buffer: a capacity above the dataset's size still serves epoch by epoch (fast-check's counterexample)", () => {
  // 27 rows, capacity 62: the buffer must not load three epochs at once and serve a row thrice early.
  const n = 27, s = indexStream(n, 1, 1);
  const b = new ShuffleBuffer(s, { capacity: 62, seed: 558586119, epochs: 3 });
  const counts = new Array(n).fill(0);
  let served = 0;
  for (let r = b.next(23); r; r = b.next(23)) {
    for (let i = 0; i < r.rows; i++) counts[r.x[i]]++;
    served += r.rows;
    assert(
      Math.max(...counts) <= Math.floor(served / n) + 2,
      `after ${served} rows a row was served ${Math.max(...counts)} times`,
    );
  }
  assert(counts.every((c) => c === 3), "each row served 3 times");
});

test("buffer: every row is served exactly once per epoch, memory stays at the capacity", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 64 }),
      fc.integer({ min: 1, max: 50 }),
      fc.integer({ min: 1, max: 3 }),
      fc.nat(),
      (n, d, chunk, batch, epochs, seed) => {
        const capacity = batch + (seed % 40);
        const s = indexStream(n, d, chunk);
        const b = new ShuffleBuffer(s, { capacity, seed, epochs });
        const counts = new Array(n).fill(0);
        let served = 0;
        for (let r = b.next(batch); r; r = b.next(batch)) {
          for (let i = 0; i < r.rows; i++) {
            const v = r.x[i * d];
            for (let j = 1; j < d; j++) assert(r.x[i * d + j] === v, "rows are copied whole");
            counts[v]++;
          }
          served += r.rows;
          assert(b.unread <= capacity && b.bytes === capacity * d * 4, "bounded");
          assert(s.live() <= 1, "at most one chunk of the stream is held");
          // Each epoch completes before a row can be served a further time beyond it.
          assert(
            counts.every((c) => c <= Math.min(epochs, Math.floor(served / n) + 1 + 1)),
            "no row runs ahead",
          );
        }
        assertEquals(served, n * epochs);
        assert(counts.every((c) => c === epochs), `each row served ${epochs} times`);
        assertEquals(s.opened(), epochs);
      },
    ),
    { numRuns: 60 },
  );
});

test("buffer: same seed gives the same batches, another seed others; refills once half is read", () => {
  const s = indexStream(1000, 1, 100);
  const draw = (seed: number) => {
    const b = new ShuffleBuffer(s, { capacity: 200, seed });
    return Array.from({ length: 20 }, () => Array.from(b.next(32)!.x));
  };
  assertEquals(draw(5), draw(5));
  assert(JSON.stringify(draw(5)) !== JSON.stringify(draw(6)), "seeds differ");
  // ActivationBuffer behaviour: the first fill takes `capacity` rows; no row beyond them is
  // served until at least half of the buffer has been read.
  const b = new ShuffleBuffer(s, { capacity: 200, seed: 1 });
  const first = b.next(32)!;
  assert(Array.from(first.x).every((v) => v < 200), "served from the first fill");
  let served = 32, maxSeen = 0;
  while (served < 100) {
    const r = b.next(34)!;
    served += r.rows;
    maxSeen = Math.max(maxSeen, ...r.x);
  }
  assert(maxSeen < 200, "no refill before half the buffer is read");
  const after = b.next(32)!;
  assertEquals(b.unread, 200 - 32, "refilled to capacity, then served 32");
  assert(after.x.some((v) => v >= 200), "the refill pulled new rows in");
});

test("buffer: a shuffle is a permutation with no positional bias in the first batch", () => {
  // Over many seeds, the mean index in the first batch of 50 from 200 rows is near 99.5.
  let sum = 0, count = 0;
  for (let seed = 0; seed < 200; seed++) {
    const b = new ShuffleBuffer(indexStream(200, 1, 17), { capacity: 200, seed });
    const r = b.next(50)!;
    for (const v of r.x) (sum += v), count++;
  }
  assertClose([sum / count], [99.5], { atol: 3 });
  // rng: reproducible and spread out.
  const g = rng(42), h = rng(42);
  const a = Array.from({ length: 1000 }, g), c = Array.from({ length: 1000 }, h);
  assertEquals(a, c);
  assertClose([a.reduce((x, y) => x + y, 0) / 1000 / 2 ** 32], [0.5], { atol: 0.03 });
});

test("buffer: bad arguments are named", () => {
  const s = indexStream(10, 2, 3);
  assertThrows(() => new ShuffleBuffer(s, { capacity: 0 }), "capacity must be a positive integer");
  assertThrows(
    () => new ShuffleBuffer(s, { capacity: 4 }).next(5),
    "batch of 5 rows exceeds the buffer capacity of 4",
  );
  assertThrows(
    () => new ShuffleBuffer(indexStream(0, 2, 3), { capacity: 4 }).next(2),
    "holds no rows",
  );
});

test("welford: chunked updates match a two-pass computation in any chunking and merge order", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 1, maxLength: 8 }),
      fc.double({ min: -1e4, max: 1e4, noNaN: true }),
      (d, sizes, offset) => {
        const n = sizes.reduce((a, b) => a + b, 0);
        const x = Float64Array.from(
          { length: n * d },
          (_, i) => offset + Math.cos(i * 1.3) * (1 + (i % 3)),
        );
        let s = welfordInit(d), at = 0;
        const parts = sizes.map((k) => {
          const p = welfordOf(x.subarray(at * d, (at + k) * d), k, d);
          s = welfordUpdate(s, x.subarray(at * d, (at + k) * d), k);
          at += k;
          return p;
        });
        const reversed = parts.reverse().reduce(welfordMerge, welfordInit(d));
        const mean = new Array(d).fill(0), v = new Array(d).fill(0);
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < d; j++) {
            mean[j] += x[i * d + j] / Math.max(1, n);
          }
        }
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < d; j++) {
            v[j] += (x[i * d + j] - mean[j]) ** 2 / Math.max(1, n);
          }
        }
        for (const st of [s, reversed]) {
          const f = welfordFinish(st);
          assertEquals(f.count, n);
          assertClose(f.mean, mean, { rtol: 1e-9, atol: 1e-9 });
          assertClose(f.variance, v, { rtol: 1e-7, atol: 1e-6 });
        }
      },
    ),
    { numRuns: 100 },
  );
});

test("streamData: batches are tensors of the row shape; a resumed source replays exactly; eval batches read in order", async () => {
  const s = indexStream(500, 3, 64);
  const a = streamData(s, { seed: 3, bufferRows: 128 });
  const seq: number[][] = [];
  for (let i = 0; i < 12; i++) {
    const b = a.batch(i, 32);
    assertEquals(b.x.shape, [32, 3]);
    seq.push(Array.from(await b.x.data()).filter((_, j) => j % 3 === 0));
    b.x.dispose();
  }
  // A fresh source asked for batch 7 first (a resumed run) gives what the first one gave.
  const r = streamData(indexStream(500, 3, 64), { seed: 3, bufferRows: 128 });
  for (const i of [7, 8, 2]) {
    const b = r.batch(i, 32);
    assertEquals(Array.from(await b.x.data()).filter((_, j) => j % 3 === 0), seq[i]);
    b.x.dispose();
  }
  const e = a.batch(HELD_OUT_START + 1, 10);
  assert(s.live() <= 1, "an evaluation batch leaves no pass open besides the buffer's");
  assertEquals(Array.from(await e.x.data()).filter((_, j) => j % 3 === 0), [
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
  ]);
  e.x.dispose();
  const wrap = a.batch(HELD_OUT_START + 49, 11); // rows 539.. wrap to 39..
  assertEquals((await wrap.x.data())[0], 39);
  wrap.x.dispose();
  a.buffer()!.close();
  assertEquals(s.live(), 0, "closing the buffer closes its pass");
  const far = a.batch(HELD_OUT_START + 10_000, 7); // 70000 % 500 = 0: wraps without a wasted pass
  assertEquals((await far.x.data())[0], 0);
  far.x.dispose();
  assertEquals(s.live(), 0);
  const ml = streamData({ ...indexStream(10, 6, 4), rowShape: [2, 3] }, {});
  assertEquals([ml.width, ml.layers, rowSize({ ...s, rowShape: [2, 3] })], [3, 2, 6]);
});
