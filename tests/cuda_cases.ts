/**
 * Op cases run on the cpu backend and on the cuda backend and compared: by tests/cuda_vs_cpu.test.ts
 * on a GPU and by tests/cuda_emulated.test.ts on the CPU emulation of the kernels.
 */
import { assertClose, assertEquals } from "./harness.ts";
import * as t from "../mod.ts";
import type { Backend } from "../tensor/backend.ts";
import { cpu } from "../tensor/cpu/backend.ts";
import { cuda } from "../tensor/cuda/backend.ts";

export type T = t.Tensor;
export type Make = (b: Backend) => T | T[];

/** Deterministic pseudo-random values in [lo, hi) (a small LCG: the same on both runtimes). */
function values(n: number, seed: number, lo = -2, hi = 2, ints = false): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const v = lo + ((s >>> 8) / 2 ** 24) * (hi - lo);
    return ints ? Math.floor(v) : v;
  });
}

export const on = (
  b: Backend,
  shape: number[],
  seed: number,
  o: { lo?: number; hi?: number; ints?: boolean; dtype?: t.DType } = {},
) =>
  t.cast(
    t.tensor(new Float32Array(values(shape.reduce((a, c) => a * c, 1), seed, o.lo, o.hi, o.ints)), {
      shape,
      backend: b,
    }),
    o.dtype ?? "f32",
  );

/** Run `make` on both backends and compare every output (exactly for integers and bools). */
export async function same(name: string, make: Make, rtol = 2e-5, atol = 1e-6): Promise<void> {
  // Inputs are made inside tidy and released with it; only the outputs outlive it.
  const outs = [cpu, cuda].map((b) => t.tidy(() => make(b))).map((
    o,
  ) => (Array.isArray(o) ? o : [o]));
  for (let i = 0; i < outs[0].length; i++) {
    const [a, b] = [outs[0][i], outs[1][i]];
    assertEquals(b.shape, a.shape, `${name}[${i}] shape`);
    assertEquals(b.dtype, a.dtype, `${name}[${i}] dtype`);
    const [va, vb] = [await a.data(), await b.data()];
    if (a.dtype === "i32" || a.dtype === "bool") assertEquals([...vb], [...va], `${name}[${i}]`);
    else assertClose(vb, va, { rtol, atol, msg: `${name}[${i}]` });
  }
  t.dispose(outs);
}

export const CASES: [string, Make, number?, number?][] = [];
const add = (name: string, make: Make, rtol?: number, atol?: number) =>
  CASES.push([name, make, rtol, atol]);

for (
  const op of [
    "neg",
    "abs",
    "sign",
    "exp",
    "tanh",
    "sigmoid",
    "erf",
    "relu",
    "sin",
    "cos",
    "floor",
    "ceil",
    "square",
  ] as const
) {
  add(op, (b) => (t as any)[op](on(b, [33, 17], 1)));
}
for (const op of ["log", "sqrt", "rsqrt"] as const) {
  add(op, (b) => (t as any)[op](on(b, [33, 17], 2, { lo: 0.01, hi: 3 })));
}
for (
  const op of [
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "gt",
    "ge",
    "lt",
    "le",
    "eq",
    "ne",
    "pow",
  ] as const
) {
  add(
    `${op} broadcast`,
    (b) =>
      (t as any)[op](on(b, [3, 1, 5], 3, { lo: 0.1, hi: 2 }), on(b, [4, 5], 4, { lo: 0.1, hi: 2 })),
  );
}
add("where", (b) => t.where(t.gt(on(b, [6, 7], 5), 0), on(b, [6, 7], 6), on(b, [7], 7)));
for (const dt of ["bf16", "f16", "i32", "bool", "f64"] as const) {
  add(`cast ${dt}`, (b) => t.cast(t.cast(on(b, [40], 8, { lo: -50, hi: 50 }), dt), "f32"));
}
add("transposed copy", (b) => t.add(t.transpose(on(b, [31, 45], 9)), 0));
for (const axes of [[0], [1], [0, 2], [2], [0, 1, 2]]) {
  add(`sum ${axes}`, (b) => t.sum(on(b, [7, 65, 9], 10), axes), 1e-4);
  add(`max ${axes}`, (b) => t.max(on(b, [7, 65, 9], 11), axes));
  add(`min ${axes}`, (b) => t.min(on(b, [7, 65, 9], 12), axes));
}
// Few outputs over many elements: split in chunks whose partials a second kernel combines.
add("sum of 21000 in chunks", (b) => t.sum(on(b, [300, 70], 19)), 1e-4);
add("max of 21000 in chunks", (b) => t.max(on(b, [300, 70], 20)));
add("sum of a transposed view", (b) => t.sum(t.transpose(on(b, [300, 70], 13)), 1), 1e-4);
add("sum bf16", (b) => t.sum(on(b, [64, 40], 14, { dtype: "bf16" }), 1), 1e-2);
add(
  "mean/var/logsumexp/softmax",
  (
    b,
  ) => [
    t.mean(on(b, [20, 30], 15), 0),
    t.variance(on(b, [20, 30], 15), 1),
    t.logsumexp(on(b, [20, 30], 15), 1),
    t.softmax(on(b, [20, 30], 15)),
  ],
  1e-4,
);
add(
  "argmax/argmin (ties)",
  (
    b,
  ) => [
    t.argmax(on(b, [50, 37], 16, { ints: true, lo: 0, hi: 4 }), 1),
    t.argmin(on(b, [50, 37], 16, { ints: true, lo: 0, hi: 4 }), 0),
  ],
);
add(
  "cumsum",
  (b) => [t.cumsum(on(b, [5, 700], 17), 1), t.cumsum(on(b, [300, 4], 18), 0, { reverse: true })],
  1e-4,
);
// Products of K terms of size ~1: f32 accumulation order differs between BLAS libraries (~1e-6·K).
add("matmul", (b) => t.matmul(on(b, [33, 70], 19), on(b, [70, 21], 20)), 1e-4, 1e-4);
add(
  "matmul transposed operands",
  (b) => t.matmul(t.transpose(on(b, [70, 33], 21)), t.transpose(on(b, [21, 70], 22))),
  1e-4,
  1e-4,
);
add(
  "matmul batched broadcast",
  (b) => t.matmul(on(b, [3, 1, 9, 12], 23), on(b, [4, 12, 5], 24)),
  1e-4,
  1e-4,
);
add(
  "matmul bf16",
  (b) => t.matmul(on(b, [16, 64], 25, { dtype: "bf16" }), on(b, [64, 8], 26, { dtype: "bf16" })),
  2e-2,
  2e-2,
);
add(
  "matmul i32",
  (b) =>
    t.matmul(
      on(b, [5, 6], 27, { ints: true, dtype: "i32" }),
      on(b, [6, 4], 28, { ints: true, dtype: "i32" }),
    ),
);
add("topk rows (ties)", (b) => t.topk(on(b, [64, 1000], 29, { ints: true, lo: 0, hi: 50 }), 17));
add("topk f32 k=64 of 65536", (b) => t.topk(on(b, [8, 65536], 30), 64));
add("batch topk (one row)", (b) => t.topk(on(b, [1, 300_000], 31), 5000));
add(
  "topk bf16 / f64",
  (
    b,
  ) => [
    ...t.topk(on(b, [9, 333], 32, { dtype: "bf16" }), 10),
    ...t.topk(on(b, [9, 333], 32, { dtype: "f64" }), 10),
  ],
);
add(
  "takeAlongAxis",
  (b) =>
    t.takeAlongAxis(
      on(b, [6, 40], 33),
      t.cast(on(b, [6, 9], 34, { ints: true, lo: 0, hi: 40 }), "i32"),
      1,
    ),
);
add(
  "scatterAdd",
  (b) =>
    t.scatterAdd(
      on(b, [50], 35),
      t.cast(on(b, [300], 36, { ints: true, lo: 0, hi: 50 }), "i32"),
      on(b, [300], 37),
      0,
    ),
  1e-4,
);
add(
  "oneHot/concat/pad/slice",
  (
    b,
  ) => [
    t.oneHot(t.cast(on(b, [7], 38, { ints: true, lo: 0, hi: 5 }), "i32"), 5),
    t.concat([on(b, [3, 4], 39), on(b, [3, 2], 40)], 1),
    t.pad(on(b, [3, 4], 41), [[1, 2], [0, 3]]),
    t.add(t.slice(on(b, [9, 9], 42), [2, 1], [7, 8]), 0),
  ],
);
add("spmm / spmmT / sddmm", (b) => {
  const rows = t.cast(on(b, [120], 43, { ints: true, lo: 0, hi: 20 }), "i32"),
    cols = t.cast(on(b, [120], 44, { ints: true, lo: 0, hi: 300 }), "i32");
  const s = { rows, cols, values: on(b, [120], 45) };
  return [
    t.spmm(s, on(b, [300, 24], 46), 20),
    t.spmmT(s, on(b, [20, 24], 47), 300),
    t.sddmm(on(b, [20, 24], 48), on(b, [300, 24], 49), rows, cols),
  ];
}, 1e-4);

/**
 * A clipped, constrained Adam step of a TopK SAE as training takes it (applyStep: the fused Adam
 * applied to each parameter, ∂W_enc transposed as the sparse product gives it, clipping's sums of
 * squares, W_dec's rows renormalised), from saeGrads's gradients.
 */
export const saeStep = (b: Backend): T[] => {
  const [, gWenc, gbenc, gWdec, gbdec] = saeGrads(b);
  const p = {
    W_enc: on(b, [32, 128], 50, { lo: -0.3, hi: 0.3 }),
    b_enc: on(b, [128], 51, { lo: -0.1, hi: 0.1 }),
    W_dec: on(b, [128, 32], 52, { lo: -0.3, hi: 0.3 }),
    b_dec: on(b, [32], 53),
  };
  const g = { W_enc: gWenc, b_enc: gbenc, W_dec: gWdec, b_dec: gbdec };
  const opt = t.chain(t.clipByGlobalNorm(0.05), t.adam({ lr: 1e-2 }));
  let state = opt.init(p), params = p;
  for (let i = 0; i < 2; i++) {
    [params, state] = t.applyStep(opt, g, state, params, {
      unitRows: {
        leaves: new Set([params.W_dec]),
        rows: (w) => t.div(w, t.norm(w, -1, { keepdims: true })),
      },
    });
  }
  return [params.W_enc, params.b_enc, params.W_dec, params.b_dec, t.globalNorm(g)];
};

/** A TopK SAE loss, its gradients and one Adam update. */
export const saeGrads = (b: Backend): T[] => {
  const p = {
    W_enc: on(b, [32, 128], 50, { lo: -0.3, hi: 0.3 }),
    b_enc: on(b, [128], 51, { lo: -0.1, hi: 0.1 }),
    W_dec: on(b, [128, 32], 52, { lo: -0.3, hi: 0.3 }),
    b_dec: on(b, [32], 53),
  };
  const x = on(b, [64, 32], 54);
  const code = t.sae.architecture("topk");
  const cfg = t.sae.resolveConfig({ arch: "topk", d_in: 32, d_sae: 128, k: 8 });
  const [loss, g] = t.valueAndGrad((q: typeof p) => {
    const f = code.encode(q as never, x, cfg);
    const xh = code.decode(q as never, f, cfg);
    return t.mean(t.sum(t.square(t.sub(xh, x)), -1));
  })(p);
  const opt = t.adam({ lr: 1e-3 });
  const [u] = opt.update(g, opt.init(p), p);
  return [loss, g.W_enc, g.b_enc, g.W_dec, g.b_dec, u.W_enc, u.W_dec] as T[];
};
