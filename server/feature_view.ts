/**
 * The statistics `sae features` saved in DIR/features (format sparsecoder.features/1 or /2,
 * docs/features.md), held on the host for the feature pages: contexts rendered from bytes with
 * each token's span (data/text/token_spans.ts), the activation histogram, density, logit tables,
 * interval samples, per-slice and per-domain counts, crosscoder decoder norms; and the token index
 * the search answers from. The index is built here at load, from the saved top contexts: token id
 * → the features whose top contexts peak on that token, so it costs at most F · top entries and
 * needs no change to the files `sae features` writes.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Tensor } from "../tensor/tensor.ts";
import { dispose } from "../tensor/scope.ts";
import { tokenSpans } from "../data/text/token_spans.ts";
import { loadTokenizer, type Tokenizer } from "../data/text/tokenizer.ts";
import { readFeatures } from "../sae/eval/features_file.ts";

type Host = Float32Array | Float64Array | Int32Array;

export interface FeatureView {
  dir: string;
  about: Record<string, unknown>;
  version: number;
  /** F features, top slots, W = before + 1 + after, S slices, the token budget scanned. */
  F: number;
  top: number;
  before: number;
  W: number;
  S: number;
  scanned: number;
  /** Every saved tensor as a host array, and its shape. */
  arrays: Record<string, Host>;
  shapes: Record<string, number[]>;
  /** Text of ids; null: contexts are shown as ids. */
  tokenizer: Tokenizer | null;
  /** token id → [feature, contexts peaking on it, best activation there], strongest first. */
  index: Map<number, [number, number, number][]>;
}

/** A context window as the dashboard draws it: text, and per token its id, span and activation. */
export interface RenderedContext {
  value: number;
  text: string;
  ids: number[];
  spans: [number, number][];
  acts: number[];
  /** The slot's maximum is token `before` of the window. */
  max_at: number;
  slice?: string | null;
  domain?: string | null;
}

/**
 * DIR/features read for serving; null when the folder has none. Errors name the file and the
 * mismatch. The text comes from `tokenizer` (the served model's), else from the model features.json
 * names when that is a folder here with a tokenizer.json, else contexts are shown as ids.
 */
export async function loadFeatureView(
  dir: string,
  d_sae: number,
  tokenizer?: Tokenizer,
): Promise<FeatureView | null> {
  const fdir = join(dir, "features");
  if (!existsSync(join(fdir, "features.json"))) return null;
  const r = await readFeatures(fdir);
  const model = r.about.model;
  const tok = tokenizer ??
    (typeof model === "string" && existsSync(join(model, "tokenizer.json"))
      ? await loadTokenizer(model)
      : null);
  const arrays: Record<string, Host> = {}, shapes: Record<string, number[]> = {};
  const all: Record<string, Tensor> = { ...r.contexts, ...(r.stats ?? {}) };
  try {
    for (const [k, t] of Object.entries(all)) {
      arrays[k] = (await t.data()) as Host;
      shapes[k] = [...t.shape];
    }
  } finally {
    dispose(all);
  }
  const num = (k: string) => {
    const v = r.about[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      throw new Error(`${fdir}/features.json: "${k}" must be a non-negative integer, got ${v}`);
    }
    return v;
  };
  const F = num("features"), top = num("top"), before = num("before"), after = num("after");
  if (F !== d_sae) {
    throw new Error(
      `${fdir}: the statistics are of ${F} features, the dictionary has ${d_sae} (run sae features ${dir} again)`,
    );
  }
  const W = before + 1 + after;
  const want: Record<string, number[]> = { values: [F, top], tokens: [F, top, W], fires: [F] };
  for (const [k, shape] of Object.entries(want)) {
    if (shapes[k]?.join() !== shape.join()) {
      throw new Error(
        `${fdir}/contexts.safetensors: ${k} has shape [${
          shapes[k] ?? "missing"
        }], features.json says [${shape}]`,
      );
    }
  }
  const view: FeatureView = {
    dir: fdir,
    about: r.about,
    version: r.version,
    F,
    top,
    before,
    W,
    S: typeof r.about.slices === "number" ? r.about.slices : 1,
    scanned: typeof r.about.tokens_scanned === "number" ? r.about.tokens_scanned : 0,
    arrays,
    shapes,
    tokenizer: tok,
    index: tokenIndex(
      arrays.values as Float32Array,
      arrays.tokens as Int32Array,
      F,
      top,
      W,
      before,
    ),
  };
  return view;
}

/** token id → features whose top contexts peak on it: [feature, count, best value], most contexts first. */
function tokenIndex(
  values: Float32Array,
  tokens: Int32Array,
  F: number,
  top: number,
  W: number,
  before: number,
): Map<number, [number, number, number][]> {
  const index = new Map<number, [number, number, number][]>();
  for (let f = 0; f < F; f++) {
    const mine = new Map<number, [number, number, number]>();
    for (let s = 0; s < top; s++) {
      const v = values[f * top + s];
      if (v === -Infinity) continue;
      const id = tokens[(f * top + s) * W + before];
      if (id < 0) continue;
      const e = mine.get(id);
      if (e) {
        e[1]++;
        e[2] = Math.max(e[2], v);
      } else mine.set(id, [f, 1, v]);
    }
    for (const [id, e] of mine) {
      const list = index.get(id);
      if (list) list.push(e);
      else index.set(id, [e]);
    }
  }
  for (const list of index.values()) list.sort((a, b) => b[1] - a[1] || b[2] - a[2] || a[0] - b[0]);
  return index;
}

/** One token's text for tables (logits, search): its decoded bytes, or the id. */
export function tokenText(view: { tokenizer: Tokenizer | null }, id: number): string {
  return tokenSpans(view.tokenizer, [id]).text;
}

/** Window `o` (an offset into a [.., W] tokens/acts pair) as the dashboard draws it. */
function rendered(
  v: FeatureView,
  tokens: Int32Array,
  acts: Float32Array,
  o: number,
  value: number,
): RenderedContext {
  const ids = Array.from(tokens.subarray(o * v.W, (o + 1) * v.W));
  const { text, spans } = tokenSpans(v.tokenizer, ids);
  return {
    value,
    text,
    ids,
    spans,
    acts: Array.from(acts.subarray(o * v.W, (o + 1) * v.W), (a) => Math.fround(a)),
    max_at: v.before,
  };
}

const names = (v: FeatureView, key: string): string[] | null => {
  const d = v.about[key];
  return Array.isArray(d) ? d.map(String) : null;
};

/** The statistics of feature `f`, for GET /v1/features/:id. */
export function featureStatsDetail(v: FeatureView, f: number) {
  const a = v.arrays, sh = v.shapes;
  const domainNames = (v.about.domains as { names?: string[] } | null)?.names ?? null;
  const sliceNames = names(v, "slice_names");
  const label = (list: string[] | null, i: number) => (i >= 0 && list ? list[i] ?? null : null);
  const contexts: RenderedContext[] = [];
  for (let s = 0; s < v.top; s++) {
    const i = f * v.top + s, value = (a.values as Float32Array)[i];
    if (value === -Infinity) continue;
    const c = rendered(v, a.tokens as Int32Array, a.acts as Float32Array, i, value);
    if (a.slices) c.slice = label(sliceNames, a.slices[i]);
    if (a.domains) c.domain = label(domainNames, a.domains[i]);
    contexts.push(c);
  }
  const fires = a.fires[f];
  const row = (k: string) => {
    const t = a[k];
    if (!t) return null;
    const w = t.length / v.F;
    return Array.from(t.subarray(f * w, (f + 1) * w));
  };
  let histogram = null;
  if (a.hist) {
    const counts = row("hist")!, M = a.hist_scale[f], bins = counts.length;
    histogram = { scale: M, edges: counts.map((_, j) => (j * M) / bins).concat(M), counts };
  }
  let intervals = null;
  if (a.interval_counts) {
    const Q = sh.interval_counts[1], M = a.hist_scale ? a.hist_scale[f] : 0;
    const K = a.sample_values ? sh.sample_values[2] : 0;
    intervals = Array.from({ length: Q }, (_, q) => {
      const samples: RenderedContext[] = [];
      for (let k = 0; k < K; k++) {
        const i = (f * Q + q) * K + k, value = (a.sample_values as Float32Array)[i];
        if (value === -Infinity) continue;
        const c = rendered(
          v,
          a.sample_tokens as Int32Array,
          a.sample_acts as Float32Array,
          i,
          value,
        );
        if (a.sample_slices) c.slice = label(sliceNames, a.sample_slices[i]);
        if (a.sample_domains) c.domain = label(domainNames, a.sample_domains[i]);
        samples.push(c);
      }
      return {
        low: (q * M) / Q,
        high: ((q + 1) * M) / Q,
        count: a.interval_counts[f * Q + q],
        samples,
      };
    }).reverse();
  }
  const logits = (ids: string, vals: string) => {
    if (!a[ids]) return null;
    const s = sh[ids], k = s[s.length - 1], L = s.length === 3 ? s[1] : 1;
    return Array.from({ length: L }, (_, l) =>
      Array.from({ length: k }, (_, j) => {
        const at = (f * L + l) * k + j, id = a[ids][at];
        return { id, token: tokenText(v, id), value: a[vals][at] };
      }));
  };
  const per = (k: string, list: string[] | null) => {
    const r = row(k);
    return r && list ? Object.fromEntries(list.map((n, i) => [n, r[i]])) : r;
  };
  return {
    fires,
    density: v.scanned ? fires / (v.scanned * v.S) : null,
    max_activation: contexts[0]?.value ?? null,
    mean_activation: a.act_sum && fires > 0 ? a.act_sum[f] / fires : null,
    contexts,
    histogram,
    intervals,
    logits: {
      up: logits("logit_up_ids", "logit_up"),
      down: logits("logit_down_ids", "logit_down"),
    },
    slice_fires: per("slice_fires", sliceNames),
    domain_fires: per("domain_fires", domainNames),
    domain_share: per("domain_share", domainNames),
    decoder_norms: row("decoder_norms"),
    relative_norm: a.relative_norm ? a.relative_norm[f] : null,
  };
}

export interface TokenMatch {
  id: number;
  contexts: number;
  max_activation: number;
  density: number | null;
}

/** The features whose top contexts peak on token `id`, most such contexts first, then strongest. */
export function featuresOnToken(v: FeatureView, id: number, limit: number): TokenMatch[] {
  return (v.index.get(id) ?? []).slice(0, limit).map(([f, n, best]) => ({
    id: f,
    contexts: n,
    max_activation: best,
    density: v.scanned ? v.arrays.fires[f] / (v.scanned * v.S) : null,
  }));
}

/** What /v1/info says of the statistics. */
export function featureViewInfo(v: FeatureView | null) {
  if (!v) return null;
  const { about } = v;
  return {
    format: about.format,
    kind: about.kind ?? null,
    model: about.model ?? null,
    hook: about.hook ?? null,
    tokens_scanned: v.scanned,
    top: v.top,
    window: { before: v.before, after: v.W - v.before - 1 },
    slices: names(v, "slice_names"),
    domains: (about.domains as { names?: string[] } | null)?.names ?? null,
    text: v.tokenizer !== null,
    indexed_tokens: v.index.size,
  };
}
