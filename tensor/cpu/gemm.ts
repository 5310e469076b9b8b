// Pure-TypeScript GEMM, row-major, BLIS-style: pack panels of A and B into
// contiguous Float64 scratch, then run a 4x4 register-blocked micro-kernel.
// Accumulation is in f64 (JS numbers); f32 C is rounded only when a tile is
// added back (once per KC-deep slice of K).

export type FloatArray = Float32Array | Float64Array;

// Micro-tile: 16 accumulators + 8 operands roughly fill the 16 FP registers.
// Measured on AVX2 EPYC: 4x4 is best under V8 (Deno); 4x8 is ~15% faster
// under JSC (Bun) but ~5% slower under V8, and 6x4/3x8 fall off a cliff.
const MR = 4;
const NR = 4;
// Cache blocking: a KC x NR packed B micro-panel (8 KiB) stays in L1, an
// MC x KC packed A block (256 KiB) in L2, and the KC x NC packed B block in L3.
const KC = 256;
const MC = 128;
const NC = 2048;

// Scratch reused across calls (grown on demand) so hot loops make no garbage.
let packA = new Float64Array(0);
let packB = new Float64Array(0);
const tile = new Float64Array(MR * NR);
let rowAcc = new Float64Array(0);

function roundUp(x: number, m: number): number {
  return Math.ceil(x / m) * m;
}

/**
 * Throws RangeError unless every element the call would touch lies inside the
 * arrays. Also used by the BLAS binding, where an out-of-range access would
 * corrupt memory rather than just read `undefined`.
 */
export function checkGemmArgs(
  transA: boolean,
  transB: boolean,
  M: number,
  N: number,
  K: number,
  A: FloatArray,
  aOff: number,
  lda: number,
  B: FloatArray,
  bOff: number,
  ldb: number,
  C: FloatArray,
  cOff: number,
  ldc: number,
): void {
  if (!(isDim(M) && isDim(N) && isDim(K))) {
    throw new RangeError(`gemm: M=${M}, N=${N}, K=${K} must be integers >= 0`);
  }
  checkOperand("A", A, aOff, lda, transA ? K : M, transA ? M : K, M > 0 && N > 0 && K > 0);
  checkOperand("B", B, bOff, ldb, transB ? N : K, transB ? K : N, M > 0 && N > 0 && K > 0);
  checkOperand("C", C, cOff, ldc, M, N, M > 0 && N > 0);
}

function isDim(v: number): boolean {
  return Number.isInteger(v) && v >= 0;
}

function checkOperand(
  name: string,
  X: FloatArray,
  off: number,
  ld: number,
  rows: number,
  cols: number,
  used: boolean,
): void {
  if (!Number.isInteger(off) || off < 0) {
    throw new RangeError(`gemm: ${name} offset ${off} invalid`);
  }
  // ld >= cols (not BLAS's max(1, cols)) so empty operands may use ld = 0;
  // such calls return before reaching BLAS.
  if (!Number.isInteger(ld) || ld < cols) {
    throw new RangeError(`gemm: ld${name.toLowerCase()}=${ld} < ${cols} columns`);
  }
  if (used && off + (rows - 1) * ld + cols > X.length) {
    throw new RangeError(
      `gemm: ${name} needs ${
        off + (rows - 1) * ld + cols
      } elements (${rows}x${cols}, ld ${ld}, offset ${off}) but has ${X.length}`,
    );
  }
}

/** C = beta*C over the M x N window; beta = 0 overwrites (so NaN/Inf in C are dropped). */
function scaleC(
  M: number,
  N: number,
  beta: number,
  C: FloatArray,
  cOff: number,
  ldc: number,
): void {
  if (beta === 1) return;
  for (let i = 0; i < M; i++) {
    const r = cOff + i * ldc;
    if (beta === 0) C.fill(0, r, r + N);
    else for (let j = r; j < r + N; j++) C[j] *= beta;
  }
}

/**
 * C[cOff + i*ldc + j] = alpha * sum_p opA(i,p) * opB(p,j) + beta * C[...];
 * opA(i,p) = transA ? A[aOff + p*lda + i] : A[aOff + i*lda + p]; likewise B.
 * beta = 0 overwrites C (NaN there is ignored). C must not overlap A or B.
 * Throws RangeError if an index would fall outside an array.
 */
export function gemmTs(
  transA: boolean,
  transB: boolean,
  M: number,
  N: number,
  K: number,
  alpha: number,
  A: FloatArray,
  aOff: number,
  lda: number,
  B: FloatArray,
  bOff: number,
  ldb: number,
  beta: number,
  C: FloatArray,
  cOff: number,
  ldc: number,
): void {
  checkGemmArgs(transA, transB, M, N, K, A, aOff, lda, B, bOff, ldb, C, cOff, ldc);
  if (M === 0 || N === 0) return;
  // Beta is applied once up front; every later pass only accumulates.
  scaleC(M, N, beta, C, cOff, ldc);
  // BLAS semantics: alpha = 0 or K = 0 never reads A or B.
  if (K === 0 || alpha === 0) return;

  // opA(i,p) = A[aOff + i*rsA + p*csA]; opB(p,j) = B[bOff + p*rsB + j*csB].
  const rsA = transA ? 1 : lda, csA = transA ? lda : 1;
  const rsB = transB ? 1 : ldb, csB = transB ? ldb : 1;

  // Skinny shapes would waste most of a padded micro-tile. Measured: packing
  // wins over direct loops everywhere else, even at 4x4x4.
  if (N === 1 || (M < MR && csB !== 1)) {
    gemmDot(M, N, K, alpha, A, aOff, rsA, csA, B, bOff, rsB, csB, C, cOff, ldc);
    return;
  }
  if (M < MR) {
    gemmAxpy(M, N, K, alpha, A, aOff, rsA, csA, B, bOff, rsB, C, cOff, ldc);
    return;
  }

  const ncMax = Math.min(NC, roundUp(N, NR));
  const mcMax = Math.min(MC, roundUp(M, MR));
  const kcMax = Math.min(KC, K);
  if (packB.length < kcMax * ncMax) packB = new Float64Array(kcMax * ncMax);
  if (packA.length < kcMax * mcMax) packA = new Float64Array(kcMax * mcMax);
  const Ap = packA, Bp = packB;

  for (let jc = 0; jc < N; jc += NC) {
    const nc = Math.min(NC, N - jc);
    for (let pc = 0; pc < K; pc += KC) {
      const kc = Math.min(KC, K - pc);
      packPanels(Bp, B, bOff + pc * rsB + jc * csB, csB, rsB, nc, kc, NR);
      for (let ic = 0; ic < M; ic += MC) {
        const mc = Math.min(MC, M - ic);
        packPanels(Ap, A, aOff + ic * rsA + pc * csA, rsA, csA, mc, kc, MR);
        for (let jr = 0; jr < nc; jr += NR) {
          const nr = Math.min(NR, nc - jr);
          for (let ir = 0; ir < mc; ir += MR) {
            const mr = Math.min(MR, mc - ir);
            kernel4x4(kc, Ap, ir * kc, Bp, jr * kc, tile);
            storeTile(C, cOff + (ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, tile);
          }
        }
      }
    }
  }
}

/**
 * Packs an n x kc slab (element (r,p) at X[base + r*rs + p*cs]) into panels of
 * `w` rows: panel q holds, for each p, its w values consecutively. Rows past n
 * are zero so the kernel never needs edge cases.
 */
function packPanels(
  dst: Float64Array,
  X: FloatArray,
  base: number,
  rs: number,
  cs: number,
  n: number,
  kc: number,
  w: number,
): void {
  for (let r0 = 0; r0 < n; r0 += w) {
    const rows = Math.min(w, n - r0);
    const d0 = r0 * kc;
    if (cs === 1) {
      // Walk each source row contiguously, scattering with stride w.
      for (let r = 0; r < rows; r++) {
        const s = base + (r0 + r) * rs;
        let d = d0 + r;
        for (let p = 0; p < kc; p++, d += w) dst[d] = X[s + p];
      }
    } else {
      // Source is contiguous along r: walk it that way, write contiguously.
      let d = d0;
      for (let p = 0; p < kc; p++, d += w) {
        const s = base + r0 * rs + p * cs;
        for (let r = 0; r < rows; r++) dst[d + r] = X[s + r * rs];
      }
    }
    if (rows < w) {
      for (let p = 0; p < kc; p++) {
        for (let r = rows; r < w; r++) dst[d0 + p * w + r] = 0;
      }
    }
  }
}

/** T = (4 x kc packed A panel) * (kc x 4 packed B panel), accumulated in locals. */
function kernel4x4(
  kc: number,
  Ap: Float64Array,
  ai: number,
  Bp: Float64Array,
  bi: number,
  T: Float64Array,
): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let p = 0; p < kc; p++) {
    const a0 = Ap[ai], a1 = Ap[ai + 1], a2 = Ap[ai + 2], a3 = Ap[ai + 3];
    const b0 = Bp[bi], b1 = Bp[bi + 1], b2 = Bp[bi + 2], b3 = Bp[bi + 3];
    c00 += a0 * b0;
    c01 += a0 * b1;
    c02 += a0 * b2;
    c03 += a0 * b3;
    c10 += a1 * b0;
    c11 += a1 * b1;
    c12 += a1 * b2;
    c13 += a1 * b3;
    c20 += a2 * b0;
    c21 += a2 * b1;
    c22 += a2 * b2;
    c23 += a2 * b3;
    c30 += a3 * b0;
    c31 += a3 * b1;
    c32 += a3 * b2;
    c33 += a3 * b3;
    ai += 4;
    bi += 4;
  }
  T[0] = c00;
  T[1] = c01;
  T[2] = c02;
  T[3] = c03;
  T[4] = c10;
  T[5] = c11;
  T[6] = c12;
  T[7] = c13;
  T[8] = c20;
  T[9] = c21;
  T[10] = c22;
  T[11] = c23;
  T[12] = c30;
  T[13] = c31;
  T[14] = c32;
  T[15] = c33;
}

/** C[ci + r*ldc + c] += alpha * T[r][c] for the valid mr x nr corner. */
function storeTile(
  C: FloatArray,
  ci: number,
  ldc: number,
  mr: number,
  nr: number,
  alpha: number,
  T: Float64Array,
): void {
  for (let r = 0; r < mr; r++) {
    const row = ci + r * ldc;
    const t = r * NR;
    for (let c = 0; c < nr; c++) C[row + c] += alpha * T[t + c];
  }
}

/** C[i,:] += alpha * sum_p opA(i,p) * B[p,:] for row-contiguous B (few rows of C). */
function gemmAxpy(
  M: number,
  N: number,
  K: number,
  alpha: number,
  A: FloatArray,
  aOff: number,
  rsA: number,
  csA: number,
  B: FloatArray,
  bOff: number,
  rsB: number,
  C: FloatArray,
  cOff: number,
  ldc: number,
): void {
  // Accumulate in f64 scratch so f32 C sees a single rounding, as in the packed path.
  if (rowAcc.length < N) rowAcc = new Float64Array(N);
  const acc = rowAcc;
  for (let i = 0; i < M; i++) {
    acc.fill(0, 0, N);
    for (let p = 0; p < K; p++) {
      const a = A[aOff + i * rsA + p * csA];
      const br = bOff + p * rsB;
      for (let j = 0; j < N; j++) acc[j] += a * B[br + j];
    }
    const cr = cOff + i * ldc;
    for (let j = 0; j < N; j++) C[cr + j] += alpha * acc[j];
  }
}

/** C[i,j] += alpha * dot(opA(i,:), opB(:,j)), for a single column of C or few rows with transposed B. */
function gemmDot(
  M: number,
  N: number,
  K: number,
  alpha: number,
  A: FloatArray,
  aOff: number,
  rsA: number,
  csA: number,
  B: FloatArray,
  bOff: number,
  rsB: number,
  csB: number,
  C: FloatArray,
  cOff: number,
  ldc: number,
): void {
  for (let i = 0; i < M; i++) {
    const ar = aOff + i * rsA;
    const cr = cOff + i * ldc;
    for (let j = 0; j < N; j++) {
      const bc = bOff + j * csB;
      let s = 0;
      for (let p = 0; p < K; p++) s += A[ar + p * csA] * B[bc + p * rsB];
      C[cr + j] += alpha * s;
    }
  }
}
