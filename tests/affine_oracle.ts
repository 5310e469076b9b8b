/**
 * The fused encoders' oracle (tests/affine_topk.test.ts, tests/affine_batch_topk.test.ts): each
 * entry of x·W + b as the kernels sum it — b, then each chunk's partial sum of x·W by one f32 fused
 * multiply-add per term, in order, from zero, K split as OpenBLAS's SkylakeX sgemm splits it (448
 * at a time, a remainder above 448 halved) — and the operands the tests draw.
 */
import { BF16_MIN_WORK } from "../tensor/cpu/matmul_precision.ts";

const f32 = new Float32Array(1), bits = new Uint32Array(f32.buffer);

/** The f32 next to the f32 `r`, towards `towards`. */
function neighbour(r: number, towards: number): number {
  f32[0] = r;
  const up = towards > r;
  if (r === 0) {
    bits[0] = 1;
    return up ? f32[0] : -f32[0];
  }
  bits[0] += (r > 0) === up ? 1 : -1;
  return f32[0];
}

/** fmaf(a, b, c) for f32 a, b, c: one rounding of a·b + c (the product is exact in double). */
function fmaf(a: number, b: number, c: number): number {
  const p = a * b, s = p + c, v = s - p, e = (p - (s - v)) + (c - v); // s + e = p + c exactly
  const r = Math.fround(s);
  if (e === 0 || r === s) return r;
  // Rounding s to f32 is a second rounding; it errs only when s is a midpoint: e decides.
  const o = neighbour(r, s);
  if (s - r !== o - s) return r;
  return (e > 0) === (o > r) ? o : r;
}

/** Where the chunk of K that starts at ls ends: OpenBLAS SkylakeX's split (GEMM_Q 448). */
function chunkEnd(ls: number, K: number): number {
  let n = K - ls;
  if (n >= 2 * 448) n = 448;
  else if (n > 448) n = Math.ceil(n / 2);
  return ls + n;
}

/** Each entry in the kernel's order: b, then each chunk's partial sum added. */
export function oracle(x: Float32Array, W: Float32Array, b: Float32Array, M: number, K: number) {
  const N = b.length, out = new Float32Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let v = b[j];
      for (let k0 = 0; k0 < K; k0 = chunkEnd(k0, K)) {
        let acc = 0;
        for (let k = k0; k < chunkEnd(k0, K); k++) {
          acc = fmaf(x[i * K + k], W[k * N + j], acc);
        }
        v = Math.fround(v + acc);
      }
      out[i * N + j] = v;
    }
  }
  return out;
}

export function randomF32(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * scale * (i % 5 === 0 ? 8 : 1);
  }
  return out;
}

/** x [64, 512], W [512, 520], b [520]: a product past BF16_MIN_WORK, so matmul takes bf16 for it. */
export function bf16SizedOperands() {
  const M = 64, K = 512, N = 520;
  if (M * K * N < BF16_MIN_WORK) throw new Error("bf16SizedOperands: below BF16_MIN_WORK");
  return { x: randomF32(M * K, 8), W: randomF32(K * N, 9), b: randomF32(N, 10), M, K };
}

export const sameBits = (a: Float32Array, b: Float32Array, what: string) => {
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
};
