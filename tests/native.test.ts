/**
 * The native kernels (csrc/cpu_kernels.c through FFI) against their TypeScript twins, bit for
 * bit (f32 sparse products: within the f32 summation bound of the exact sum), on random shapes, indices and values (fast-check): sparse products, sampled dot products,
 * top-k with ties and NaNs (rows split or one long row merged), and Adam; f32 and f64; one
 * thread and several. Also the compile cache and the error for a missing compiler.
 */
import fc from "fast-check";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assert, assertEquals, test } from "./harness.ts";
import { loadNative, type Native, openNative } from "../tensor/cpu/native.ts";
import * as S from "../tensor/cpu/sparse.ts";
import { topk as topkTs } from "../tensor/cpu/kernels.ts";
import { adamLoop } from "../tensor/cpu/fused.ts";
import * as t from "../mod.ts";
import { setNativeKernels } from "../tensor/cpu/native.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { runs } from "./ref.ts";

const status = loadNative();
if (!status.native) {
  if (readEnv("REQUIRE_NATIVE") === "1") {
    throw new Error(`REQUIRE_NATIVE=1 but the native kernels did not load: ${status.reason}`);
  }
  console.log(`skip: native-vs-TypeScript kernel comparison: ${status.reason}`);
}
const nat = status.native as Native;

type F = Float32Array | Float64Array;
const widths = [Float32Array, Float64Array] as const;
/** An f32 or f64 array of n values fn(i). */
const make = (
  f64: boolean,
  n: number,
  fn: (i: number) => number,
): F => (f64
  ? Float64Array.from({ length: n }, (_, i) => fn(i))
  : Float32Array.from({ length: n }, (_, i) => fn(i)));

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assertEquals(a.length, b.length, `${what} length`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) {
      throw new Error(`${what}[${i}]: native ${a[i]}, TypeScript ${b[i]}`);
    }
  }
}

/**
 * f32 sparse products sum in f32 with one rounding per term (in an order of their choosing), so
 * each output out[r] = Σ w·s over its n entries must lie within γ_n·Σ|w·s| of the exact sum
 * (γ_n = n·u/(1 − n·u), u = 2⁻²⁴), computed here in f64 (products of f32 values are exact there).
 */
function withinSumBound(
  got: ArrayLike<number>,
  dst: Int32Array,
  src: Int32Array,
  vals: ArrayLike<number>,
  dense: ArrayLike<number>,
  d: number,
  what: string,
): void {
  const exact = new Float64Array(got.length), abs = new Float64Array(got.length);
  const terms = new Int32Array(got.length / d);
  for (let i = 0; i < vals.length; i++) {
    if (vals[i] === 0) continue;
    terms[dst[i]]++;
    for (let c = 0; c < d; c++) {
      const p = vals[i] * dense[src[i] * d + c];
      exact[dst[i] * d + c] += p, abs[dst[i] * d + c] += Math.abs(p);
    }
  }
  const u = 2 ** -24;
  for (let j = 0; j < got.length; j++) {
    const n = terms[Math.floor(j / d)], gamma = (n * u) / (1 - n * u);
    // The f64 reference's own error (n·2⁻⁵³ relative to Σ|w·s|) is covered by the slack.
    const bound = gamma * abs[j] * (1 + 1e-6) + 1e-300;
    if (!(Math.abs(got[j] - exact[j]) <= bound)) {
      throw new Error(`${what}[${j}]: native ${got[j]}, exact ${exact[j]}, bound ${bound}`);
    }
  }
}

/** `run`'s results with the native kernels must equal its results with them switched off. */
function sameAsTypeScript(run: () => ArrayLike<number>[], names: string[]): void {
  const was = setNativeKernels(false);
  let want: ArrayLike<number>[];
  try {
    want = run();
  } finally {
    setNativeKernels(was);
  }
  run().forEach((got, i) => sameBits(got, want[i], names[i]));
}

/** Values with repeats (ties), zeros, signed zeros and the odd NaN or infinity. */
const value = fc.oneof(
  { weight: 6, arbitrary: fc.double({ min: -4, max: 4, noNaN: true }) },
  { weight: 2, arbitrary: fc.integer({ min: -3, max: 3 }).map((v) => v) },
  { weight: 1, arbitrary: fc.constantFrom(0, -0, NaN, Infinity, -Infinity) },
);

test("native spmm / spmmT / sddmm give the TypeScript kernels' bits (f32 spmm: the f32 sum bound)", () => {
  if (!nat) return;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 1, max: 12 }),
      // Past 64 columns: the f32 kernel's register tiles, its 8-wide steps and its tail.
      fc.integer({ min: 1, max: 150 }),
      fc.integer({ min: 0, max: 60 }),
      fc.integer({ min: 1, max: 3 }),
      fc.boolean(),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      (R, C, d, nnz, threads, f64, seed) => {
        const W = widths[+f64];
        let s = seed;
        const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
        const fill = (n: number) => make(f64, n, () => (rnd() < 0.05 ? 0 : (rnd() - 0.5) * 8));
        const rows = Int32Array.from({ length: nnz }, () => Math.floor(rnd() * R));
        const cols = Int32Array.from({ length: nnz }, () => Math.floor(rnd() * C));
        const vals = fill(nnz);
        for (const transpose of [false, true]) {
          const [outRows, inRows] = transpose ? [C, R] : [R, C];
          const dense = fill(inRows * d);
          const want = new W(outRows * d), got = new W(outRows * d).fill(7);
          S.spmm(
            rows,
            cols,
            vals,
            dense,
            d,
            transpose,
            outRows,
            want,
            0,
            d,
            transpose ? S.byRow(cols, nnz, outRows) : null,
          );
          const [dst, src] = transpose ? [cols, rows] : [rows, cols];
          assertEquals(nat.spmm(dst, src, vals, nnz, dense, inRows, d, got, outRows, threads), -1);
          if (f64) sameBits(got, want, `spmm transpose=${transpose}`);
          else withinSumBound(got, dst, src, vals, dense, d, `spmm transpose=${transpose}`);
          // The order of the sums is fixed: the same bits on any number of threads.
          const one = new W(outRows * d);
          assertEquals(nat.spmm(dst, src, vals, nnz, dense, inRows, d, one, outRows, 1), -1);
          sameBits(got, one, `spmm transpose=${transpose} on ${threads} threads and on 1`);
        }
        const a = fill(R * d), b = fill(C * d);
        const want = new W(nnz), got = new W(nnz);
        S.sddmm(a, b, rows, cols, d, want);
        assertEquals(nat.sddmm(a, R, b, C, rows, cols, nnz, d, got, threads), -1);
        sameBits(got, want, "sddmm");
      },
    ),
    { numRuns: runs(150) },
  );
});

test("native sddmm over entries out of row order (visited grouped by row) gives the TypeScript kernel's bits", () => {
  if (!nat) return;
  for (const f64 of [false, true]) {
    const W = widths[+f64];
    let s = 5 + +f64;
    const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const R = 97, C = 300, d = 37, nnz = 4000; // past the 1024 entries where it groups them
    const rows = Int32Array.from({ length: nnz }, () => Math.floor(rnd() * R));
    const cols = Int32Array.from({ length: nnz }, () => Math.floor(rnd() * C));
    const a = make(f64, R * d, () => rnd() - 0.5), b = make(f64, C * d, () => rnd() - 0.5);
    const want = new W(nnz);
    S.sddmm(a, b, rows, cols, d, want);
    for (const threads of [1, 2, 3]) {
      const got = new W(nnz);
      assertEquals(nat.sddmm(a, R, b, C, rows, cols, nnz, d, got, threads), -1);
      sameBits(got, want, `sddmm ${f64 ? "f64" : "f32"} on ${threads} threads`);
    }
  }
});

test("native top-k gives the TypeScript kernel's values and indices (ties, NaNs, long rows merged)", () => {
  if (!nat) return;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 4 }),
      fc.boolean(),
      fc.array(value, { minLength: 1, maxLength: 64 }),
      fc.integer({ min: 1, max: 300 }),
      (rows, n, threads, f64, pool, kRaw) => {
        const W = widths[+f64];
        const k = 1 + (kRaw % n);
        // Cycling a small pool of values makes ties common.
        const x = make(f64, rows * n, (i) => pool[(i * 7919) % pool.length]);
        const wantV = new W(rows * k),
          wantI = new Int32Array(rows * k),
          gotV = new W(rows * k),
          gotI = new Int32Array(rows * k);
        topkTs({ arr: x, shape: [rows, n], strides: [n, 1], offset: 0 }, k, wantV, wantI);
        assertEquals(nat.topk(x, rows, n, k, gotV, gotI, threads), -1);
        sameBits(gotV, wantV, "topk values");
        sameBits(gotI, wantI, "topk indices");
      },
    ),
    { numRuns: runs(200) },
  );
  // One long row with few k per thread takes the split-and-merge path (with NaNs the heap ranks
  // each part; without, the integer keys, sorted for large k).
  const n = 50_000;
  for (
    const [x, k] of [true, false].flatMap((nan) => {
      const x = Float32Array.from(
        { length: n },
        (_, i) => (nan && i % 97 === 3 ? NaN : i % 89 === 5 ? -0 : Math.floor(Math.sin(i) * 20)),
      );
      return [1, 77, 3000].map((k) => [x, k] as const);
    })
  ) {
    const wantV = new Float32Array(k),
      wantI = new Int32Array(k),
      gotV = new Float32Array(k),
      gotI = new Int32Array(k);
    topkTs({ arr: x, shape: [1, n], strides: [n, 1], offset: 0 }, k, wantV, wantI);
    assertEquals(nat.topk(x, 1, n, k, gotV, gotI, 2), -1);
    sameBits(gotV, wantV, `long row k=${k} values`);
    sameBits(gotI, wantI, `long row k=${k} indices`);
  }
});

test("native top-k on long rows (sampled bound, vector filter) gives the TypeScript kernel's output", () => {
  if (!nat) return;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1000, max: 5000 }),
      fc.integer({ min: 1, max: 3 }),
      fc.boolean(),
      fc.integer({ min: 1, max: 400 }),
      fc.constantFrom(
        "distinct",
        "ties",
        "specials",
        "signed zeros",
        "infinities",
        "sorted up",
        "sorted down",
      ),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      (rows, n, threads, f64, k, kind, seed) => {
        const W = widths[+f64];
        let s = seed;
        const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
        const specials = [NaN, Infinity, -Infinity, 0, -0];
        const x = make(f64, rows * n, (i) => {
          const c = i % n;
          if (kind === "ties") return Math.floor(rnd() * 12) - 6;
          if (kind === "specials" && rnd() < 0.01) return specials[Math.floor(rnd() * 5)];
          // No NaN: rows that rank by integer keys, where −0 must tie with 0.
          if (kind === "signed zeros") {
            // Few positives, so that the k-th best is a zero.
            const u = rnd();
            return u < 0.2 ? (u < 0.1 ? -0 : 0) : u < 0.22 ? 1 + u : -1 - u;
          }
          if (kind === "infinities" && rnd() < 0.02) return rnd() < 0.5 ? Infinity : -Infinity;
          if (kind === "sorted up") return c + rnd();
          if (kind === "sorted down") return -c - rnd();
          return (rnd() - 0.5) * 8;
        });
        const wantV = new W(rows * k),
          wantI = new Int32Array(rows * k),
          gotV = new W(rows * k),
          gotI = new Int32Array(rows * k);
        topkTs({ arr: x, shape: [rows, n], strides: [n, 1], offset: 0 }, k, wantV, wantI);
        assertEquals(nat.topk(x, rows, n, k, gotV, gotI, threads), -1);
        sameBits(gotV, wantV, `topk ${kind} values`);
        sameBits(gotI, wantI, `topk ${kind} indices`);
      },
    ),
    { numRuns: runs(60) },
  );
});

test("native Adam gives the TypeScript loop's bits, with and without weight decay", () => {
  if (!nat) return;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 200 }),
      fc.integer({ min: 1, max: 3 }),
      fc.boolean(),
      fc.boolean(),
      fc.integer({ min: 1, max: 1000 }),
      fc.array(value, { minLength: 3, maxLength: 30 }),
      (n, threads, f64, decay, step, pool) => {
        const W = widths[+f64];
        const pick = (o: number) => make(f64, n, (i) => pool[(i * 31 + o) % pool.length]);
        const G = pick(0), M = pick(1), V = pick(2).map(Math.abs) as F, P = decay ? pick(3) : null;
        const h = {
          b1: 0.9,
          b2: 0.999,
          eps: 1e-8,
          c2: 1 - 0.999 ** step,
          scale: -1e-3 / (1 - 0.9 ** step),
          decay: decay ? 1e-5 : 0,
        };
        const want = [new W(n), new W(n), new W(n)] as F[],
          got = [new W(n), new W(n), new W(n)] as F[];
        adamLoop(G, M, V, P, want[0], want[1], want[2], h.b1, h.b2, h.eps, h.c2, h.scale, h.decay);
        nat.adam(G, M, V, P, got[0], got[1], got[2], n, h, threads);
        ["update", "m", "v"].forEach((w, i) => sameBits(got[i], want[i], `adam ${w}`));
      },
    ),
    { numRuns: runs(100) },
  );
});

test("native relu, its gradient and sums over axes give the TypeScript ops' bits", () => {
  if (!nat) return;
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 3 }),
      fc.boolean(),
      fc.array(value, { minLength: 1, maxLength: 50 }),
      fc.nat(),
      fc.nat(),
      (shape, f64, pool, a0, a1) => {
        const n = shape.reduce((a, b) => a * b, 1);
        const dtype = f64 ? "f64" : "f32";
        const x = t.reshape(
          t.tensor(make(f64, n, (i) => pool[(i * 13) % pool.length]), { dtype }),
          shape,
        );
        const g = t.reshape(
          t.tensor(make(f64, n, (i) => pool[(i * 7 + 3) % pool.length]), { dtype }),
          shape,
        );
        const lo = a0 % shape.length, hi = lo + (a1 % (shape.length - lo));
        const axes = Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
        const run = () => {
          const [y, dx] = t.vjp((z: t.Tensor) => t.relu(z), x);
          return [y, dx(g)[0] as t.Tensor, t.sum(x, axes), t.sum(x, 0), t.sum(x, -1)].map((r) =>
            r.dataSync()
          );
        };
        sameAsTypeScript(run, ["relu", "relu grad", `sum ${axes}`, "sum 0", "sum -1"]);
      },
    ),
    { numRuns: runs(150) },
  );
});

test("native kernels on tensors whose buffer is longer than they are (leading slices) stop at the tensor", () => {
  if (!nat) return;
  // A leading slice is contiguous at offset 0 over a longer buffer; the kernels must take their
  // sizes from the shape (writing to the buffer's length would run past the output's end).
  const big = t.random.normal(t.random.key(3), [513, 640]);
  const g = t.slice(big, [0, 0], [512, 640]);
  assert(
    g.isContiguous() && (g.view().buf as Float32Array).length > 512 * 640,
    "the slice is a view over the longer buffer",
  );
  const run = () => {
    const opt = t.adam({ lr: 1e-3 });
    const [u] = opt.update(g, opt.init(g));
    const idx = t.slice(
      t.tensor(Array.from({ length: 600 }, (_, i) => i % 512), { dtype: "i32" }),
      [0],
      [300],
    );
    const coo = { rows: idx, cols: idx, values: t.slice(t.ones([600]), [0], [300]) };
    return [
      u as t.Tensor,
      t.relu(g),
      t.vjp((z: t.Tensor) => t.relu(z), g)[1](g)[0] as t.Tensor,
      t.sddmm(g, g, idx, idx),
      t.spmm(coo as never, g, 512),
    ].map((r) => r.dataSync());
  };
  sameAsTypeScript(run, ["adam", "relu", "relu grad", "sddmm", "spmm"]);
});

test("native kernels report the first out-of-range index instead of reading past an array", () => {
  if (!nat) return;
  const rows = Int32Array.from([0, 1, 5, -1]),
    cols = Int32Array.from([0, 0, 0, 0]),
    vals = new Float32Array(4).fill(1);
  const dense = new Float32Array(3 * 2), out = new Float32Array(2 * 2);
  assertEquals(nat.spmm(rows, cols, vals, 4, dense, 3, 2, out, 2, 1), 2);
  assertEquals(
    nat.sddmm(
      dense,
      3,
      dense,
      3,
      Int32Array.from([0, 2, 3]),
      Int32Array.from([0, 1, 1]),
      3,
      2,
      new Float32Array(3),
      1,
    ),
    2,
  );
});

test("native kernels: compiled once into the cache, atomically; a missing compiler is a clear reason", async () => {
  if (!nat) return;
  const dir = await mkdtemp(join(tmpdir(), "sc-native-"));
  try {
    const first = openNative({ cacheDir: dir });
    assert(first.native && first.reason.startsWith("compiled and loaded"), first.reason);
    const again = openNative({ cacheDir: dir });
    assert(again.native && again.reason.startsWith("loaded "), again.reason);
    const files = await readdir(dir);
    assertEquals(files.length, 1, `cache holds ${files}`);
    assert(files[0].endsWith(".so"), files[0]);
    const none = await mkdtemp(join(tmpdir(), "sc-native-"));
    const bad = openNative({ cc: "/nonexistent/cc", cacheDir: none });
    assert(
      bad.native === null && bad.reason.includes("/nonexistent/cc could not compile"),
      bad.reason,
    );
    assertEquals((await readdir(none)).length, 0, "no half-written library is left");
    await rm(none, { recursive: true });
  } finally {
    await rm(dir, { recursive: true });
  }
});
