/**
 * Synthetic activations with known ground truth, the default data source for training sparse
 * dictionaries when there are no activation files ("toy models of superposition" style): each
 * sample is a sparse, non-negative combination of known unit-norm feature directions, so a test
 * can check that a trained dictionary recovers the true features (`featureRecovery`).
 *
 * Which features fire, and how strongly, is drawn on the host from the library's Threefry keys
 * with basic IEEE arithmetic only (our own log and exp), so one seed gives bit-identical codes
 * under Deno and Bun. Activations are then one sparse product `codes @ features` (`spmm`) on the
 * current backend. Active sets are drawn by geometric skipping, not a dense Bernoulli mask: a
 * dense mask needs batch·nFeatures random numbers (16M, ~300 ms, for 4096 × 4096), while
 * skipping needs about two per non-zero.
 */
import * as bits from "../tensor/random_bits.ts";
import { foldIn, key, normal, type PRNGKey, split } from "../tensor/random.ts";
import { keep, tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { tensor } from "../tensor/ops/create.ts";
import { add, cast, div, maximum } from "../tensor/ops/elementwise.ts";
import { argmax, max, norm } from "../tensor/ops/reduce.ts";
import { reshape, sliceAxis, transpose } from "../tensor/ops/shape.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { spmm } from "../tensor/ops/sparse.ts";

/** How large an active feature's coefficient is (always ≥ 0: codes are non-negative). */
export type Magnitude =
  | { kind: "uniform"; min: number; max: number }
  | { kind: "exponential"; mean: number }
  | { kind: "constant"; value: number };

export interface SyntheticConfig {
  /** Activation width. */
  d: number;
  /** Number of true features (usually > d: superposition). */
  nFeatures: number;
  /** Expected number of active features per sample (Σ frequencies, exactly). Default min(5, nFeatures / 2). */
  meanActive?: number;
  /** Feature frequencies follow p_i ∝ (i+1)^-alpha (0 = uniform), capped at 1 with the excess spread over the rest. Default 0.5. */
  alpha?: number;
  /** Default uniform on [0.5, 1.5] (kind "uniform" draws in [min, max]): mean 1, and bounded away from 0 so an active feature is never lost in noise. */
  magnitude?: Magnitude;
  /**
   * G > 0: feature i belongs to group i mod G, led by feature i mod G (its most frequent member).
   * A member fires with probability `correlation` when its leader fires and at a reduced rate
   * otherwise, keeping its power-law marginal where it can; members whose power-law rate is below
   * correlation·p_leader get that as their marginal instead (see `frequencies`). Default 0.
   */
  correlatedGroups?: number;
  /** P(member fires | its leader fired). Default 0.5 (used only with correlatedGroups). */
  correlation?: number;
  /** Std of isotropic Gaussian noise added to every coordinate. Default 0. */
  noise?: number;
  /** Add a fixed random unit-norm offset (one per layer/model), so a decoder bias matters. Default false. */
  bias?: boolean;
  /** Default 0. */
  seed?: number;
  /** L > 1: samples are [batch, L, d]; the same codes drive per-layer directions. Default 1. */
  layers?: number;
  /** Consecutive layers' directions for one feature have cosine 1 − layerDrift (0: identical, 1: unrelated). Default 0.2. */
  layerDrift?: number;
}

/** Paired mode (crosscoders, model diffing): models share most features; some belong to one model. */
export interface PairedConfig extends Omit<SyntheticConfig, "layers" | "layerDrift"> {
  /** Number of models. Default 2. */
  models?: number;
  /** Features exclusive to each model (nFeatures counts all of them: shared + models·exclusive). */
  exclusive: number;
  /** Like layerDrift, between the models' directions for one feature. Default 0: identical directions. */
  modelDrift?: number;
}

export interface SyntheticSource<C = Required<SyntheticConfig>> {
  config: C;
  /**
   * [nFeatures, d] unit-norm true directions ([L | models, nFeatures, d] with layers / paired):
   * Gaussian rows, orthonormal when nFeatures ≤ d (for nFeatures²·d ≤ 2^28; larger ones are left
   * nearly orthogonal, as random directions in many dimensions are).
   */
  features: Tensor;
  /** Exact marginal firing probability of each feature; they sum to meanActive. */
  frequencies: Float64Array;
  /** [d] (or [L | models, d]) when `bias`, else null. */
  offset: Tensor | null;
  /** Group of each feature when correlatedGroups > 0 (leaders are features 0..G-1), else null. */
  groups: Int32Array | null;
  /**
   * Batch number `index` (keyed by foldIn(dataKey, index), so any batch can be regenerated alone):
   * x [size, d] ([size, L | models, d]) and, with `withCodes`, the true codes [size, nFeatures]
   * ([size, models, nFeatures] paired: a model's codes are zero on features it lacks).
   */
  batch(index: number, size: number, opts?: { withCodes?: boolean }): { x: Tensor; codes?: Tensor };
}

export interface PairedSource extends SyntheticSource<Required<PairedConfig>> {
  /** For each true feature: -1 shared, else the index of the one model that has it. */
  owner: Int32Array;
}

// ---- validation ---------------------------------------------------------------------------------

const P = "synthetic: ";

function fail(msg: string): never {
  throw new RangeError(P + msg);
}
const show = (
  v: unknown,
): string => (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));

function posInt(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    fail(`${name} must be a positive integer, got ${show(v)}`);
  }
  return v;
}
function nonNegInt(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    fail(`${name} must be a non-negative integer, got ${show(v)}`);
  }
  return v;
}
function finite(name: string, v: unknown, lo: number, hi: number, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi) {
    fail(`${name} must be ${what}, got ${show(v)}`);
  }
  return v;
}

function magnitudeOf(m: unknown): Magnitude {
  if (m === undefined) return { kind: "uniform", min: 0.5, max: 1.5 };
  const r = m as Record<string, unknown>;
  const kind = typeof m === "object" && m !== null ? r.kind : undefined;
  if (kind === "uniform") {
    const lo = finite("magnitude.min", r.min, 0, Infinity, "a finite number ≥ 0");
    const hi = finite("magnitude.max", r.max, 0, Infinity, "a finite number ≥ 0");
    if (!(hi > lo)) {
      fail(`magnitude.max must be greater than magnitude.min, got min ${lo}, max ${hi}`);
    }
    return { kind, min: lo, max: hi };
  }
  if (kind === "exponential") {
    const mean = finite("magnitude.mean", r.mean, 0, Infinity, "a finite number > 0");
    if (mean === 0) fail(`magnitude.mean must be a finite number > 0, got 0`);
    return { kind, mean };
  }
  if (kind === "constant") {
    const value = finite("magnitude.value", r.value, 0, Infinity, "a finite number > 0");
    if (value === 0) fail(`magnitude.value must be a finite number > 0, got 0`);
    return { kind, value };
  }
  return fail(
    `magnitude.kind must be "uniform", "exponential" or "constant", got ${show(kind ?? m)}`,
  );
}

const COMMON = [
  "d",
  "nFeatures",
  "meanActive",
  "alpha",
  "magnitude",
  "correlatedGroups",
  "correlation",
  "noise",
  "bias",
  "seed",
];

function checkKeys(cfg: object, allowed: string[], mode: string): void {
  if (typeof cfg !== "object" || cfg === null) fail(`config must be an object, got ${show(cfg)}`);
  for (const k of Object.keys(cfg)) {
    if (!allowed.includes(k)) {
      fail(`unknown option ${JSON.stringify(k)} in ${mode} mode (known: ${allowed.join(", ")})`);
    }
  }
}

function resolveCommon(
  c: SyntheticConfig,
): Required<Omit<SyntheticConfig, "layers" | "layerDrift">> {
  const d = posInt("d", c.d);
  const nFeatures = posInt("nFeatures", c.nFeatures);
  const meanActive = finite(
    "meanActive",
    c.meanActive ?? Math.min(5, nFeatures / 2),
    0,
    nFeatures,
    `a number in (0, nFeatures = ${nFeatures}]`,
  );
  if (meanActive === 0) fail(`meanActive must be a number in (0, nFeatures = ${nFeatures}], got 0`);
  const alpha = finite("alpha", c.alpha ?? 0.5, 0, 64, "a number in [0, 64]");
  const magnitude = magnitudeOf(c.magnitude);
  const correlatedGroups = nonNegInt("correlatedGroups", c.correlatedGroups ?? 0);
  if (correlatedGroups > nFeatures) {
    fail(`correlatedGroups must be at most nFeatures = ${nFeatures}, got ${correlatedGroups}`);
  }
  const correlation = finite("correlation", c.correlation ?? 0.5, 0, 1, "a number in [0, 1]");
  const noise = finite("noise", c.noise ?? 0, 0, Infinity, "a finite number ≥ 0");
  const bias = c.bias ?? false;
  if (typeof bias !== "boolean") fail(`bias must be a boolean, got ${show(bias)}`);
  const seed = c.seed ?? 0;
  if (typeof seed !== "number" || !Number.isInteger(seed) || seed < 0 || seed > 2 ** 53) {
    fail(`seed must be an integer in [0, 2^53], got ${show(seed)}`);
  }
  return {
    d,
    nFeatures,
    meanActive,
    alpha,
    magnitude,
    correlatedGroups,
    correlation,
    noise,
    bias,
    seed,
  };
}

// ---- deterministic arithmetic -------------------------------------------------------------------

const LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;

/** e^y from basic ops only: Math.exp/Math.pow may differ in the last bit between V8 and JSC. */
function detExp(y: number): number {
  if (y < -700) return 0;
  const k = Math.round(y / 0.6931471805599453);
  const r = (y - k * LN2_HI) - k * LN2_LO; // |r| ≤ 0.35: 20 Taylor terms are exact to rounding
  let term = 1, s = 1;
  for (let n = 1; n <= 20; n++) {
    term = (term * r) / n;
    s += term;
  }
  for (let i = 0; i < k; i++) s *= 2; // powers of two scale exactly
  for (let i = 0; i > k; i--) s *= 0.5;
  return s;
}

/**
 * Firing rates. Feature i's base rate is p_i = min(1, s·(i+1)^-alpha). Without groups it fires
 * independently at p_i. In a group, a member fires with probability rho when its leader fires and
 * at its own rate b_i otherwise, with p_L·rho + (1 − p_L)·b_i = p_i; when rho·p_L > p_i no b_i ≥ 0
 * exists, so b_i = 0 and the member's marginal is rho·p_L. The scale s is solved for so that the
 * marginals sum to `mean` (with no groups this is water-filling: mass clipped at 1 goes to the rest).
 */
function firingRates(
  n: number,
  alpha: number,
  mean: number,
  G: number,
  rho: number,
): { own: Float64Array; marginal: Float64Array } {
  const w = new Float64Array(n);
  for (let i = 0; i < n; i++) w[i] = alpha === 0 ? 1 : detExp(-alpha * bits.detLog(i + 1));
  const own = new Float64Array(n), marginal = new Float64Array(n);
  const rates = (s: number): number => {
    let total = 0;
    for (let i = 0; i < n; i++) {
      const p = w[i] > 0 ? Math.min(1, s * w[i]) : 0; // w underflows to 0 for huge alpha·log i
      if (G === 0 || i < G) {
        own[i] = marginal[i] = p;
      } else {
        const pL = w[i % G] > 0 ? Math.min(1, s * w[i % G]) : 0;
        own[i] = pL >= 1 ? 0 : Math.min(1, Math.max(0, (p - pL * rho) / (1 - pL)));
        marginal[i] = pL * rho + (1 - pL) * own[i];
      }
      total += marginal[i];
    }
    return total;
  };
  // The total rises with s (except for a drop where a leader reaches p = 1): bracket, then bisect.
  let hi = mean / w.reduce((a, b) => a + b, 0);
  for (let it = 0; rates(hi) < mean; it++, hi *= 2) {
    if (it > 2200) { // s has been infinite for a while: every feature is as frequent as it can be
      fail(
        `meanActive = ${mean} cannot be reached: at most ${
          rates(Infinity)
        } features are active on average` +
          (G > 0
            ? " (a member fires with probability `correlation` when its leader always fires)"
            : ""),
      );
    }
  }
  let lo = hi;
  while (lo > 0 && rates(lo) > mean) lo /= 2;
  for (let it = 0; it < 200; it++) {
    const mid = 0.5 * (lo + hi);
    if (mid === lo || mid === hi) break;
    if (rates(mid) < mean) lo = mid;
    else hi = mid;
  }
  rates(hi);
  return { own, marginal };
}

/** log(1 − p), accurate for tiny p (where 1 − p rounds to 1 and a plain log gives 0). */
function log1mp(p: number): number {
  if (!(p > 0 && p < 1)) return 0;
  if (p >= 1e-3) return bits.detLog(1 - p);
  let term = p, s = 0;
  for (let k = 1; k <= 6; k++, term *= p) s -= term / k;
  return s;
}

/** Rows of `a` ([n, d], f64) scaled to unit norm in place. */
function normaliseRows(a: Float64Array, n: number, d: number): void {
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += a[i * d + j] * a[i * d + j];
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < d; j++) a[i * d + j] *= inv;
  }
}

/**
 * Modified Gram-Schmidt on the host (bit-exact everywhere, unlike a threaded BLAS), O(n²d): rows
 * of `a` [n, d] become orthonormal, and orthogonal to the rows of `basis` (orthonormal) if given.
 */
function orthonormalise(a: Float64Array, n: number, d: number, basis?: Float64Array): void {
  const nb = basis ? basis.length / d : 0;
  const project = (ri: number, src: Float64Array, rk: number) => {
    let dot = 0;
    for (let j = 0; j < d; j++) dot += a[ri + j] * src[rk + j];
    for (let j = 0; j < d; j++) a[ri + j] -= dot * src[rk + j];
  };
  for (let i = 0; i < n; i++) {
    const ri = i * d;
    for (let pass = 0; pass < 2; pass++) { // a second pass restores orthogonality lost to rounding
      for (let k = 0; k < nb; k++) project(ri, basis!, k * d);
      for (let k = 0; k < i; k++) project(ri, a, k * d);
    }
    let s = 0;
    for (let j = 0; j < d; j++) s += a[ri + j] * a[ri + j];
    const inv = 1 / Math.sqrt(s);
    for (let j = 0; j < d; j++) a[ri + j] *= inv;
  }
}

const ORTHO_BUDGET = 2 ** 28; // n²·d multiply-adds: ~0.2 s

/**
 * `views` sets of n unit directions in R^d, [views·n·d]. View 0 is random Gaussian rows, made
 * orthonormal when n ≤ d (and n²d ≤ ORTHO_BUDGET). View v moves each direction of view v-1 along a fresh random unit
 * direction orthogonal to it, f' = (1 − drift)·f + √(1 − (1 − drift)²)·g, so consecutive views
 * have cosine exactly 1 − drift. When 2n ≤ d the g's are orthonormal and orthogonal to all of
 * view v-1, which keeps every view orthonormal too; otherwise later views are only nearly so.
 */
function directions(k: PRNGKey, views: number, n: number, d: number, drift: number): Float64Array {
  const out = new Float64Array(views * n * d);
  const a = bits.normalFloats(foldIn(k, 0).words, n * d, "f64") as Float64Array;
  // Past ORTHO_BUDGET the host Gram-Schmidt would take seconds, and random directions in that
  // many dimensions are already within a few 1/√d of orthogonal.
  const ortho = n <= d && n * n * d <= ORTHO_BUDGET;
  if (ortho) orthonormalise(a, n, d);
  else normaliseRows(a, n, d);
  out.set(a, 0);
  const keepC = 1 - drift, moveC = Math.sqrt(Math.max(0, 1 - keepC * keepC));
  for (let v = 1; v < views; v++) {
    const g = bits.normalFloats(foldIn(k, v).words, n * d, "f64") as Float64Array;
    const prev = out.subarray((v - 1) * n * d, v * n * d);
    if (ortho && 2 * n <= d) orthonormalise(g, n, d, prev);
    else {
      for (let i = 0; i < n; i++) {
        const ri = i * d;
        let dot = 0, s = 0;
        for (let j = 0; j < d; j++) dot += g[ri + j] * prev[ri + j];
        for (let j = 0; j < d; j++) {
          g[ri + j] -= dot * prev[ri + j];
          s += g[ri + j] * g[ri + j];
        }
        const inv = s > 0 ? 1 / Math.sqrt(s) : 0; // d = 1: nothing is orthogonal; the feature stays put
        for (let j = 0; j < d; j++) g[ri + j] *= inv;
      }
    }
    for (let i = 0; i < n * d; i++) g[i] = keepC * prev[i] + moveC * g[i];
    if (d === 1) normaliseRows(g, n, d);
    out.set(g, v * n * d);
  }
  return out;
}

/** A stream of f64 uniforms in [0, 1), drawn in chunks from foldIn(key, chunk). */
class Uniforms {
  private buf: Float64Array = new Float64Array(0);
  private i = 0;
  private chunk = 0;
  constructor(private readonly key: PRNGKey) {}
  next(): number {
    if (this.i === this.buf.length) {
      this.buf = bits.uniformFloats(
        foldIn(this.key, this.chunk++).words,
        2048,
        "f64",
      ) as Float64Array;
      this.i = 0;
    }
    return this.buf[this.i++];
  }
}

/** Growable COO triples (sample, feature, magnitude). */
class Entries {
  rows = new Int32Array(1024);
  cols = new Int32Array(1024);
  vals = new Float32Array(1024);
  n = 0;
  push(r: number, c: number, v: number): void {
    if (this.n === this.rows.length) {
      const grow = <T extends Int32Array | Float32Array>(a: T): T => {
        const b = new (a.constructor as { new (n: number): T })(a.length * 2);
        b.set(a);
        return b;
      };
      this.rows = grow(this.rows);
      this.cols = grow(this.cols);
      this.vals = grow(this.vals);
    }
    this.rows[this.n] = r;
    this.cols[this.n] = c;
    this.vals[this.n++] = v;
  }
}

// ---- the sampler --------------------------------------------------------------------------------

interface Plan {
  c: Required<Omit<SyntheticConfig, "layers" | "layerDrift">>;
  views: number; // layers or models; 1 in plain mode
  featureShape: number[];
  xShape: (b: number) => number[];
  owner: Int32Array | null; // paired: model that has each feature, -1 shared
  drift: number;
}

/** What drawing one batch's active features needs: the rates and how magnitudes are drawn. */
interface Firing {
  n: number;
  /** Number of correlated groups (0: features fire independently) and P(member | leader). */
  G: number;
  rho: number;
  /** Each feature's own firing rate (see firingRates) and log(1 − rate), for geometric skipping. */
  own: Float64Array;
  logMiss: Float64Array;
  draw: (u: Uniforms) => number;
}

/** COO triples (row, column, value) of a sparse matrix. */
interface Coo {
  rows: Int32Array;
  cols: Int32Array;
  vals: Float32Array;
}

/** How an active feature's coefficient is drawn from the stream of uniforms. */
function magnitudeDraw(mag: Magnitude): (u: Uniforms) => number {
  return mag.kind === "uniform"
    ? (u: Uniforms) => mag.min + (mag.max - mag.min) * u.next()
    : mag.kind === "exponential"
    ? (u: Uniforms) => -mag.mean * bits.detLog(1 - u.next()) // 1 − u in (0, 1]: finite
    : () => mag.value;
}

/** The true directions as a kept tensor of plan.featureShape. */
function trueFeatures(k: PRNGKey, plan: Plan): Tensor {
  const dirs = directions(k, plan.views, plan.c.nFeatures, plan.c.d, plan.drift);
  return keep(tensor(new Float32Array(dirs), { shape: plan.featureShape }));
}

/** A random unit-norm offset per view, as a kept tensor [d] (one view) or [views, d]. */
function randomOffset(k: PRNGKey, plan: Plan): Tensor {
  const { views, c: { d } } = plan;
  const o = bits.normalFloats(k.words, views * d, "f64") as Float64Array;
  normaliseRows(o, views, d);
  return keep(
    tensor(new Float32Array(o), { shape: plan.featureShape.length === 2 ? [d] : [views, d] }),
  );
}

/** Active (sample, feature, magnitude) triples of one batch of B samples, in feature order. */
function sampleActive(f: Firing, k: PRNGKey, B: number): Entries {
  const { n, G, rho, own, logMiss, draw } = f;
  const u = new Uniforms(k);
  const e = new Entries();
  const leaderAt: Int32Array[] = [];
  const mark = G > 0 ? new Uint8Array(B) : null;
  // Geometric skipping: the gap to the next success of a Bernoulli(p) sequence is
  // floor(log U / log(1 − p)), so only the successes cost random numbers.
  const run = (i: number, skip: Uint8Array | null) => {
    const p = own[i];
    if (p <= 0) return;
    for (let s = -1;;) {
      s += p >= 1 ? 1 : 1 + Math.floor(bits.detLog(1 - u.next()) / logMiss[i]);
      if (!(s < B)) return; // also ends the run on a gap too large to represent
      if (skip === null || skip[s] === 0) e.push(s, i, draw(u));
    }
  };
  for (let i = 0; i < n; i++) {
    if (G === 0) run(i, null);
    else if (i < G) {
      const start = e.n;
      run(i, null);
      leaderAt[i] = e.rows.slice(start, e.n);
    } else {
      // With its leader: fire with probability rho; without: at the member's own rate.
      const at = leaderAt[i % G];
      for (let j = 0; j < at.length; j++) {
        mark![at[j]] = 1;
        if (u.next() < rho) e.push(at[j], i, draw(u));
      }
      run(i, mark);
      for (let j = 0; j < at.length; j++) mark![at[j]] = 0;
    }
  }
  return e;
}

/**
 * The active entries as one sparse matrix over every view: row s·V + v takes feature f of view v
 * at column v·n + f (a paired model's row skips the features it lacks). One view: as they are.
 */
function spreadOverViews(e: Entries, views: number, n: number, owner: Int32Array | null): Coo {
  const rows = e.rows.subarray(0, e.n),
    cols = e.cols.subarray(0, e.n),
    vals = e.vals.subarray(0, e.n);
  if (views === 1) return { rows, cols, vals };
  const r = new Int32Array(e.n * views),
    cc = new Int32Array(e.n * views),
    vv = new Float32Array(e.n * views);
  let m = 0;
  for (let j = 0; j < e.n; j++) {
    const f = cols[j], o = owner === null ? -1 : owner[f];
    for (let v = 0; v < views; v++) {
      if (o >= 0 && o !== v) continue; // the feature does not exist in this model
      r[m] = rows[j] * views + v;
      cc[m] = v * n + f;
      vv[m++] = vals[j];
    }
  }
  return { rows: r.subarray(0, m), cols: cc.subarray(0, m), vals: vv.subarray(0, m) };
}

/** The true codes, dense: [size, n], or [size, models, n] paired (zero where a model lacks one). */
function trueCodes(e: Entries, coo: Coo, size: number, plan: Plan): Tensor {
  const { views, owner, c: { nFeatures: n } } = plan;
  const width = owner === null ? n : views * n;
  const dense = new Float32Array(size * width);
  if (owner === null) {
    for (let j = 0; j < e.n; j++) dense[e.rows[j] * n + e.cols[j]] = e.vals[j];
  } else {
    const { rows, cols, vals } = coo;
    for (let j = 0; j < rows.length; j++) dense[rows[j] * n + (cols[j] % n)] = vals[j]; // row s·M + v
  }
  return tensor(dense, { shape: owner === null ? [size, n] : [size, views, n] });
}

/** x = codes @ features (one sparse product for every view), plus the offset and noise. */
function activations(
  coo: Coo,
  size: number,
  plan: Plan,
  features: Tensor,
  offset: Tensor | null,
  kNoise: PRNGKey,
): Tensor {
  const { views, c: { d, nFeatures: n, noise } } = plan;
  return tidy(() => {
    // tensor() copies
    const sparse = { rows: tensor(coo.rows), cols: tensor(coo.cols), values: tensor(coo.vals) };
    let x = reshape(
      spmm(sparse, reshape(features, [views * n, d]), size * views),
      plan.xShape(size),
    );
    if (offset) x = add(x, offset);
    if (noise > 0) x = add(x, normal(kNoise, x.shape, { std: noise }));
    return x;
  });
}

function checkBatchArgs(index: number, size: number): void {
  if (!Number.isInteger(index) || index < 0 || index > 2 ** 53) {
    fail(`batch index must be an integer in [0, 2^53], got ${show(index)}`);
  }
  if (!Number.isInteger(size) || size < 1) {
    fail(`batch size must be a positive integer, got ${show(size)}`);
  }
}

/**
 * The source: rates, directions and offset fixed by the seed; each batch draws its active
 * features from its own key, spreads them over the views and multiplies out the activations.
 */
function build<C>(plan: Plan, config: C): SyntheticSource<C> {
  const { c } = plan;
  const { nFeatures: n, correlatedGroups: G, correlation: rho } = c;
  const [kFeatures, kOffset, kData] = split(key(c.seed), 3);

  const { own, marginal: frequencies } = firingRates(n, c.alpha, c.meanActive, G, rho);
  const firing: Firing = {
    n,
    G,
    rho,
    own,
    logMiss: own.map(log1mp),
    draw: magnitudeDraw(c.magnitude),
  };
  const groups = G > 0 ? Int32Array.from({ length: n }, (_, i) => i % G) : null;
  const features = trueFeatures(kFeatures, plan);
  const offset = c.bias ? randomOffset(kOffset, plan) : null;

  function batch(
    index: number,
    size: number,
    opts: { withCodes?: boolean } = {},
  ): { x: Tensor; codes?: Tensor } {
    checkBatchArgs(index, size);
    const [kCodes, kNoise] = split(foldIn(kData, index));
    const active = sampleActive(firing, kCodes, size);
    const coo = spreadOverViews(active, plan.views, n, plan.owner);
    const codes = opts.withCodes ? trueCodes(active, coo, size, plan) : undefined;
    const x = activations(coo, size, plan, features, offset, kNoise);
    return codes ? { x, codes } : { x };
  }

  return { config, features, frequencies, offset, groups, batch };
}

/** A seeded source of sparse synthetic activations with known features; see SyntheticConfig. */
export function makeSynthetic(cfg: SyntheticConfig): SyntheticSource {
  checkKeys(cfg, [...COMMON, "layers", "layerDrift"], "single-source");
  const c = resolveCommon(cfg);
  const layers = posInt("layers", cfg.layers ?? 1);
  const layerDrift = finite("layerDrift", cfg.layerDrift ?? 0.2, 0, 1, "a number in [0, 1]");
  const { d, nFeatures: n } = c;
  return build({
    c,
    views: layers,
    featureShape: layers > 1 ? [layers, n, d] : [n, d],
    xShape: (b) => (layers > 1 ? [b, layers, d] : [b, d]),
    owner: null,
    drift: layerDrift,
  }, { ...c, layers, layerDrift });
}

/**
 * Several "models" seeing the same inputs: every feature fires at one rate across models, shared
 * features appear in all of them, and each model has `exclusive` features of its own, placed at
 * evenly spaced frequency ranks (so every model's own features span common and rare ones).
 */
export function makePairedSynthetic(cfg: PairedConfig): PairedSource {
  checkKeys(cfg, [...COMMON, "models", "exclusive", "modelDrift"], "paired");
  const c = resolveCommon(cfg);
  const models = posInt("models", cfg.models ?? 2);
  if (models < 2) fail(`models must be an integer ≥ 2, got ${models}`);
  const exclusive = nonNegInt("exclusive", cfg.exclusive);
  const modelDrift = finite("modelDrift", cfg.modelDrift ?? 0, 0, 1, "a number in [0, 1]");
  const { d, nFeatures: n } = c;
  const total = models * exclusive;
  if (total > n) {
    fail(`exclusive = ${exclusive} per model needs models·exclusive = ${total} ≤ nFeatures = ${n}`);
  }
  const owner = new Int32Array(n).fill(-1);
  for (let j = 0; j < total; j++) owner[Math.floor(((j + 0.5) * n) / total)] = j % models;
  const src = build({
    c,
    views: models,
    featureShape: [models, n, d],
    xShape: (b) => [b, models, d],
    owner,
    drift: modelDrift,
  }, { ...c, models, exclusive, modelDrift });
  return { ...src, owner };
}

// ---- evaluation ---------------------------------------------------------------------------------

/**
 * How well a learned decoder [F, d] covers the true features [n, d]: for each true feature the
 * best cosine over decoder rows and its index; `recovered` counts best cosines above `threshold`;
 * MMCS is their mean. For layered/paired sources pass one slice, e.g. `featureSlice(src.features, l)`.
 */
export async function featureRecovery(
  truth: Tensor,
  decoder: Tensor,
  threshold = 0.9,
): Promise<
  {
    recovered: number;
    fraction: number;
    mmcs: number;
    bestCosine: Float32Array;
    bestIndex: Int32Array;
  }
> {
  if (truth.ndim !== 2) {
    throw new RangeError(
      `featureRecovery: truth must be [nFeatures, d], got [${
        truth.shape.join(", ")
      }] (pass one layer or model: featureSlice(features, i))`,
    );
  }
  if (decoder.ndim !== 2 || decoder.shape[1] !== truth.shape[1]) {
    throw new RangeError(
      `featureRecovery: decoder must be [F, ${truth.shape[1]}] like truth [${
        truth.shape.join(", ")
      }], got [${decoder.shape.join(", ")}]`,
    );
  }
  if (decoder.shape[0] === 0) throw new RangeError("featureRecovery: decoder has no rows");
  if (!Number.isFinite(threshold)) {
    throw new RangeError(`featureRecovery: threshold must be finite, got ${threshold}`);
  }
  const [n, F] = [truth.shape[0], decoder.shape[0]];
  const unit = (x: Tensor) => {
    const y = cast(x, "f32");
    return div(y, maximum(norm(y, 1, { keepdims: true }), 1e-12)); // zero rows get cosine 0
  };
  const bestCosine = new Float32Array(n), bestIndex = new Int32Array(n);
  const decT = tidy(() => transpose(unit(decoder)));
  const rowsPer = Math.max(1, Math.floor(2 ** 24 / F)); // bound the [rows, F] cosine block
  try {
    for (let s = 0; s < n; s += rowsPer) {
      const e = Math.min(n, s + rowsPer);
      const [best, idx] = tidy(() => {
        const cos = matmul(unit(sliceAxis(truth, 0, s, e)), decT);
        return [max(cos, 1), argmax(cos, 1)];
      });
      bestCosine.set(await best.data() as Float32Array, s);
      bestIndex.set(await idx.data() as Int32Array, s);
      best.dispose();
      idx.dispose();
    }
  } finally {
    decT.dispose();
  }
  let recovered = 0, total = 0;
  for (let i = 0; i < n; i++) {
    if (bestCosine[i] > threshold) recovered++;
    total += bestCosine[i];
  }
  return {
    recovered,
    fraction: n ? recovered / n : 0,
    mmcs: n ? total / n : 0,
    bestCosine,
    bestIndex,
  };
}

/** Layer (or model) `i` of a [views, n, d] feature tensor, as [n, d]. */
export function featureSlice(features: Tensor, i: number): Tensor {
  if (features.ndim !== 3) {
    throw new RangeError(
      `featureSlice: features must be [views, nFeatures, d], got [${features.shape.join(", ")}]`,
    );
  }
  if (!Number.isInteger(i) || i < 0 || i >= features.shape[0]) {
    throw new RangeError(`featureSlice: index ${i} out of range for ${features.shape[0]} views`);
  }
  return reshape(sliceAxis(features, 0, i, i + 1), features.shape.slice(1));
}
