/**
 * A loaded dictionary as the server sees it: the SAELens folder (sae/io/saelens.ts) plus the optional
 * dashboard files beside it, and the three computations the API needs (encode, decode,
 * reconstruct) over host rows. Every tensor made here is released before the call returns, so a
 * long-running server holds flat memory.
 *
 * Optional files in the folder (all validated at load; absent means the dashboard hides the part):
 * - eval.json              saved evaluation (what `sae train` writes): metrics and density_histogram
 * - feature_density.npy    [d_sae] firing frequency of each feature (0..1)
 * - top_examples.json      {"<feature id>": [{"activation": number, "text"?: string, "source"?: string}, ...]}
 * - sample_inputs.npy      [n, d_in] input rows offered by the dashboard's try-it panel
 *                          ([n, n_inputs·d_in] for a crosscoder: each row its inputs one after another)
 *
 * A crosscoder (several inputs sharing one code) reads rows [n_inputs, d_in], host-side flattened
 * to n_inputs·d_in values; crosscoder_view.ts holds its per-input decoder norms and partition.
 * - features/              what `sae features` saved: contexts, histograms, logit tables (feature_view.ts)
 */
import { readFile } from "node:fs/promises";
import type { Tensor } from "../tensor/tensor.ts";
import { tensor } from "../tensor/ops/create.ts";
import { cast } from "../tensor/ops/elementwise.ts";
import { norm } from "../tensor/ops/reduce.ts";
import { reshape, sliceAxis } from "../tensor/ops/shape.ts";
import { dispose, tidy } from "../tensor/scope.ts";
import { getBackend } from "../tensor/registry.ts";
import { loadNpy } from "../data/npy.ts";
import { loadSae, type SavedSae } from "../sae/io/saelens.ts";
import { architecture, isCrosscoder, usesThreshold } from "../sae/arch/registry.ts";
import { asCoo, type Code, decodeWith } from "../sae/code.ts";
import { DENSITY_EDGES } from "../sae/eval/metrics.ts";
import { isSet, type Threshold } from "../sae/threshold.ts";
import { isTopkFamily } from "../sae/arch/architecture.ts";
import { ConfigError, type SaeConfig } from "../sae/config.ts";
import type { Tokenizer } from "../data/text/tokenizer.ts";
import { type FeatureView, loadFeatureView } from "./feature_view.ts";
import { crosscoderFeature, type CrosscoderView, loadCrosscoderView } from "./crosscoder_view.ts";
import { flatParams } from "../sae/crosscoder/crosscoder.ts";

export interface TopExample {
  activation: number;
  text?: string;
  source?: string;
}

export interface ServedDictionary {
  dir: string;
  saved: SavedSae;
  d_in: number;
  d_sae: number;
  d_out: number;
  /** Inputs per row (a crosscoder's n_inputs; 1 otherwise): a row holds inputs·d_in values, its output inputs·d_out. */
  inputs: number;
  inWidth: number;
  outWidth: number;
  backend: string;
  /** ‖W_dec[i]‖ for every feature, computed once at load. */
  decoderNorms: Float32Array;
  evaluation: Record<string, unknown> | null;
  density: Float64Array | null;
  topExamples: Record<string, TopExample[]> | null;
  samples: { rows: number; data: Float32Array } | null;
  /** DIR/features: the feature pages' statistics and the token index. */
  features: FeatureView | null;
  /** Per-input decoder norms, relative norm, DFC partition; null for single-input dictionaries. */
  cross: CrosscoderView | null;
  /** False for BatchTopK without a saved θ: its code depends on the whole batch, so requests are never merged. */
  rowIndependent: boolean;
}

/** One row's non-zero features, largest value first. */
export interface SparseRow {
  indices: number[];
  values: number[];
}

const exists = (p: string) => readFile(p).then(() => true, () => false);

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
}

async function optionalVector(
  path: string,
  length: number,
  what: string,
): Promise<Float64Array | null> {
  if (!(await exists(path))) return null;
  const t = await loadNpy(path);
  try {
    if (t.ndim !== 1 || t.shape[0] !== length) {
      throw new Error(`${path}: ${what} must have shape [${length}], got [${t.shape.join(", ")}]`);
    }
    const v = Float64Array.from(await t.data());
    const bad = v.findIndex((x) => !Number.isFinite(x) || x < 0 || x > 1);
    if (bad >= 0) {
      throw new Error(`${path}: ${what}[${bad}] = ${v[bad]} is not a frequency in [0, 1]`);
    }
    return v;
  } finally {
    t.dispose();
  }
}

async function optionalSamples(
  path: string,
  d_in: number,
): Promise<{ rows: number; data: Float32Array } | null> {
  if (!(await exists(path))) return null;
  const t = await loadNpy(path);
  try {
    if (t.ndim !== 2 || t.shape[1] !== d_in) {
      throw new Error(
        `${path}: sample inputs must have shape [n, ${d_in}], got [${t.shape.join(", ")}]`,
      );
    }
    const data = Float32Array.from(await t.data());
    const bad = data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new Error(`${path}: element ${bad} is not finite`);
    return { rows: t.shape[0], data };
  } finally {
    t.dispose();
  }
}

async function optionalExamples(
  path: string,
  d_sae: number,
): Promise<Record<string, TopExample[]> | null> {
  if (!(await exists(path))) return null;
  const raw = await readJson(path);
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new Error(`${path}: expected an object mapping feature ids to lists of examples`);
  }
  const out: Record<string, TopExample[]> = {};
  for (const [id, list] of Object.entries(raw as Record<string, unknown>)) {
    const n = Number(id);
    if (!/^\d+$/.test(id) || n >= d_sae) {
      throw new Error(`${path}: key ${JSON.stringify(id)} is not a feature id in [0, ${d_sae})`);
    }
    if (!Array.isArray(list)) {
      throw new Error(`${path}: feature ${id}: expected a list of examples`);
    }
    out[id] = list.map((e, i) => {
      const ex = e as Record<string, unknown>;
      if (!ex || typeof ex.activation !== "number" || !Number.isFinite(ex.activation)) {
        throw new Error(
          `${path}: feature ${id}, example ${i}: "activation" must be a finite number`,
        );
      }
      for (const k of ["text", "source"]) {
        if (ex[k] !== undefined && typeof ex[k] !== "string") {
          throw new Error(`${path}: feature ${id}, example ${i}: "${k}" must be a string`);
        }
      }
      return {
        activation: ex.activation,
        ...(ex.text !== undefined ? { text: ex.text as string } : {}),
        ...(ex.source !== undefined ? { source: ex.source as string } : {}),
      };
    });
  }
  return out;
}

/** Load a dictionary folder and its optional dashboard files (`tokenizer`: the served model's). */
export async function loadDictionary(
  dir: string,
  opts: { tokenizer?: Tokenizer } = {},
): Promise<ServedDictionary> {
  const saved = await loadSae(dir);
  const { cfg } = saved;
  if (isCrosscoder(cfg) && cfg.code_norm === "decoupled") {
    dispose(saved.params);
    throw new ConfigError(
      `${dir}: a decoupled crosscoder has one code per input; the server serves one code per row (evaluate it with sae eval, inspect it with sae features)`,
    );
  }
  const cross = await loadCrosscoderView(saved);
  const inputs = cross ? cross.labels.length : 1;
  // A crosscoder feature's norm is that of its whole decoder row over the inputs.
  const decoderNorms = cross
    ? Float32Array.from(cross.norms[0], (_, i) => Math.hypot(...cross.norms.map((n) => n[i])))
    : Float32Array.from(await tidy(() => norm(saved.params.W_dec, -1)).data());
  const evalPath = `${dir}/eval.json`;
  const evaluation = (await exists(evalPath))
    ? (await readJson(evalPath)) as Record<string, unknown>
    : (saved.metrics ?? null);
  if (evaluation !== null && (typeof evaluation !== "object" || Array.isArray(evaluation))) {
    throw new Error(`${evalPath}: expected a JSON object`);
  }
  return {
    dir,
    saved,
    d_in: cfg.d_in,
    d_sae: cfg.d_sae,
    d_out: cfg.d_out,
    inputs,
    inWidth: inputs * cfg.d_in,
    outWidth: inputs * cfg.d_out,
    backend: getBackend().name,
    decoderNorms,
    evaluation,
    density: await optionalVector(`${dir}/feature_density.npy`, cfg.d_sae, "feature density"),
    topExamples: await optionalExamples(`${dir}/top_examples.json`, cfg.d_sae),
    samples: await optionalSamples(`${dir}/sample_inputs.npy`, inputs * cfg.d_in),
    features: await loadFeatureView(dir, cfg.d_sae, opts.tokenizer),
    cross,
    // Without a learned θ the BatchTopK family selects over the whole batch.
    rowIndependent: !(usesThreshold(cfg) && saved.threshold === undefined),
  };
}

/** What /v1/info says of the sparsity: k (TopK family), θ, or that θ is per feature (JumpReLU). */
export function sparsityInfo(
  cfg: SaeConfig,
  threshold: Threshold | undefined,
): { k?: number; threshold?: Threshold | string } {
  const a = architecture(cfg.arch);
  return {
    ...(isTopkFamily(a) ? { k: cfg.k } : {}),
    ...(threshold !== undefined ? { threshold } : {}),
    ...(a.thresholdUse === "parameter" ? { threshold: "per feature (see /v1/features/:id)" } : {}),
  };
}

/** Release the dictionary's tensors. */
export function disposeDictionary(d: ServedDictionary): void {
  dispose(d.saved.params);
}

/** Non-zero entries of a code grouped by row, each row sorted by value (largest first). */
async function codeRows(code: Code, n: number, F: number): Promise<SparseRow[]> {
  const rows: SparseRow[] = Array.from({ length: n }, () => ({ indices: [], values: [] }));
  const coo = asCoo(code);
  if (coo) {
    const [r, c, v] = await Promise.all([coo.rows.data(), coo.cols.data(), coo.values.data()]);
    for (let i = 0; i < v.length; i++) {
      if (v[i] !== 0) {
        rows[r[i]].indices.push(c[i]);
        rows[r[i]].values.push(v[i]);
      }
    }
  } else {
    const f = await (code as { f: Tensor }).f.data();
    for (let b = 0; b < n; b++) {
      const row = rows[b];
      for (let j = b * F, e = j + F; j < e; j++) {
        if (f[j] !== 0) {
          row.indices.push(j - b * F);
          row.values.push(f[j]);
        }
      }
    }
  }
  for (const row of rows) {
    const order = row.indices.map((_, i) => i).sort((a, b) =>
      row.values[b] - row.values[a] || row.indices[a] - row.indices[b]
    );
    row.indices = order.map((i) => row.indices[i]);
    row.values = order.map((i) => Math.fround(row.values[i]));
  }
  return rows;
}

/** Encode n rows (row-major f32, n·d_in values) to their non-zero features. */
export async function encodeRows(
  d: ServedDictionary,
  x: Float32Array,
  n: number,
): Promise<SparseRow[]> {
  const { cfg, params, threshold } = d.saved;
  const arch = architecture(cfg.arch);
  const code = tidy(() => {
    const xt = tensor(x, {
      shape: arch.input === "layers"
        ? [n, 1, cfg.d_in]
        : arch.input === "inputs"
        ? [n, d.inputs, cfg.d_in]
        : [n, cfg.d_in],
    });
    return arch.encodeInference(params, xt, cfg, isSet(threshold) ? threshold : undefined);
  });
  try {
    return await codeRows(code, n, cfg.d_sae);
  } finally {
    dispose(code);
  }
}

/** Decode n sparse rows to [n, d_out] outputs (repeated indices in a row add up). */
export async function decodeRows(d: ServedDictionary, rows: SparseRow[]): Promise<Float32Array> {
  const n = rows.length;
  let total = 0;
  for (const r of rows) total += r.indices.length;
  const ri = new Int32Array(total), ci = new Int32Array(total), vs = new Float32Array(total);
  let o = 0;
  rows.forEach((r, b) => {
    for (let j = 0; j < r.indices.length; j++, o++) {
      ri[o] = b;
      ci[o] = r.indices[j];
      vs[o] = r.values[j];
    }
  });
  const out = tidy(() => {
    // A crosscoder decodes as one SAE over the flattened inputs: x̂ [n, L·d].
    const params = d.cross ? flatParams(d.saved.params) : d.saved.params;
    const coo = {
      rows: tensor(ri, { dtype: "i32" }),
      cols: tensor(ci, { dtype: "i32" }),
      values: tensor(vs),
    };
    const y = decodeWith({ kind: "coo", coo, batch: n }, params.W_dec, params.b_dec);
    return y.dtype === "f32" ? y : cast(y, "f32");
  });
  try {
    return Float32Array.from(await out.data());
  } finally {
    out.dispose();
  }
}

/** Dense codes [n, d_sae] from sparse rows. */
export function denseCodes(rows: SparseRow[], F: number): Float32Array {
  const out = new Float32Array(rows.length * F);
  rows.forEach((r, b) => r.indices.forEach((j, i) => (out[b * F + j] += r.values[i])));
  return out;
}

/** Sparse rows from dense codes [n, F]. */
export function sparseFromDense(codes: Float32Array, n: number, F: number): SparseRow[] {
  return Array.from({ length: n }, (_, b) => {
    const r: SparseRow = { indices: [], values: [] };
    for (let j = 0; j < F; j++) {
      const v = codes[b * F + j];
      if (v !== 0) {
        r.indices.push(j);
        r.values.push(v);
      }
    }
    return r;
  });
}

/** What x̂ is compared with: x itself, or for MLSAE the per-token standardised x the model sees. */
export function reconstructionTarget(
  d: ServedDictionary,
  x: Float32Array,
  n: number,
): Float32Array {
  if (architecture(d.saved.cfg.arch).input !== "layers") return x;
  const w = d.d_in, out = new Float32Array(x.length);
  for (let b = 0; b < n; b++) {
    let mu = 0, v = 0;
    for (let j = 0; j < w; j++) mu += x[b * w + j];
    mu /= w;
    for (let j = 0; j < w; j++) v += (x[b * w + j] - mu) ** 2;
    const s = Math.sqrt(v / w + 1e-5);
    for (let j = 0; j < w; j++) out[b * w + j] = (x[b * w + j] - mu) / s;
  }
  return out;
}

/** Mean over rows of Σ_d (x − x̂)² (as sae/eval/metrics.ts defines mse), mean cosine (0 for a zero row), mean L0. */
export function rowMetrics(
  x: Float32Array,
  xhat: Float32Array,
  n: number,
  rows: SparseRow[],
): { mse: number; cosine: number; l0: number } {
  const w = x.length / n;
  let mse = 0, cos = 0, l0 = 0;
  for (let b = 0; b < n; b++) {
    let se = 0, xy = 0, xx = 0, yy = 0;
    for (let j = b * w; j < (b + 1) * w; j++) {
      const a = x[j], h = xhat[j];
      se += (a - h) ** 2;
      xy += a * h;
      xx += a * a;
      yy += h * h;
    }
    mse += se;
    cos += xx > 0 && yy > 0 ? xy / Math.sqrt(xx * yy) : 0;
    l0 += rows[b].indices.length;
  }
  return { mse: mse / n, cosine: cos / n, l0: l0 / n };
}

/** The log10-density histogram: from the per-feature densities when present, else from eval.json. */
export function densityHistogram(
  d: ServedDictionary,
): { edges: number[]; counts: number[]; source: string } | null {
  if (d.density) {
    const edges = [...DENSITY_EDGES], bins = edges.length - 1, counts = new Array(bins).fill(0);
    const lo = edges[0], width = edges[1] - edges[0];
    for (const f of d.density) {
      counts[Math.min(bins - 1, Math.max(0, Math.floor((Math.log10(f + 1e-10) - lo) / width)))]++;
    }
    return { edges, counts, source: "feature_density.npy" };
  }
  const h = d.evaluation?.density_histogram as { edges?: unknown; counts?: unknown } | undefined;
  if (
    h && Array.isArray(h.edges) && Array.isArray(h.counts) && h.edges.length === h.counts.length + 1
  ) {
    return { edges: h.edges as number[], counts: h.counts as number[], source: "eval.json" };
  }
  return null;
}

/**
 * Everything about one feature; vectors come back from the backend for this call only. A
 * crosscoder's encoder and decoder are one vector per input ([n_inputs][d]).
 */
export async function featureDetail(d: ServedDictionary, id: number) {
  const { params, cfg, threshold } = d.saved;
  const L = d.inputs;
  const parts = tidy(() => ({
    enc: reshape(sliceAxis(params.W_enc, params.W_enc.ndim - 1, id, id + 1), [-1]),
    dec: reshape(d.cross ? sliceAxis(params.W_dec, 1, id, id + 1) : sliceRow(params.W_dec, id), [
      -1,
    ]),
    ...(params.b_enc ? { b: reshape(sliceRow(reshape(params.b_enc, [-1, 1]), id), [-1]) } : {}),
    ...(params.threshold
      ? { th: reshape(sliceRow(reshape(params.threshold, [-1, 1]), id), [-1]) }
      : {}),
  }));
  try {
    const [enc, dec, b, th] = await Promise.all([
      parts.enc.data(),
      parts.dec.data(),
      parts.b?.data(),
      parts.th?.data(),
    ]);
    const perInput = (v: ArrayLike<number>) => {
      const w = v.length / L;
      return Array.from({ length: L }, (_, l) => Array.from(v).slice(l * w, (l + 1) * w));
    };
    // W_enc [L, d, F] sliced at F is [L, d, 1]: already one row per input.
    return {
      id,
      architecture: cfg.arch,
      encoder: d.cross ? perInput(enc) : Array.from(enc),
      decoder: d.cross ? perInput(dec) : Array.from(dec),
      bias: b ? b[0] : null,
      threshold: th ? th[0] : threshold ?? null,
      decoder_norm: d.decoderNorms[id],
      density: d.density ? d.density[id] : null,
      top_examples: d.topExamples ? (d.topExamples[String(id)] ?? []) : null,
      crosscoder: d.cross ? crosscoderFeature(d.cross, id) : null,
    };
  } finally {
    dispose(parts);
  }
}

const sliceRow = (m: Tensor, i: number) => sliceAxis(m, 0, i, i + 1);
