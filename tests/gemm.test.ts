// gemmTs against a naive f64 reference, and OpenBLAS (when present) against gemmTs.
// Local shim until tests/harness.ts exists.
const isDeno = "Deno" in globalThis;
const t: (name: string, fn: () => void | Promise<void>) => void = isDeno
  ? (n, f) => (globalThis as any).Deno.test(n, f)
  : (await import("bun" + ":test")).test;

import { type FloatArray, gemmTs } from "../tensor/cpu/gemm.ts";
import { loadBlas } from "../tensor/cpu/blas.ts";
import { readEnv } from "../tensor/platform/env.ts";

type Ctor = Float32ArrayConstructor | Float64ArrayConstructor;

const env = readEnv;

// Seeded generator so failures reproduce.
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface Case {
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  alpha: number;
  beta: number;
  A: FloatArray;
  aOff: number;
  lda: number;
  B: FloatArray;
  bOff: number;
  ldb: number;
  C: FloatArray;
  cOff: number;
  ldc: number;
}

/** Random operands with random offsets and padded leading dimensions; C padding is a sentinel. */
function makeCase(
  T: Ctor,
  rand: () => number,
  transA: boolean,
  transB: boolean,
  M: number,
  N: number,
  K: number,
  alpha: number,
  beta: number,
  cFill?: number,
): Case {
  const pad = () => Math.floor(rand() * 4);
  const mat = (rows: number, cols: number) => {
    const off = pad(), ld = cols + pad();
    const X = new T(off + Math.max(0, rows - 1) * ld + cols + pad());
    for (let i = 0; i < X.length; i++) X[i] = rand() * 2 - 1;
    return { X, off, ld };
  };
  const a = mat(transA ? K : M, transA ? M : K);
  const b = mat(transB ? N : K, transB ? K : N);
  const c = mat(M, N);
  if (cFill !== undefined) {
    for (let i = 0; i < M; i++) c.X.fill(cFill, c.off + i * c.ld, c.off + i * c.ld + N);
  }
  return {
    transA,
    transB,
    M,
    N,
    K,
    alpha,
    beta,
    A: a.X,
    aOff: a.off,
    lda: a.ld,
    B: b.X,
    bOff: b.off,
    ldb: b.ld,
    C: c.X,
    cOff: c.off,
    ldc: c.ld,
  };
}

/** Naive f64 reference: returns expected C (whole buffer) and per-element error scale. */
function reference(c: Case): { want: Float64Array; scale: Float64Array } {
  const want = Float64Array.from(c.C);
  const scale = new Float64Array(c.C.length);
  // Copy operands to f64 and express both trans cases as strides, keeping the loop monomorphic.
  const A = Float64Array.from(c.A), B = Float64Array.from(c.B);
  const rsA = c.transA ? 1 : c.lda, csA = c.transA ? c.lda : 1;
  const rsB = c.transB ? 1 : c.ldb, csB = c.transB ? c.ldb : 1;
  for (let i = 0; i < c.M; i++) {
    for (let j = 0; j < c.N; j++) {
      let s = 0, mag = 0;
      for (let p = 0; p < c.K; p++) {
        const x = A[c.aOff + i * rsA + p * csA] * B[c.bOff + p * rsB + j * csB];
        s += x;
        mag += Math.abs(x);
      }
      const idx = c.cOff + i * c.ldc + j;
      const old = c.beta === 0 ? 0 : c.beta * c.C[idx];
      want[idx] = c.alpha * s + old;
      scale[idx] = Math.abs(c.alpha) * mag + Math.abs(old) + 1e-30;
    }
  }
  return { want, scale };
}

function run(fn: typeof gemmTs, c: Case, C: FloatArray): void {
  fn(
    c.transA,
    c.transB,
    c.M,
    c.N,
    c.K,
    c.alpha,
    c.A,
    c.aOff,
    c.lda,
    c.B,
    c.bOff,
    c.ldb,
    c.beta,
    C,
    c.cOff,
    c.ldc,
  );
}

function label(c: Case): string {
  return `${c.C.constructor.name} tA=${c.transA} tB=${c.transB} M=${c.M} N=${c.N} K=${c.K} ` +
    `alpha=${c.alpha} beta=${c.beta} offs=${c.aOff},${c.bOff},${c.cOff} ld=${c.lda},${c.ldb},${c.ldc}`;
}

/** Every element (including padding, which must be untouched) within tol * scale. */
function expectClose(
  got: FloatArray,
  want: Float64Array,
  scale: Float64Array,
  tol: number,
  what: string,
): void {
  for (let i = 0; i < want.length; i++) {
    const ok = scale[i] === 0
      ? Object.is(got[i], want[i]) || got[i] === want[i]
      : Math.abs(got[i] - want[i]) <= tol * scale[i];
    if (!ok) throw new Error(`${what}: C[${i}] = ${got[i]}, want ${want[i]} (scale ${scale[i]})`);
  }
}

const BOOLS = [false, true];
const SIZES = [0, 1, 3, 17, 33, 65];
// Shapes that cross the packing/blocking boundaries (MR/NR edges, KC=256, MC=128, NC=2048).
const BIG: [number, number, number][] = [[130, 70, 300], [200, 37, 513], [5, 2050, 20], [
  64,
  64,
  64,
], [7, 9, 600]];
const SCALARS: [number, number][] = [[1, 0], [0.5, -1.5], [-2, 1], [0, 2], [1.25, 0.75]];
const TYPES: [Ctor, number][] = [[Float32Array, 1e-6], [Float64Array, 1e-13]];

function checkTs(c: Case, tol: number): void {
  const { want, scale } = reference(c);
  const got = c.C.slice();
  run(gemmTs, c, got);
  expectClose(got, want, scale, tol, label(c));
}

for (const [T, tol] of TYPES) {
  t(`gemmTs ${T.name}: all trans combos x sizes {0,1,3,17,33,65}^3`, () => {
    const rand = rng(1);
    let n = 0;
    for (const tA of BOOLS) {
      for (const tB of BOOLS) {
        for (const M of SIZES) {
          for (const N of SIZES) {
            for (const K of SIZES) {
              const [alpha, beta] = SCALARS[n++ % SCALARS.length];
              checkTs(makeCase(T, rand, tA, tB, M, N, K, alpha, beta), tol);
            }
          }
        }
      }
    }
  });

  t(`gemmTs ${T.name}: blocked shapes, all trans combos and scalars`, () => {
    const rand = rng(2);
    for (const tA of BOOLS) {
      for (const tB of BOOLS) {
        for (const [M, N, K] of BIG) {
          for (const [alpha, beta] of SCALARS) {
            checkTs(makeCase(T, rand, tA, tB, M, N, K, alpha, beta), tol);
          }
        }
      }
    }
  });

  t(`gemmTs ${T.name}: beta=0 overwrites NaN/Inf in C`, () => {
    const rand = rng(3);
    for (const tA of BOOLS) {
      for (const tB of BOOLS) {
        for (const [M, N, K] of [[3, 5, 7], [40, 33, 65], [17, 1, 0], [2, 3, 0]] as const) {
          for (const fill of [NaN, Infinity]) {
            const c = makeCase(T, rand, tA, tB, M, N, K, 1.5, 0, fill);
            checkTs(c, tol);
            // alpha = 0 as well: C must become exactly zero.
            checkTs({ ...c, alpha: 0 }, tol);
          }
        }
      }
    }
  });
}

t("gemmTs: out-of-range arguments throw RangeError", () => {
  const A = new Float32Array(6), B = new Float32Array(6), C = new Float32Array(4);
  const bad: (() => void)[] = [
    () => gemmTs(false, false, 2, 2, 3, 1, A, 1, 3, B, 0, 2, 0, C, 0, 2), // A too short with offset
    () => gemmTs(false, false, 2, 2, 3, 1, A, 0, 2, B, 0, 2, 0, C, 0, 2), // lda < K
    () => gemmTs(false, false, 2, 2, 3, 1, A, 0, 3, B, 0, 2, 0, C, 0, 3), // C too short for ldc
    () => gemmTs(false, false, -1, 2, 3, 1, A, 0, 3, B, 0, 2, 0, C, 0, 2),
  ];
  for (const f of bad) {
    let threw = false;
    try {
      f();
    } catch (e) {
      threw = e instanceof RangeError;
    }
    if (!threw) throw new Error(`expected RangeError from ${f}`);
  }
  // Exact fit is fine; zero-size calls accept empty arrays.
  gemmTs(false, false, 2, 2, 3, 1, A, 0, 3, B, 0, 2, 0, C, 0, 2);
  gemmTs(
    false,
    false,
    0,
    0,
    0,
    1,
    new Float32Array(0),
    0,
    1,
    new Float32Array(0),
    0,
    1,
    0,
    new Float32Array(0),
    0,
    1,
  );
});

// ---- BLAS ----

const status = loadBlas();
const blas = status.blas;
if (!blas) {
  if (env("REQUIRE_BLAS") === "1") {
    t("BLAS required (REQUIRE_BLAS=1)", () => {
      throw new Error(`BLAS unavailable: ${status.reason}`);
    });
  } else {
    console.log("skip: BLAS tests:", status.reason);
  }
} else {
  const b = blas;

  t(`BLAS (${status.reason}, threads=${b.threads()}): sgemm matches gemmTs`, () => {
    const rand = rng(4);
    const shapes: [number, number, number][] = [...BIG, [1, 1, 1], [3, 17, 33], [65, 1, 17], [
      33,
      65,
      3,
    ]];
    let n = 0;
    for (const tA of BOOLS) {
      for (const tB of BOOLS) {
        for (const [M, N, K] of shapes) {
          const [alpha, beta] = SCALARS[n++ % SCALARS.length];
          const c = makeCase(Float32Array, rand, tA, tB, M, N, K, alpha, beta);
          const want = c.C.slice(), got = c.C.slice();
          run(gemmTs, c, want);
          run(b.sgemm as typeof gemmTs, c, got);
          const { scale } = reference(c);
          expectClose(got, Float64Array.from(want), scale, 1e-4, `sgemm ${label(c)}`);
        }
      }
    }
  });

  t("BLAS: dgemm matches reference; views with byteOffset", () => {
    const rand = rng(5);
    for (const tA of BOOLS) {
      for (const tB of BOOLS) {
        for (const [M, N, K] of [[17, 33, 65], [130, 70, 300], [1, 5, 3]] as const) {
          const c = makeCase(Float64Array, rand, tA, tB, M, N, K, 0.75, -0.5);
          const { want, scale } = reference(c);
          // Operands that are themselves subarray views, so the pointer must include byteOffset.
          const view = (X: FloatArray) => {
            const big = new Float64Array(X.length + 3);
            big.set(X, 3);
            return big.subarray(3);
          };
          const C = view(c.C);
          b.dgemm(
            tA,
            tB,
            M,
            N,
            K,
            c.alpha,
            view(c.A) as Float64Array,
            c.aOff,
            c.lda,
            view(c.B) as Float64Array,
            c.bOff,
            c.ldb,
            c.beta,
            C,
            c.cOff,
            c.ldc,
          );
          expectClose(C, want, scale, 1e-12, `dgemm ${label(c)}`);
        }
      }
    }
  });

  t("BLAS: beta=0 with NaN in C, zero sizes, range checks", () => {
    const rand = rng(6);
    for (const [M, N, K] of [[5, 6, 7], [4, 3, 0], [0, 3, 4], [3, 0, 4]] as const) {
      const c = makeCase(Float32Array, rand, false, true, M, N, K, 2, 0, NaN);
      const { want, scale } = reference(c);
      const got = c.C.slice();
      run(b.sgemm as typeof gemmTs, c, got);
      expectClose(got, want, scale, 1e-5, `sgemm NaN ${label(c)}`);
    }
    // K = 0 with empty A/B: handled in TS, C = beta*C.
    const C = new Float32Array([1, 2, 3, 4]);
    b.sgemm(
      false,
      false,
      2,
      2,
      0,
      1,
      new Float32Array(0),
      0,
      1,
      new Float32Array(0),
      0,
      2,
      3,
      C,
      0,
      2,
    );
    if (C.join() !== "3,6,9,12") throw new Error(`K=0: ${C.join()}`);
    b.sgemm(
      false,
      false,
      0,
      0,
      0,
      1,
      new Float32Array(0),
      0,
      1,
      new Float32Array(0),
      0,
      1,
      0,
      new Float32Array(0),
      0,
      1,
    );
    let threw = false;
    try {
      b.sgemm(
        false,
        false,
        2,
        2,
        3,
        1,
        new Float32Array(5),
        0,
        3,
        new Float32Array(6),
        0,
        2,
        0,
        C,
        0,
        2,
      );
    } catch (e) {
      threw = e instanceof RangeError;
    }
    if (!threw) throw new Error("expected RangeError for short A");
  });
}
