/**
 * The CPU backend's native kernels (csrc/cpu_kernels.c) through FFI, like OpenBLAS: the sparse
 * products, top-k, Adam, relu and sums, bit for bit the same as their TypeScript twins but with SIMD and
 * no per-element bounds checks (f32 spmm alone sums in f32: within the f32 summation bound, see csrc). On first use the C file is compiled with the machine's compiler
 * (`cc`, or SPARSECODER_CC) for this CPU and cached under a key of its source, flags and CPU;
 * later processes only open the cached library. Loading never throws: without a compiler, FFI
 * or permissions the TypeScript kernels run, and `loadNative().reason` says why.
 *   SPARSECODER_NATIVE=0        use the TypeScript kernels only
 *   SPARSECODER_CACHE_DIR=dir   where the compiled library is kept (default ~/.cache/sparsecoder)
 */
import { fileURLToPath } from "node:url";
import type { AdamHyper } from "../backend.ts";
import { readEnv } from "../platform/env.ts";
import { type Ffi, type FfiFn, type FfiSig, getFfi, NO_FFI } from "../platform/ffi.ts";
import { compileCached, cpuKey, defaultCacheDir } from "../platform/compile.ts";
import { granted } from "../platform/runtime.ts";
import { checkCount, checkFloats, checkIndices, I64_MAX } from "./native_bounds.ts";
import { bindTrain, type NativeTrain, TRAIN_SIGS } from "./native_train.ts";

type F = Float32Array | Float64Array;

/** A sparse × dense product's entry point: -1 done, or a status (see each). */
type SpmmFn = (
  dst: Int32Array,
  src: Int32Array,
  vals: F,
  nnz: number,
  dense: F,
  inRows: number,
  d: number,
  out: F,
  outRows: number,
  threads: number,
  /** (spmmTransposed only) where to put Σ out², the bits sumSquares would give. */
  sumsq?: F | null,
) => number;

export interface Native extends NativeTrain {
  /** The compiled library that was opened. */
  path: string;
  // Counts are passed, never taken from array lengths: a tensor's buffer may be longer than the
  // tensor (a leading slice), and native code writing past an array corrupts the heap.
  /** out = 0; out[dst[i]] += vals[i]·dense[src[i]] for i < nnz (rows of width d). */
  spmm: SpmmFn;
  /**
   * spmm's f32 product written as its transpose, out [d, outRows], the same bits: -1 done, -3 not
   * here (f64, no AVX2, d not a multiple of 32, spmm's source-major form: use spmm), -2 out of
   * memory, or the first bad entry.
   */
  spmmTransposed: SpmmFn;
  /**
   * out[i] = a[rows[i]] · b[cols[i]] for i < nnz (rows of width d). With segs > 1, b's row c is
   * stored in segs pieces of d/segs (a multiple of 4), piece l at l·segStride + c·(d/segs): the
   * sums of the flat row, bit for bit (-3: pieces not a multiple of 4).
   */
  sddmm(
    a: F,
    na: number,
    b: F,
    nb: number,
    rows: Int32Array,
    cols: Int32Array,
    nnz: number,
    d: number,
    out: F,
    threads: number,
    segs?: number,
    segStride?: number,
  ): number;
  /** The k best of each contiguous row of x [rows, n], best first. */
  topk(
    x: F,
    rows: number,
    n: number,
    k: number,
    values: F,
    indices: Int32Array,
    threads: number,
  ): number;
  /** One Adam step over the first n elements. */
  adam(
    g: F,
    m: F,
    v: F,
    p: F | null,
    u: F,
    m2: F,
    v2: F,
    n: number,
    h: AdamHyper,
    threads: number,
  ): void;
  /**
   * One Adam step applied to the parameter p [rows, cols] in one pass: p2 = p + u, with m2, v2
   * and u as `adam`'s (decay·p only when withDecay), the gradient first multiplied by gscale[0]
   * and rounded when gscale is given, and each updated row scaled to unit norm when `unit`.
   * With `gTransposed`, g holds the gradient as [cols, rows] (read in tiles; the same bits).
   */
  adamApply(
    g: F,
    m: F,
    v: F,
    p: F,
    gscale: F | null,
    p2: F,
    m2: F,
    v2: F,
    rows: number,
    cols: number,
    h: AdamHyper,
    withDecay: boolean,
    unit: boolean,
    gTransposed: boolean,
    threads: number,
  ): void;
  /**
   * out = g − ((g·w)/‖w‖²)·w for each row of [rows, cols] (fused.ts's projectOutRowsLoop); with
   * `sumsq`, sumsq[0] = Σ out², the bits sumSquares would give.
   */
  projectOutRows(
    g: F,
    w: F,
    out: F,
    rows: number,
    cols: number,
    threads: number,
    sumsq: F | null,
  ): void;
  /**
   * out[0] = Σ x² over the first n elements (squares rounded to the width, summed in double in
   * csrc/sum_squares.h's order, which no thread count changes).
   */
  sumSquares(x: F, n: number, out: F, threads: number): void;
  /** out[0] = Σ_j var_j over the rows of x [rows, cols] (or of x − y), biased, in double. */
  colVarSum(x: F, y: F | null, rows: number, cols: number, out: F, threads: number): void;
  /** out [cols, rows] = x [rows, cols] transposed. */
  transpose(x: F, rows: number, cols: number, out: F, threads: number): void;
  /** out = relu(x) over the first n elements. */
  relu(x: F, out: F, n: number, threads: number): void;
  /** out[r] = sqrt(sum(square(x[r]))) for the rows of a contiguous [rows, n]: that composition's bits. */
  rowNorms(x: F, rows: number, n: number, out: F, threads: number): void;
  /** out = g·step(x), the relu's cotangent, over the first n elements. */
  reluGrad(g: F, x: F, out: F, n: number, threads: number): void;
  /** Sums over the middle axis of a contiguous [outer, n, inner] into out [outer, inner]. */
  sum(x: F, outer: number, n: number, inner: number, out: F, threads: number): number;
  // The inference kernels below stand in for compositions of ops (see csrc): double inside,
  // one rounding, so within f32 rounding of the composition rather than bit for bit.
  /**
   * Each contiguous row of x [rows, cols] normalised: LayerNorm (x − μ)/√(σ² + eps)·w + b when
   * `center`, else RMSNorm x/√(mean x² + eps)·w; w read as 1 + w with `plusOne`; b may be null.
   */
  rowNorm(
    x: F,
    w: F,
    b: F | null,
    out: F,
    rows: number,
    cols: number,
    eps: number,
    center: boolean,
    plusOne: boolean,
    threads: number,
  ): void;
  /** out = act(x) over the first n elements: 0 gelu (tanh form), 1 gelu (erf), 2 silu. */
  activation(x: F, out: F, n: number, kind: 0 | 1 | 2, threads: number): void;
  /**
   * Causal attention's pattern from raw scores [rows/t, t, t] (rows = B·H·t): scaled, soft-capped
   * when softcap > 0, keys whose byte in mask [B, t] is 0 at −1e30, keys outside the causal
   * window (window 0: unbounded) at 0 weight, softmax over each row.
   */
  attnSoftmax(
    s: F,
    out: F,
    mask: Uint8Array | null,
    rows: number,
    t: number,
    heads: number,
    scale: number,
    softcap: number,
    window: number,
    threads: number,
  ): void;
  /** out[i] = x[i] + y[i mod m] over the first n elements (m = n, or m divides n). */
  addRows(x: F, y: F, out: F, n: number, m: number, threads: number): void;
  /** out[i] = x[i] − y[i mod m], as addRows. */
  subRows(x: F, y: F, out: F, n: number, m: number, threads: number): void;
  /** out [rows, m] = the row y in each row. */
  fillRows(y: F, out: F, rows: number, m: number, threads: number): void;
  /** out[i] = x[i] · y[i mod m], as addRows. */
  mulRows(x: F, y: F, out: F, n: number, m: number, threads: number): void;
  /**
   * Each row's k largest of x [M, K] · w + b (w [K, N], or [N, K] with `wT`; b [N]) into values
   * and indices [M, k], best first, without writing the product (csrc/affine_topk.c): "done", or
   * "compose" where this build or k has no fused kernel or the product holds a NaN. `bf16`: the
   * product from bf16-rounded operands on AMX tiles. `packed` is scratch of
   * 3/2·⌈K/32⌉·32·⌈N/32⌉·32 + 16 elements.
   */
  affineTopk(
    x: F,
    M: number,
    K: number,
    w: F,
    wT: boolean,
    N: number,
    b: F,
    k: number,
    packed: F,
    values: F,
    indices: Int32Array,
    bf16: boolean,
    threads: number,
  ): "done" | "compose";
  /**
   * The batch's `total` largest entries of x·W + b (x [M, K], W [K, N], both contiguous, b [N]),
   * ranked by their values or, with `scale` [N] (≥ 0), by value·scale[c] in f32, as topk ranks the
   * flattened product: their values and flat indices (r·N + c) [total], best first, with the f32
   * GEMM's bits, through the bf16 screen on AMX tiles without writing the product
   * (csrc/affine_topk.c); with `bf16`, of the bf16 GEMM's product (gemmBf16 onto the bias), on the
   * same tiles. "done", or "compose" where this build has no such kernel or the screen declines.
   * `scratch` as affineTopk's `packed`.
   */
  affineBatchTopk(
    x: F,
    M: number,
    K: number,
    w: F,
    N: number,
    b: F,
    scale: F | null,
    total: number,
    scratch: F,
    values: F,
    indices: Int32Array,
    bf16: boolean,
    threads: number,
  ): "done" | "compose";
  /**
   * out = the first n elements of src (one typed-array kind, any width) with elements [spans[2i],
   * spans[2i + 1]) zero (ascending, disjoint, within n), copied on `threads` threads.
   */
  zeroSpans(
    src: ArrayBufferView,
    out: ArrayBufferView,
    n: number,
    spans: Int32Array,
    threads: number,
  ): void;
  /** Whether this build has AMX-BF16 and the OS granted this process its tiles (the bf16 kernels). */
  amxBf16(): boolean;
  /**
   * How many f32 affineTopk calls of this process found their result through the bf16 screen
   * (csrc/affine_topk.c), not the f32 kernel: for tests that the screen runs.
   */
  topkScreened(): number;
  /**
   * How many rows such calls summed in full because the screen could not vouch for them (more
   * columns near the row's k-th best than its list holds): for tests of that path.
   */
  topkFullRows(): number;
  /**
   * c [M, N] (row stride ldc) = a·b + beta·c from bf16-rounded a [M, K] (stored [K, M] when aT;
   * row stride lda) and b [K, N] (stored [N, K] when bT), summed in f32 on AMX tiles
   * (csrc/gemm_bf16.c): cblas_sbgemm's product. `packed`: scratch of ⌈K/32⌉·32·⌈N/32⌉·32 / 2
   * floats. False where amxBf16() is.
   */
  gemmBf16(
    a: Float32Array,
    aT: boolean,
    lda: number,
    b: Float32Array,
    bT: boolean,
    ldb: number,
    M: number,
    N: number,
    K: number,
    beta: number,
    c: Float32Array,
    ldc: number,
    packed: Float32Array,
    threads: number,
  ): boolean;
}

export interface NativeStatus {
  native: Native | null;
  /** "loaded <path>" (and "compiled" when this process built it), or why the kernels are absent. */
  reason: string;
}

/**
 * -ffp-contract=off: no fused multiply-add behind our back (the TypeScript twins' bits).
 * -fno-math-errno: sqrt need not set errno, so loops over it vectorise (GCC keeps a libm call per
 * element otherwise, and a per-function pragma does not lift it); the values are the same IEEE
 * sqrt, and no kernel reads errno.
 */
const FLAGS = [
  "-O3",
  "-march=native",
  "-ffp-contract=off",
  "-fno-math-errno",
  "-fPIC",
  "-shared",
  "-pthread",
];

// Each kernel exists as sc_<name>_f32 and sc_<name>_f64 with these argument types.
const SIGS: Record<string, FfiSig> = {
  spmm: {
    args: ["buf", "buf", "buf", "i32", "buf", "i32", "i32", "buf", "i32", "i32"],
    ret: "i32",
  },
  spmm_tt: {
    args: ["buf", "buf", "buf", "i32", "buf", "i32", "i32", "buf", "i32", "i32", "buf"],
    ret: "i32",
  },
  sddmm: {
    args: ["buf", "i32", "buf", "i32", "buf", "buf", "i32", "i32", "buf", "i32", "i32", "i64"],
    ret: "i32",
  },
  topk: { args: ["buf", "i32", "i32", "i32", "buf", "buf", "i32"], ret: "i32" },
  adam: {
    args: [
      "buf",
      "buf",
      "buf",
      "buf",
      "buf",
      "buf",
      "buf",
      "i64",
      "f64",
      "f64",
      "f64",
      "f64",
      "f64",
      "f64",
      "i32",
    ],
    ret: "void",
  },
  adam_apply: {
    args: [
      ...["buf", "buf", "buf", "buf", "buf", "buf", "buf", "buf"] as const,
      ...[
        "i64",
        "i64",
        "f64",
        "f64",
        "f64",
        "f64",
        "f64",
        "f64",
        "i32",
        "i32",
        "i32",
        "i32",
      ] as const,
    ],
    ret: "void",
  },
  sum_squares: { args: ["buf", "i64", "buf", "i32"], ret: "void" },
  project_out_rows: { args: ["buf", "buf", "buf", "i64", "i64", "i32", "buf"], ret: "void" },
  transpose: { args: ["buf", "i64", "i64", "buf", "i32"], ret: "void" },
  col_var_sum: { args: ["buf", "buf", "i64", "i64", "buf", "i32"], ret: "i32" },
  relu: { args: ["buf", "buf", "buf", "i64", "i32"], ret: "void" },
  row_norms: { args: ["buf", "i64", "i64", "buf", "i32"], ret: "void" },
  relu_grad: { args: ["buf", "buf", "buf", "i64", "i32"], ret: "void" },
  sum: { args: ["buf", "i64", "i64", "i64", "buf", "i32"], ret: "i32" },
  row_norm: {
    args: ["buf", "buf", "buf", "buf", "i64", "i64", "f64", "i32", "i32", "i32"],
    ret: "void",
  },
  activation: { args: ["buf", "buf", "i64", "i32", "i32"], ret: "void" },
  attn_softmax: {
    args: ["buf", "buf", "buf", "i64", "i64", "i64", "f64", "f64", "i64", "i32"],
    ret: "i32",
  },
  add_rows: { args: ["buf", "buf", "buf", "i64", "i64", "i32"], ret: "void" },
  fill_rows: { args: ["buf", "buf", "i64", "i64", "i32"], ret: "void" },
  sub_rows: { args: ["buf", "buf", "buf", "i64", "i64", "i32"], ret: "void" },
  mul_rows: { args: ["buf", "buf", "buf", "i64", "i64", "i32"], ret: "void" },
  affine_topk: {
    args: [
      "buf",
      "i64",
      "i64",
      "buf",
      "i32",
      "i64",
      "buf",
      "i64",
      "buf",
      "buf",
      "buf",
      "i32",
      "i32",
    ],
    ret: "i32",
  },
  affine_batch_topk: {
    args: [
      "buf",
      "i64",
      "i64",
      "buf",
      "i64",
      "buf",
      "buf",
      "i64",
      "buf",
      "buf",
      "buf",
      "i32",
      "i32",
    ],
    ret: "i32",
  },
  ...TRAIN_SIGS,
};

// Kernels of one width only, by their full names.
const ONE_WIDTH: Record<string, FfiSig> = {
  sc_gemm_bf16_f32: {
    args: [
      "buf",
      "i32",
      "i64",
      "buf",
      "i32",
      "i64",
      "i64",
      "i64",
      "i64",
      "f32",
      "buf",
      "i64",
      "buf",
      "i32",
    ],
    ret: "i32",
  },
  sc_zero_spans: { args: ["buf", "buf", "i64", "i32", "buf", "i64", "i32"], ret: "void" },
  sc_amx_bf16_ready: { args: [], ret: "i32" },
  sc_affine_topk_screened: { args: [], ret: "i64" },
  sc_affine_topk_full_rows: { args: [], ret: "i64" },
};

/** The cached library for this source, compiler flags and CPU, compiled now if missing. */
function build(cc: string, dir: string): { path: string; compiled: boolean } {
  const at = (f: string) => fileURLToPath(new URL(`../../csrc/${f}`, import.meta.url));
  return compileCached({
    src: at("cpu_kernels.c"),
    more: [
      "affine_topk.c",
      "gemm_bf16.c",
      "amx_bf16.h",
      "threads.h",
      "topk_key.h",
      "sum_squares.h",
      "reuse.h",
    ]
      .map(at),
    cc,
    flags: FLAGS,
    libs: ["-lm"],
    keyParts: [cpuKey()],
    prefix: "libsparsecoder-cpu",
    dir,
  });
}

type Raw = Record<string, FfiFn>;

/** The kernels by "<name>_<width>" (throws when the library lacks one). */
function open(ffi: Ffi, path: string): Raw {
  const sigs = Object.fromEntries([
    ...Object.entries(SIGS).flatMap(([n, sig]) => ["f32", "f64"].map((w) => [`sc_${n}_${w}`, sig])),
    ...Object.entries(ONE_WIDTH),
  ]);
  const fns = ffi.open(path, sigs).fns;
  return Object.fromEntries(Object.keys(sigs).map((name) => [name.slice(3), fns[name]!]));
}

/**
 * The kernels behind the Native interface. Every call is checked first (native_bounds.ts): each
 * array of the right type and long enough for what the kernel reads and writes.
 */
function bind(path: string, raw: Raw): Native {
  const w = (x: F) => (x instanceof Float32Array ? "f32" : "f64");
  const fn = (name: string, x: F) => raw[`${name}_${w(x)}`];
  const rows = (
    k: string,
    c: string,
    x: F,
    y: F,
    out: F,
    n: number,
    m: number,
    threads: number,
  ) => {
    checkCount(k, "n", n, I64_MAX), checkCount(k, "m", m, I64_MAX);
    checkCount(k, "threads", threads);
    if (m < 1 || n % m !== 0) throw new RangeError(`native ${k}: ${m} does not divide ${n}`);
    checkFloats(k, "x", x, n, x), checkFloats(k, "y", y, m, x), checkFloats(k, "out", out, n, x);
    fn(c, x)(x, y, out, n, m, threads);
  };
  const spmmOf =
    (k: string, name: string): SpmmFn =>
    (dst, src, vals, nnz, dense, inRows, d, out, outRows, threads, sumsq) => {
      checkCount(k, "nnz", nnz), checkCount(k, "d", d), checkCount(k, "threads", threads);
      checkCount(k, "inRows", inRows), checkCount(k, "outRows", outRows);
      checkIndices(k, "dst", dst, nnz), checkIndices(k, "src", src, nnz);
      checkFloats(k, "vals", vals, nnz, dense), checkFloats(k, "dense", dense, inRows * d, dense);
      checkFloats(k, "out", out, outRows * d, dense);
      if (sumsq) checkFloats(k, "sumsq", sumsq, 1, dense);
      const args = [dst, src, vals, nnz, dense, inRows, d, out, outRows, threads];
      return fn(name, dense)(...args, ...(name === "spmm_tt" ? [sumsq ?? null] : [])) as number;
    };
  return {
    path,
    ...bindTrain(fn),
    spmm: spmmOf("spmm", "spmm"),
    spmmTransposed: spmmOf("spmmTransposed", "spmm_tt"),
    sddmm(a, na, b, nb, rows, cols, nnz, d, out, threads, segs = 1, segStride = 0) {
      const k = "sddmm";
      checkCount(k, "na", na), checkCount(k, "nb", nb), checkCount(k, "nnz", nnz);
      checkCount(k, "d", d), checkCount(k, "threads", threads), checkCount(k, "segs", segs);
      checkCount(k, "segStride", segStride, I64_MAX);
      if (segs < 1 || d % segs !== 0) {
        throw new RangeError(`native ${k}: d ${d} not in ${segs} pieces`);
      }
      const seg = d / segs, bLen = segs === 1 ? nb * d : (segs - 1) * segStride + nb * seg;
      checkFloats(k, "a", a, na * d, a), checkFloats(k, "b", b, bLen, a);
      checkIndices(k, "rows", rows, nnz), checkIndices(k, "cols", cols, nnz);
      checkFloats(k, "out", out, nnz, a);
      return fn(k, a)(a, na, b, nb, rows, cols, nnz, d, out, threads, segs, segStride) as number;
    },
    topk(x, rows, n, kk, values, indices, threads) {
      const k = "topk";
      checkCount(k, "rows", rows), checkCount(k, "n", n), checkCount(k, "k", kk);
      checkCount(k, "threads", threads);
      checkFloats(k, "x", x, rows * n, x), checkFloats(k, "values", values, rows * kk, x);
      checkIndices(k, "indices", indices, rows * kk);
      return fn(k, x)(x, rows, n, kk, values, indices, threads) as number;
    },
    adam(gr, m, v, p, u, m2, v2, n, h, threads) {
      const k = "adam";
      checkCount(k, "n", n, I64_MAX), checkCount(k, "threads", threads);
      checkFloats(k, "g", gr, n, gr), checkFloats(k, "m", m, n, gr), checkFloats(k, "v", v, n, gr);
      if (p !== null) checkFloats(k, "p", p, n, gr);
      checkFloats(k, "u", u, n, gr), checkFloats(k, "m2", m2, n, gr);
      checkFloats(k, "v2", v2, n, gr);
      const hy = [h.b1, h.b2, h.eps, h.c2, h.scale, h.decay];
      fn(k, gr)(gr, m, v, p, u, m2, v2, n, ...hy, threads);
    },
    adamApply(gr, m, v, p, gscale, p2, m2, v2, rows, cols, h, withDecay, unit, gT, threads) {
      const k = "adamApply";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "cols", cols, I64_MAX);
      checkCount(k, "threads", threads);
      const n = rows * cols;
      for (const [name, a] of [["g", gr], ["m", m], ["v", v], ["p", p], ["p2", p2]] as const) {
        checkFloats(k, name, a, n, gr);
      }
      checkFloats(k, "m2", m2, n, gr), checkFloats(k, "v2", v2, n, gr);
      if (gscale !== null) checkFloats(k, "gscale", gscale, 1, gr);
      const hy = [h.b1, h.b2, h.eps, h.c2, h.scale, h.decay];
      fn("adam_apply", gr)(
        gr,
        m,
        v,
        p,
        gscale,
        p2,
        m2,
        v2,
        rows,
        cols,
        ...hy,
        +withDecay,
        +unit,
        +gT,
        threads,
      );
    },
    affineBatchTopk(x, M, K, w, N, b, scale, total, scratch, values, indices, bf16, threads) {
      const k = "affineBatchTopk";
      for (const [name, v] of [["M", M], ["K", K], ["N", N], ["total", total]] as const) {
        checkCount(k, name, v, I64_MAX);
      }
      checkCount(k, "threads", threads);
      if (total < 1 || total > M * N) {
        throw new RangeError(`native ${k}: total = ${total} is not in [1, ${M * N}]`);
      }
      checkFloats(k, "x", x, M * K, x), checkFloats(k, "w", w, K * N, x);
      checkFloats(k, "b", b, N, x);
      checkFloats(
        k,
        "scratch",
        scratch,
        1.5 * Math.ceil(K / 32) * 32 * Math.ceil(N / 32) * 32 + 16,
        x,
      );
      if (scale) checkFloats(k, "scale", scale, N, x);
      checkFloats(k, "values", values, total, x), checkIndices(k, "indices", indices, total);
      const r = fn("affine_batch_topk", x)(
        x,
        M,
        K,
        w,
        N,
        b,
        scale,
        total,
        scratch,
        values,
        indices,
        +bf16,
        threads,
      );
      if (r === -1) return "done";
      if (r === -2) throw new Error(`native ${k}: out of memory for ${M}x${N} entries`);
      return "compose";
    },
    zeroSpans(src, out, n, spans, threads) {
      const k = "zeroSpans";
      checkCount(k, "n", n, I64_MAX), checkCount(k, "threads", threads);
      const size = (src as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
      if (out.constructor !== src.constructor || !(size > 0)) {
        throw new TypeError(`native ${k}: src and out must be typed arrays of one kind`);
      }
      for (const [name, a] of [["src", src], ["out", out]] as const) {
        if (a.byteLength < n * size) {
          throw new RangeError(
            `native ${k}: ${name} holds ${a.byteLength / size} elements, not ${n}`,
          );
        }
      }
      if (spans.length % 2 !== 0) throw new RangeError(`native ${k}: ${spans.length} span ends`);
      for (let i = 0, last = 0; i < spans.length; i += 2) {
        if (spans[i] < last || spans[i + 1] < spans[i] || spans[i + 1] > n) {
          throw new RangeError(
            `native ${k}: span ${i / 2} [${spans[i]}, ${
              spans[i + 1]
            }) is out of order or past ${n}`,
          );
        }
        last = spans[i + 1];
      }
      raw.zero_spans(src, out, n, size, spans, spans.length / 2, threads);
    },
    amxBf16: () => raw.amx_bf16_ready() === 1,
    topkScreened: () => Number(raw.affine_topk_screened()),
    topkFullRows: () => Number(raw.affine_topk_full_rows()),
    gemmBf16(a, aT, lda, b, bT, ldb, M, N, K, beta, c, ldc, packed, threads) {
      const k = "gemmBf16";
      for (
        const [name, v] of [["M", M], ["N", N], ["K", K], ["lda", lda], ["ldb", ldb], [
          "ldc",
          ldc,
        ]] as const
      ) checkCount(k, name, v, I64_MAX);
      checkCount(k, "threads", threads);
      const span = (rows: number, cols: number, ld: number) =>
        rows > 0 ? (rows - 1) * ld + cols : 0;
      checkFloats(k, "a", a, aT ? span(K, M, lda) : span(M, K, lda), a);
      checkFloats(k, "b", b, bT ? span(N, K, ldb) : span(K, N, ldb), a);
      checkFloats(k, "c", c, span(M, N, ldc), a);
      checkFloats(k, "packed", packed, Math.ceil(K / 32) * 32 * Math.ceil(N / 32) * 16, a);
      const r = raw.gemm_bf16_f32(a, +aT, lda, b, +bT, ldb, M, N, K, beta, c, ldc, packed, threads);
      if (r === -2) throw new Error(`native ${k}: out of memory for ${M}x${K}·${K}x${N}`);
      return r === -1;
    },
    affineTopk(x, M, K, w, wT, N, b, kk, packed, values, indices, bf16, threads) {
      const k = "affineTopk";
      for (const [name, v] of [["M", M], ["K", K], ["N", N], ["k", kk]] as const) {
        checkCount(k, name, v, I64_MAX);
      }
      checkCount(k, "threads", threads);
      if (kk < 1 || kk > N) throw new RangeError(`native ${k}: k = ${kk} is not in [1, ${N}]`);
      checkFloats(k, "x", x, M * K, x), checkFloats(k, "w", w, K * N, x);
      checkFloats(k, "b", b, N, x);
      checkFloats(
        k,
        "packed",
        packed,
        1.5 * Math.ceil(K / 32) * 32 * Math.ceil(N / 32) * 32 + 16,
        x,
      );
      checkFloats(k, "values", values, M * kk, x), checkIndices(k, "indices", indices, M * kk);
      const r = fn("affine_topk", x)(
        x,
        M,
        K,
        w,
        +wT,
        N,
        b,
        kk,
        packed,
        values,
        indices,
        +bf16,
        threads,
      );
      if (r === -1) return "done";
      if (r === -2) throw new Error(`native ${k}: out of memory for ${M} rows`);
      return "compose";
    },
    projectOutRows(gr, w, out, rows, cols, threads, sumsq) {
      const k = "projectOutRows";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "cols", cols, I64_MAX);
      checkCount(k, "threads", threads);
      const n = rows * cols;
      checkFloats(k, "g", gr, n, gr), checkFloats(k, "w", w, n, gr);
      checkFloats(k, "out", out, n, gr);
      if (sumsq) checkFloats(k, "sumsq", sumsq, 1, gr);
      fn("project_out_rows", gr)(gr, w, out, rows, cols, threads, sumsq);
    },
    sumSquares(x, n, out, threads) {
      const k = "sumSquares";
      checkCount(k, "n", n, I64_MAX), checkCount(k, "threads", threads);
      checkFloats(k, "x", x, n, x), checkFloats(k, "out", out, 1, x);
      fn("sum_squares", x)(x, n, out, threads);
    },
    colVarSum(x, y, rows, cols, out, threads) {
      const k = "colVarSum";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "cols", cols, I64_MAX);
      checkCount(k, "threads", threads);
      checkFloats(k, "x", x, rows * cols, x), checkFloats(k, "out", out, 1, x);
      if (y !== null) checkFloats(k, "y", y, rows * cols, x);
      if (fn("col_var_sum", x)(x, y, rows, cols, out, threads) !== -1) {
        throw new Error(`native ${k}: out of memory for ${cols} columns`);
      }
    },
    transpose(x, rows, cols, out, threads) {
      const k = "transpose";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "cols", cols, I64_MAX);
      checkCount(k, "threads", threads);
      checkFloats(k, "x", x, rows * cols, x), checkFloats(k, "out", out, rows * cols, x);
      fn(k, x)(x, rows, cols, out, threads);
    },
    rowNorms(x, rows, n, out, threads) {
      const k = "rowNorms";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "n", n, I64_MAX);
      checkCount(k, "threads", threads);
      checkFloats(k, "x", x, rows * n, x), checkFloats(k, "out", out, rows, x);
      fn("row_norms", x)(x, rows, n, out, threads);
    },
    relu(x, out, n, threads) {
      const k = "relu";
      checkCount(k, "n", n, I64_MAX), checkCount(k, "threads", threads);
      checkFloats(k, "x", x, n, x), checkFloats(k, "out", out, n, x);
      // The unused second operand is passed as x itself (any valid pointer).
      fn(k, x)(x, x, out, n, threads);
    },
    reluGrad(gr, x, out, n, threads) {
      const k = "reluGrad";
      checkCount(k, "n", n, I64_MAX), checkCount(k, "threads", threads);
      checkFloats(k, "g", gr, n, gr), checkFloats(k, "x", x, n, gr);
      checkFloats(k, "out", out, n, gr);
      fn("relu_grad", gr)(gr, x, out, n, threads);
    },
    sum(x, outer, n, inner, out, threads) {
      const k = "sum";
      checkCount(k, "outer", outer, I64_MAX), checkCount(k, "n", n, I64_MAX);
      checkCount(k, "inner", inner, I64_MAX), checkCount(k, "threads", threads);
      checkFloats(k, "x", x, outer * n * inner, x), checkFloats(k, "out", out, outer * inner, x);
      return fn(k, x)(x, outer, n, inner, out, threads) as number;
    },
    rowNorm(x, wt, b, out, rows, cols, eps, center, plusOne, threads) {
      const k = "rowNorm";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "cols", cols, I64_MAX);
      checkCount(k, "threads", threads);
      checkFloats(k, "x", x, rows * cols, x), checkFloats(k, "out", out, rows * cols, x);
      checkFloats(k, "w", wt, cols, x);
      if (b !== null) checkFloats(k, "b", b, cols, x);
      fn("row_norm", x)(x, wt, b, out, rows, cols, eps, +center, +plusOne, threads);
    },
    activation(x, out, n, kind, threads) {
      const k = "activation";
      checkCount(k, "n", n, I64_MAX), checkCount(k, "threads", threads);
      checkFloats(k, "x", x, n, x), checkFloats(k, "out", out, n, x);
      if (kind !== 0 && kind !== 1 && kind !== 2) {
        throw new RangeError(`native ${k}: kind ${kind} is not 0, 1 or 2`);
      }
      fn(k, x)(x, out, n, kind, threads);
    },
    attnSoftmax(sc, out, mask, rows, t, heads, scale, softcap, window, threads) {
      const k = "attnSoftmax";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "t", t, I64_MAX);
      checkCount(k, "heads", heads, I64_MAX), checkCount(k, "window", window, I64_MAX);
      checkCount(k, "threads", threads);
      if (heads < 1 || t < 1 || rows % (t * heads) !== 0) {
        throw new RangeError(`native ${k}: ${rows} rows are not [B, ${heads}, ${t}] rows`);
      }
      checkFloats(k, "s", sc, rows * t, sc), checkFloats(k, "out", out, rows * t, sc);
      if (mask !== null && !(mask instanceof Uint8Array && mask.length >= (rows / heads))) {
        throw new RangeError(`native ${k}: mask must be a Uint8Array of ${rows / heads} bytes`);
      }
      if (
        fn("attn_softmax", sc)(sc, out, mask, rows, t, heads, scale, softcap, window, threads) !==
          -1
      ) {
        throw new Error(`native ${k}: out of memory for ${threads} rows of ${t}`);
      }
    },
    addRows: (x, y, out, n, m, threads) => rows("addRows", "add_rows", x, y, out, n, m, threads),
    subRows: (x, y, out, n, m, threads) => rows("subRows", "sub_rows", x, y, out, n, m, threads),
    mulRows: (x, y, out, n, m, threads) => rows("mulRows", "mul_rows", x, y, out, n, m, threads),
    fillRows(y, out, rows, m, threads) {
      const k = "fillRows";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "m", m, I64_MAX);
      checkCount(k, "threads", threads);
      checkFloats(k, "y", y, m, y), checkFloats(k, "out", out, rows * m, y);
      fn("fill_rows", y)(y, out, rows, m, threads);
    },
  };
}

export interface NativeOptions {
  /** The C compiler (default SPARSECODER_CC, else `cc`). */
  cc?: string;
  /** Where compiled libraries are kept (default SPARSECODER_CACHE_DIR, else ~/.cache/sparsecoder). */
  cacheDir?: string;
}

/** Compile (if not cached) and open the native kernels now, uncached; never throws. */
export function openNative(o: NativeOptions = {}): NativeStatus {
  try {
    if (readEnv("SPARSECODER_NATIVE") === "0") {
      return { native: null, reason: "disabled by SPARSECODER_NATIVE=0" };
    }
    const ffi = getFfi();
    if (!ffi) return { native: null, reason: NO_FFI };
    const missing = ["ffi", "run", "read", "write"].filter((name) => !granted({ name }));
    if (missing.length) {
      return {
        native: null,
        reason: `Deno permissions not granted: ${missing.map((m) => `--allow-${m}`).join(" ")}`,
      };
    }
    const { path, compiled } = build(
      o.cc ?? readEnv("SPARSECODER_CC") ?? "cc",
      o.cacheDir ?? defaultCacheDir(),
    );
    return {
      native: bind(path, open(ffi, path)),
      reason: `${compiled ? "compiled and loaded" : "loaded"} ${path}`,
    };
  } catch (e) {
    return { native: null, reason: e instanceof Error ? e.message : String(e) };
  }
}

let cached: NativeStatus | undefined;
let enabled = true;

/** Compiles or opens the native kernels once (synchronously) and caches the outcome; never throws. */
export function loadNative(): NativeStatus {
  return cached ??= openNative();
}

/** The native kernels if loaded and switched on, else null (the TypeScript kernels run). */
export function native(): Native | null {
  return enabled ? loadNative().native : null;
}

/** Switch the native kernels on or off for this process (tests compare both); returns the old setting. */
export function setNativeKernels(on: boolean): boolean {
  const prev = enabled;
  enabled = on;
  return prev;
}
