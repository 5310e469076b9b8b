import { assert, assertClose, assertEquals, test } from "./harness.ts";
import * as t from "../mod.ts";
import { resolveConfig, type SaeConfig, type SaeConfigInput } from "../sae/config.ts";
import type { SaeParams } from "../sae/params.ts";
import type { Batch } from "../sae/arch/architecture.ts";
import {
  DENSITY_EDGES,
  type EvalMetrics,
  evaluate,
  formatMetricsTable,
  mmcs,
} from "../sae/eval/metrics.ts";

// ---- a direct plain-JS evaluation, the reference every metric is checked against ----------------

type Mat = number[][];
const rowsOf = (x: t.Tensor): Mat => {
  const v = Array.from(x.dataSync()), w = x.shape[x.ndim - 1];
  return Array.from({ length: v.length / w }, (_, i) => v.slice(i * w, (i + 1) * w));
};
const vec = (x: t.Tensor | undefined): number[] => (x ? Array.from(x.dataSync()) : []);

/** The code of each row, dense, as the architectures define it (relu, topk, batchtopk with θ). */
function refCode(p: SaeParams, cfg: SaeConfig, xs: Mat, threshold?: number): Mat {
  const W = rowsOf(p.W_enc), be = vec(p.b_enc), bd = vec(p.b_dec);
  return xs.map((x) => {
    const xin = cfg.apply_b_dec_to_input ? x.map((v, i) => v - bd[i]) : x;
    const pre = be.map((b, j) => xin.reduce((s, v, i) => s + v * W[i][j], b));
    if (cfg.arch === "relu") return pre.map((v) => Math.max(v, 0));
    if (cfg.arch === "batchtopk") return pre.map((v) => (Math.max(v, 0) > threshold! ? v : 0));
    const keep = new Set(
      pre.map((v, j) => [v, j]).sort((a, b) => b[0] - a[0]).slice(0, cfg.k).map((e) => e[1]),
    );
    return pre.map((v, j) => (keep.has(j) ? Math.max(v, 0) : 0));
  });
}

function refDecode(p: SaeParams, f: Mat): Mat {
  const W = rowsOf(p.W_dec), bd = vec(p.b_dec);
  return f.map((row) => bd.map((b, i) => row.reduce((s, v, j) => s + v * W[j][i], b)));
}

const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i], 0);
const avg = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
/** Σ_d population variance of the columns, two-pass. */
function totalVar(m: Mat): number {
  let s = 0;
  for (let j = 0; j < m[0].length; j++) {
    const mu = avg(m.map((r) => r[j]));
    s += avg(m.map((r) => (r[j] - mu) ** 2));
  }
  return s;
}

function refMetrics(x: Mat, xh: Mat, f: Mat, dense = 0.1) {
  const r = x.map((row, i) => row.map((v, j) => v - xh[i][j]));
  const fve = 1 - totalVar(r) / totalVar(x);
  const freq = f[0].map((_, j) => f.filter((row) => row[j] > 0).length / f.length);
  return {
    tokens: x.length,
    mse: avg(r.map((row) => dot(row, row))),
    l2_loss: avg(r.map((row) => Math.sqrt(dot(row, row)))),
    fraction_variance_explained: fve,
    fvu: 1 - fve,
    l0: avg(f.map((row) => row.filter((v) => v > 0).length)),
    l1: avg(f.map((row) => row.reduce((s, v) => s + Math.abs(v), 0))),
    cosine: avg(x.map((row, i) => {
      const d = Math.sqrt(dot(row, row) * dot(xh[i], xh[i]));
      return d > 0 ? dot(row, xh[i]) / d : 0;
    })),
    l2_ratio: avg(x.map((row, i) => Math.sqrt(dot(xh[i], xh[i]) / dot(row, row)))),
    relative_reconstruction_bias: avg(xh.map((row) => dot(row, row))) /
      avg(x.map((row, i) => dot(row, xh[i]))),
    frac_alive: freq.filter((q) => q > 0).length / freq.length,
    dead: freq.filter((q) => q === 0).length,
    dense: freq.filter((q) => q > dense).length,
    feature_density: freq,
  };
}

const SCALARS = [
  "tokens",
  "mse",
  "l2_loss",
  "fraction_variance_explained",
  "fvu",
  "l0",
  "l1",
  "cosine",
  "l2_ratio",
  "relative_reconstruction_bias",
  "frac_alive",
  "dead",
  "dense",
] as const;

function assertMetrics(
  got: EvalMetrics,
  want: ReturnType<typeof refMetrics>,
  tol: { rtol: number; atol: number },
  msg = "",
): void {
  for (const k of SCALARS) assertClose([got[k]], [want[k]], { ...tol, msg: `${msg}${k}` });
  assertClose(got.feature_density, want.feature_density, { ...tol, msg: `${msg}feature_density` });
  assertEquals(
    got.density_histogram.counts.reduce((s, c) => s + c, 0),
    want.feature_density.length,
    `${msg}histogram total`,
  );
}

/** Random params (one feature made dead by a very negative bias) and data with a large mean. */
function setup(seed: number, c: SaeConfigInput, N: number, dtype: "f32" | "f64" = "f64") {
  const cfg = resolveConfig(c);
  const ks = t.random.split(t.random.key(seed), 6);
  const b_enc = t.tidy(() =>
    t.concat([
      t.full([1], -100, dtype),
      t.random.normal(ks[2], [cfg.d_sae - 1], { dtype, std: 0.1 }),
    ])
  );
  const params: SaeParams = {
    W_enc: t.random.normal(ks[0], [cfg.d_in, cfg.d_sae], { dtype }),
    W_dec: t.random.normal(ks[1], [cfg.d_sae, cfg.d_out], { dtype, std: 0.3 }),
    b_enc,
    b_dec: t.random.normal(ks[3], [cfg.d_out], { dtype, std: 0.1 }),
  };
  const x = t.tidy(() => t.add(t.random.normal(ks[4], [N, cfg.d_in], { dtype }), 3));
  const y = cfg.arch === "transcoder"
    ? t.random.normal(ks[5], [N, cfg.d_out], { dtype })
    : undefined;
  return { cfg, params, x, y };
}

function split(b: Batch, sizes: number[]): Batch[] {
  let s = 0;
  return sizes.map((n) => {
    const out = {
      x: t.sliceAxis(b.x, 0, s, s + n),
      y: b.y ? t.sliceAxis(b.y, 0, s, s + n) : undefined,
    };
    s += n;
    return out;
  });
}

// ---- the metrics against the reference ------------------------------------------------------------

for (
  const c of [{ arch: "relu", d_in: 6, d_sae: 10 }, {
    arch: "topk",
    d_in: 6,
    d_sae: 10,
    k: 3,
  }] as SaeConfigInput[]
) {
  test(`evaluate (${c.arch}): every metric equals a direct computation, f64 and f32`, async () => {
    for (const dtype of ["f64", "f32"] as const) {
      const { cfg, params, x } = setup(1, c, 40, dtype);
      const f = refCode(params, cfg, rowsOf(x));
      const want = refMetrics(rowsOf(x), refDecode(params, f), f);
      assert(
        want.dead >= 1 && want.frac_alive >= 0.5,
        `the setup has a dead feature and live ones: ${want.feature_density}`,
      );
      const got = await evaluate(params, cfg, [{ x }]);
      assertMetrics(
        got,
        want,
        dtype === "f64" ? { rtol: 1e-10, atol: 1e-10 } : { rtol: 2e-4, atol: 2e-5 },
        `${dtype} `,
      );
    }
  });

  test(`evaluate (${c.arch}): streaming over uneven batches equals one big batch, sync and async`, async () => {
    const { cfg, params, x } = setup(2, c, 40);
    const whole = await evaluate(params, cfg, [{ x }]);
    const parts = split({ x }, [5, 11, 1, 23]);
    const streamed = await evaluate(params, cfg, parts);
    async function* gen() {
      for (const b of parts) yield b;
    }
    const asyncStreamed = await evaluate(params, cfg, gen());
    for (const got of [streamed, asyncStreamed]) {
      for (const k of SCALARS) {
        assertClose([got[k]], [whole[k]], { rtol: 1e-12, atol: 1e-12, msg: k });
      }
      assertClose(got.feature_density, whole.feature_density, { rtol: 1e-12, atol: 0 });
      assertEquals(got.density_histogram, whole.density_histogram);
    }
  });
}

test("evaluate: transcoders compare x̂ with the target y", async () => {
  const { cfg, params, x, y } = setup(
    3,
    { arch: "transcoder", d_in: 5, d_sae: 8, d_out: 3, k: 2 },
    30,
  );
  const f = refCode(params, cfg, rowsOf(x));
  const want = refMetrics(rowsOf(y!), refDecode(params, f), f);
  assertMetrics(await evaluate(params, cfg, split({ x, y }, [10, 20])), want, {
    rtol: 1e-10,
    atol: 1e-10,
  });
});

test("evaluate: BatchTopK with an inference threshold θ keeps activations above θ", async () => {
  const { cfg, params, x } = setup(4, { arch: "batchtopk", d_in: 6, d_sae: 10, k: 3 }, 24);
  const f = refCode(params, cfg, rowsOf(x), 0.5);
  const want = refMetrics(rowsOf(x), refDecode(params, f), f);
  assertMetrics(await evaluate(params, cfg, split({ x }, [7, 17]), { threshold: 0.5 }), want, {
    rtol: 1e-10,
    atol: 1e-10,
  });
});

// ---- constructed dictionaries ---------------------------------------------------------------------

function identity(cfg: SaeConfig, dtype: "f32" | "f64" = "f32"): SaeParams {
  return {
    W_enc: t.eye(cfg.d_in, cfg.d_sae, 0, dtype),
    W_dec: t.eye(cfg.d_sae, cfg.d_out, 0, dtype),
    b_enc: t.zeros([cfg.d_sae], dtype),
    b_dec: t.zeros([cfg.d_out], dtype),
  };
}

test("evaluate: perfect reconstruction gives fve 1, mse 0, cosine 1, l2_ratio 1, bias 1", async () => {
  const cfg = resolveConfig({ arch: "relu", d_in: 8, d_sae: 8 });
  const x = t.abs(t.random.normal(t.random.key(5), [64, 8]));
  const m = await evaluate(identity(cfg), cfg, split({ x }, [32, 32]));
  assertEquals([m.mse, m.l2_loss, m.fvu], [0, 0, 0]);
  assertClose(
    [m.fraction_variance_explained, m.cosine, m.l2_ratio, m.relative_reconstruction_bias],
    [1, 1, 1, 1],
    { rtol: 1e-6, atol: 1e-6 },
  );
});

test("evaluate: a zero dictionary explains no variance (fve ≤ 0), whatever its bias", async () => {
  const cfg = resolveConfig({ arch: "relu", d_in: 6, d_sae: 4 });
  const x = t.random.normal(t.random.key(6), [50, 6]);
  for (const b_dec of [t.zeros([6]), t.full([6], 0.7)]) {
    const p: SaeParams = {
      W_enc: t.zeros([6, 4]),
      W_dec: t.zeros([4, 6]),
      b_enc: t.zeros([4]),
      b_dec,
    };
    const m = await evaluate(p, cfg, [{ x }]);
    assert(m.fraction_variance_explained <= 1e-12, `fve ${m.fraction_variance_explained}`);
    assertClose([m.fvu, m.l0, m.l1, m.frac_alive, m.dead], [1, 0, 0, 0, 4], { atol: 1e-12 });
  }
});

test("evaluate: variances of data with a large mean do not cancel (f32, streamed)", async () => {
  // x̂ = the constant 1e4, so r = x − 1e4 has the variance of x and fve must be ≈ 0. Raw Σx² − (Σx)²/N
  // in f32 per batch would lose every digit here (Σx² ≈ 1e8·N against a variance of N).
  const cfg = resolveConfig({ arch: "relu", d_in: 4, d_sae: 3 });
  const p: SaeParams = {
    W_enc: t.zeros([4, 3]),
    W_dec: t.zeros([3, 4]),
    b_enc: t.zeros([3]),
    b_dec: t.full([4], 1e4),
  };
  const x = t.add(t.random.normal(t.random.key(16), [600, 4]), 1e4);
  const m = await evaluate(p, cfg, split({ x }, [100, 250, 250]));
  assert(Math.abs(m.fraction_variance_explained) < 1e-4, `fve ${m.fraction_variance_explained}`);
});

test("evaluate: dead, alive and dense counts, densities and the histogram on a constructed code", async () => {
  // Identity ReLU dictionary: feature j fires on a token exactly when x[:, j] > 0.
  const cfg = resolveConfig({ arch: "relu", d_in: 5, d_sae: 5 });
  const N = 20, fires = [20, 10, 1, 0, 2];
  const x = t.tensor(Array.from({ length: N }, (_, i) => fires.map((n) => (i < n ? 1 + i : -1))));
  const m = await evaluate(identity(cfg), cfg, split({ x }, [3, 17]));
  assertClose(m.feature_density, [1, 0.5, 0.05, 0, 0.1], { atol: 1e-15 });
  assertEquals([m.dead, m.dense, m.frac_alive, m.l0], [1, 2, 0.8, 33 / 20]);
  assertEquals(m.density_histogram.edges, [...DENSITY_EDGES]);
  assertEquals(m.density_histogram.edges.length, 51);
  assertClose([m.density_histogram.edges[0], m.density_histogram.edges[50]], [-10, 0], {
    atol: 1e-12,
  });
  const counts = new Array(50).fill(0);
  for (const bin of [49, 48, 43, 0, 45]) counts[bin]++; // log10 of 1, 0.5, 0.05, 0 (+1e-10), 0.1
  assertEquals(m.density_histogram.counts, counts);
  // "Dense" is strictly above the threshold: 0.1 is not dense at 0.1, and is at 0.04.
  assertEquals((await evaluate(identity(cfg), cfg, [{ x }], { denseThreshold: 0.04 })).dense, 4);
});

test("evaluate: histogram counts sum to d_sae on random dictionaries", async () => {
  const { cfg, params, x } = setup(7, { arch: "topk", d_in: 8, d_sae: 64, k: 4 }, 100, "f32");
  const m = await evaluate(params, cfg, [{ x }]);
  assertEquals(m.density_histogram.counts.reduce((s, c) => s + c, 0), 64);
  assertEquals(m.density_histogram.counts.length, 50);
});

// ---- MLSAE --------------------------------------------------------------------------------------

const EPS = 1e-5;
const standardizeRow = (r: number[]) => {
  const mu = avg(r), v = avg(r.map((a) => (a - mu) ** 2));
  return r.map((a) => (a - mu) / Math.sqrt(v + EPS));
};

test("evaluate (mlsae): metrics, per-layer metrics and latent layer distributions equal a direct computation", async () => {
  const cfg = resolveConfig({ arch: "mlsae", d_in: 5, d_sae: 12, k: 3 });
  const B = 16, L = 4;
  const ks = t.random.split(t.random.key(8), 5);
  const params: SaeParams = {
    W_enc: t.random.normal(ks[0], [5, 12], { dtype: "f64" }),
    W_dec: t.random.normal(ks[1], [12, 5], { dtype: "f64", std: 0.3 }),
    b_enc: t.random.normal(ks[2], [12], { dtype: "f64", std: 0.1 }),
    b_dec: t.random.normal(ks[3], [5], { dtype: "f64", std: 0.1 }),
  };
  const x = t.random.normal(ks[4], [B, L, 5], { dtype: "f64" });
  const xs = rowsOf(x).map(standardizeRow); // row b·L + l
  const f = refCode(params, cfg, xs), xh = refDecode(params, f);
  const got = await evaluate(params, cfg, split({ x }, [5, 11]));
  assertMetrics(got, refMetrics(xs, xh, f), { rtol: 1e-9, atol: 1e-9 });
  const layer = (m: Mat, l: number) => m.filter((_, i) => i % L === l);
  const want = { fvu: [] as number[], mse: [] as number[], l0: [] as number[] };
  for (let l = 0; l < L; l++) {
    const ref = refMetrics(layer(xs, l), layer(xh, l), layer(f, l));
    want.fvu.push(ref.fvu);
    want.mse.push(ref.mse);
    want.l0.push(ref.l0);
  }
  for (const k of ["fvu", "mse", "l0"] as const) {
    assertClose(got.per_layer![k], want[k], { rtol: 1e-9, atol: 1e-9, msg: k });
  }
  const mean: number[] = [], std: number[] = [];
  for (let j = 0; j < 12; j++) {
    const act = Array.from({ length: L }, (_, l) => layer(f, l).reduce((s, row) => s + row[j], 0));
    const tot = act.reduce((s, a) => s + a, 0);
    const mu = act.reduce((s, a, l) => s + (l * a) / tot, 0);
    mean.push(tot > 0 ? mu : NaN);
    std.push(tot > 0 ? Math.sqrt(act.reduce((s, a, l) => s + ((l - mu) ** 2 * a) / tot, 0)) : NaN);
  }
  assertClose(got.latent_layer_distribution!.mean, mean, { rtol: 1e-9, atol: 1e-9 });
  assertClose(got.latent_layer_distribution!.std, std, { rtol: 1e-9, atol: 1e-9 });
});

test("evaluate (mlsae): constructed layers give known per-layer metrics and layer distributions", async () => {
  // d = 2: a token (a, b) standardises to ±c(1, −1); the identity dictionary fires feature 0 when a > b.
  // Layer 0 always fires feature 0, layer 1 feature 1, layer 2 alternates.
  const cfg = resolveConfig({ arch: "mlsae", d_in: 2, d_sae: 2, k: 2 });
  const B = 6, L = 3;
  const tok = (
    first: boolean,
    shift: number,
  ) => (first ? [1 + shift, -1 + shift] : [-1 + shift, 1 + shift]);
  const x = t.tensor(
    Array.from({ length: B }, (_, b) => [tok(true, b), tok(false, 2 * b), tok(b % 2 === 0, -b)]),
  );
  const m = await evaluate(identity(cfg), cfg, [{ x }]);
  const c2 = 1 / (1 + EPS); // c² for variance 1
  assertEquals(m.tokens, B * L);
  assertClose(m.per_layer!.mse, [c2, c2, c2], { rtol: 1e-6 });
  assertEquals(m.per_layer!.l0, [1, 1, 1]);
  // Layers 0 and 1 have constant targets (zero variance: FVU undefined); in layer 2 the residual
  // (0, −c) or (−c, 0) has a quarter of the target's variance.
  assert(
    Number.isNaN(m.per_layer!.fvu[0]) && Number.isNaN(m.per_layer!.fvu[1]),
    `fvu ${m.per_layer!.fvu}`,
  );
  assertClose([m.per_layer!.fvu[2]], [0.25], { rtol: 1e-6 });
  // Feature 0: p = (2/3, 0, 1/3); feature 1: p = (0, 2/3, 1/3).
  assertClose(m.latent_layer_distribution!.mean, [2 / 3, 4 / 3], { rtol: 1e-6 });
  assertClose(m.latent_layer_distribution!.std, [Math.sqrt(8 / 9), Math.sqrt(2 / 9)], {
    rtol: 1e-6,
  });
  assert(formatMetricsTable(m).includes("layer 2 fvu"), "the table lists per-layer rows");
});

test("evaluate (mlsae): a latent that never fires has NaN layer statistics", async () => {
  const cfg = resolveConfig({ arch: "mlsae", d_in: 2, d_sae: 3, k: 2 });
  const p = identity(cfg);
  p.b_enc = t.tensor([0, 0, -100]);
  const x = t.random.normal(t.random.key(9), [4, 2, 2]);
  const m = await evaluate(p, cfg, [{ x }]);
  assert(
    Number.isNaN(m.latent_layer_distribution!.mean[2]) &&
      Number.isNaN(m.latent_layer_distribution!.std[2]),
  );
  assertEquals(m.dead, 1);
});

// ---- validation, memory, table ------------------------------------------------------------------

async function rejects(p: Promise<unknown>, ...fragments: string[]): Promise<void> {
  try {
    await p;
  } catch (e) {
    for (const f of fragments) {
      assert(
        String((e as Error).message).includes(f),
        `message ${JSON.stringify((e as Error).message)} lacks ${JSON.stringify(f)}`,
      );
    }
    return;
  }
  throw new Error(`expected a rejection mentioning ${fragments.join(", ")}`);
}

test("evaluate: errors name the field and the shapes", async () => {
  const cfg = resolveConfig({ arch: "relu", d_in: 4, d_sae: 6 });
  const p = identity(cfg);
  const x = t.zeros([3, 4]);
  await rejects(
    evaluate({ ...p, W_enc: t.zeros([5, 6]) }, cfg, [{ x }]),
    "params.W_enc",
    "[5, 6]",
    "[4, 6]",
  );
  await rejects(
    evaluate({ ...p, W_dec: t.zeros([6, 3]) }, cfg, [{ x }]),
    "params.W_dec",
    "[6, 3]",
    "[6, 4]",
  );
  await rejects(
    evaluate(p, cfg, [{ x }, { x: t.zeros([3, 5]) }]),
    "batch 1",
    "x has shape [3, 5]",
    "d_in = 4",
  );
  await rejects(
    evaluate(p, cfg, [{ x, y: t.zeros([2, 4]) }]),
    "batch 0",
    "y has shape [2, 4]",
    "d_out = 4",
  );
  await rejects(evaluate(p, cfg, []), "no tokens");
  const tc = resolveConfig({ arch: "transcoder", d_in: 4, d_sae: 6, d_out: 2, k: 2 });
  await rejects(evaluate(identity(tc), tc, [{ x }]), "transcoder", "targets y", "d_out = 2");
  const ml = resolveConfig({ arch: "mlsae", d_in: 4, d_sae: 6, k: 2 });
  await rejects(
    evaluate(identity(ml), ml, [{ x }]),
    "x has shape [3, 4]",
    "[batch, layers, d_in = 4]",
  );
  await rejects(
    evaluate(identity(ml), ml, [{ x: t.zeros([2, 3, 4]) }, { x: t.zeros([2, 2, 4]) }]),
    "batch 1",
    "2 layers",
    "had 3",
  );
});

test("evaluate and mmcs release every per-batch tensor", async () => {
  const { cfg, params, x } = setup(10, { arch: "topk", d_in: 6, d_sae: 10, k: 3 }, 40, "f32");
  const parts = split({ x }, [10, 10, 20]);
  await evaluate(params, cfg, parts); // warm caches
  const before = t.memoryStats().liveBuffers;
  await evaluate(params, cfg, parts);
  await evaluate(params, cfg, split({ x }, [40]), { useInferenceEncoding: false });
  await mmcs(params.W_dec, params.W_dec, { chunkRows: 3 });
  assertEquals(t.memoryStats().liveBuffers, before, "live buffers");
});

test("formatMetricsTable: two columns, one row per scalar metric", async () => {
  const { cfg, params, x } = setup(11, { arch: "relu", d_in: 6, d_sae: 10 }, 20, "f32");
  const m = await evaluate(params, cfg, [{ x }]);
  const lines = formatMetricsTable(m).split("\n");
  assert(lines[0].startsWith("metric") && lines[0].trimEnd().endsWith("value"), lines[0]);
  for (const k of SCALARS) assert(lines.some((l) => l.startsWith(k + " ")), `row ${k}`);
  const fve = lines.find((l) => l.startsWith("fraction_variance_explained"))!;
  assertClose([Number(fve.trim().split(/\s+/).pop())], [m.fraction_variance_explained], {
    rtol: 1e-5,
    atol: 1e-6,
  });
  assert(lines.some((l) => l.startsWith("log10 density")), "histogram row");
});

// ---- MMCS ---------------------------------------------------------------------------------------

test("mmcs: identical → 1, shuffled rows → 1, orthogonal → 0", async () => {
  const a = t.random.normal(t.random.key(12), [20, 8]);
  const same = await mmcs(a, a);
  assertClose([same.mmcs], [1], { rtol: 1e-6 });
  assertClose(same.best, new Array(20).fill(1), { rtol: 1e-6 });
  const perm = t.random.permutation(t.random.key(13), 20);
  const shuffled = await mmcs(a, t.mul(t.take(a, perm, 0), 2.5), { chunkRows: 7 }); // scale does not matter
  assertClose([shuffled.mmcs], [1], { rtol: 1e-6 });
  assertClose(shuffled.best, new Array(20).fill(1), { rtol: 1e-6 });
  const eye = t.eye(6);
  const ortho = await mmcs(t.sliceAxis(eye, 0, 0, 3), t.sliceAxis(eye, 0, 3, 6));
  assertEquals([ortho.mmcs, ...ortho.best], [0, 0, 0, 0]);
  assert(ortho.best instanceof Float32Array);
});

test("mmcs: equals a direct computation, chunked or not; rejects mismatched widths", async () => {
  const a = t.random.normal(t.random.key(14), [11, 5]),
    b = t.random.normal(t.random.key(15), [7, 5]);
  const A = rowsOf(a), Bm = rowsOf(b);
  const best = A.map((r) =>
    Math.max(...Bm.map((s) => dot(r, s) / Math.sqrt(dot(r, r) * dot(s, s))))
  );
  for (const chunkRows of [undefined, 1, 4, 100]) {
    const got = await mmcs(a, b, { chunkRows });
    assertClose(got.best, best, { rtol: 1e-5, atol: 1e-6 });
    assertClose([got.mmcs], [avg(best)], { rtol: 1e-5, atol: 1e-6 });
  }
  await rejects(mmcs(a, t.zeros([3, 4])), "mmcs", "[11, 5]", "[3, 4]");
});
