/**
 * The encoder's x·W + b as one GEMM starting from the bias (fusedAffine) against the exact value:
 * every entry within the GEMM's rounding bound (K + 1)·2⁻²⁴·(Σ_k |x_ik·W_kj| + |b_j|) in f32, as
 * the [x, 1]·[W; b] GEMM it replaces is; the two differ only by that rounding. Also: transposed
 * operands, f64, and that a traced operand gets no fused kernel while a customVjp's forward does.
 */
import { assert, test } from "./harness.ts";
import * as t from "../mod.ts";
import { fusedAffine } from "../tensor/fused.ts";
import { customVjp } from "../autodiff/grad.ts";

/** Pseudo-random values of mixed magnitudes (so that entries cancel, as pre-activations do). */
function values(n: number, seed: number, scale: number): Float64Array {
  const out = new Float64Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 2 ** 32 - 0.5;
    out[i] = u * scale * (i % 7 === 0 ? 8 : 1);
  }
  return out;
}

/** Exact-enough x·W + b in double and the error bound's Σ|x·W| + |b|, from f32-rounded inputs. */
function reference(x: Float32Array, W: Float32Array, b: Float32Array, M: number, K: number) {
  const N = b.length, exact = new Float64Array(M * N), mag = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = b[j], a = Math.abs(b[j]);
      for (let k = 0; k < K; k++) {
        s += x[i * K + k] * W[k * N + j];
        a += Math.abs(x[i * K + k] * W[k * N + j]);
      }
      exact[i * N + j] = s, mag[i * N + j] = a;
    }
  }
  return { exact, mag };
}

/** The largest error as a fraction of the bound (≤ 1 passes). */
function worst(got: ArrayLike<number>, exact: Float64Array, mag: Float64Array, K: number) {
  let w = 0;
  for (let i = 0; i < exact.length; i++) {
    const bound = (K + 1) * 2 ** -24 * mag[i];
    w = Math.max(w, Math.abs(got[i] - exact[i]) / bound);
  }
  return w;
}

test("fusedAffine: x·W + b within the GEMM's rounding bound, as [x, 1]·[W; b] is", () => {
  const M = 96, K = 512, N = 160;
  const x = t.tensor(values(M * K, 1, 2), { shape: [M, K], dtype: "f32" });
  const W = t.tensor(values(K * N, 2, 0.1), { shape: [K, N], dtype: "f32" });
  const b = t.tensor(values(N, 3, 1), { shape: [N], dtype: "f32" });
  const fused = fusedAffine(x, W, b);
  assert(fused, "the CPU backend has the kernel");
  assert(fused.shape.join() === `${M},${N}` && fused.dtype === "f32", `shape ${fused.shape}`);
  const { exact, mag } = reference(
    x.dataSync() as Float32Array,
    W.dataSync() as Float32Array,
    b.dataSync() as Float32Array,
    M,
    K,
  );
  const got = fused.dataSync();
  const wFused = worst(got, exact, mag, K);
  assert(wFused <= 1, `fused: an entry is ${wFused.toFixed(3)}× the bound from exact`);
  const old = t.matmul(
    t.concat([x, t.ones([M, 1])], 1),
    t.concat([W, t.expandDims(b, 0)], 0),
  ).dataSync();
  const wOld = worst(old, exact, mag, K);
  assert(wOld <= 1, `concat GEMM: an entry is ${wOld.toFixed(3)}× the bound from exact`);
  // Not a test that passes on anything: a bias dropped or doubled is far outside the bound.
  const noBias = t.matmul(x, W).dataSync();
  assert(worst(noBias, exact, mag, K) > 10, "the bound is tight enough to see a missing bias");
  t.dispose([x, W, b, fused]);
});

test("fusedAffine: transposed operands and f64", () => {
  for (const dtype of ["f32", "f64"] as const) {
    const M = 40, K = 70, N = 50;
    const xT = t.tensor(values(K * M, 4, 1), { shape: [K, M], dtype });
    const WT = t.tensor(values(N * K, 5, 1), { shape: [N, K], dtype });
    const b = t.tensor(values(N, 6, 1), { shape: [N], dtype });
    const x = t.transpose(xT), W = t.transpose(WT);
    const fused = fusedAffine(x, W, b)!;
    const composed = t.add(t.matmul(x, W), b);
    const { exact, mag } = reference(
      Float32Array.from(t.contiguous(x).dataSync()),
      Float32Array.from(t.contiguous(W).dataSync()),
      Float32Array.from(b.dataSync()),
      M,
      K,
    );
    if (dtype === "f32") {
      const w = worst(fused.dataSync(), exact, mag, K);
      assert(w <= 1, `f32 transposed: ${w.toFixed(3)}× the bound`);
    }
    const f = fused.dataSync(), c = composed.dataSync();
    for (let i = 0; i < f.length; i++) {
      const tol = (dtype === "f64" ? 2 ** -50 : 2 ** -21) * (K + 1) * mag[i];
      assert(Math.abs(f[i] - c[i]) <= tol, `${dtype}[${i}]: fused ${f[i]}, composed ${c[i]}`);
    }
    t.dispose([xT, WT, b, fused, composed]);
  }
});

test("fusedAffine: none for a traced operand, one inside a customVjp's forward", () => {
  const x = t.ones([4, 3]), W = t.ones([3, 5]), b = t.zeros([5]);
  let traced: unknown = "unset", inForward: unknown = "unset";
  const f = customVjp(
    (w: t.Tensor) => {
      inForward = fusedAffine(x, w, b);
      return [t.sum(t.matmul(x, w)), null];
    },
    (_r, ct) => [t.mul(t.ones([3, 5]), ct)],
  );
  t.grad((w: t.Tensor) => {
    traced = fusedAffine(x, w, b);
    return f(w);
  })(W);
  assert(traced === null, "a traced W must go through the primitives");
  assert(inForward instanceof t.Tensor, "nothing is recorded in a customVjp's forward");
});
