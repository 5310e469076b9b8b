/**
 * The feature statistics on disk, `DIR/features/` (format `sparsecoder.features/2`, see
 * docs/features.md): `contexts.safetensors` (the top contexts and firing counts, the tensors of
 * format /1 unchanged, so a /1 reader reads a /2 folder), `stats.safetensors` (histograms,
 * interval samples, per-slice and per-domain counts, logit effects, decoder norms) and
 * `features.json` (what was scanned and how). Each file is written atomically; both safetensors
 * carry the run id that features.json names, and features.json is written last, so a reader that
 * finds the three ids equal has one complete run. `readFeatures` reads /1 and /2 and refuses
 * anything else by name.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { ensureDir, writeJsonAtomic } from "../../data/atomic.ts";
import { loadSafetensors, saveSafetensors } from "../../data/safetensors.ts";
import { readFile } from "node:fs/promises";
import type { FeatureStats } from "./feature_stats.ts";
import type { LogitEffects } from "./logit_effects.ts";

export const FEATURES_FORMAT = "sparsecoder.features/2";
const READABLE = ["sparsecoder.features/1", FEATURES_FORMAT];

/** The share of top contexts a domain must hold for a feature to count as that domain's. */
export const DOMAIN_RULE = 0.9;

export interface DomainSummary {
  /** [F, D] each label's share of the feature's top contexts whose label is known. */
  share: Float32Array;
  /** Features that fired, and those of them with all `top` slots filled. */
  alive: number;
  full: number;
  /** Features with all slots filled whose largest share is ≥ DOMAIN_RULE, in all and per label. */
  meeting: number;
  byLabel: Record<string, number>;
  /** Per feature the label meeting the rule, -1 for none. */
  owner: Int32Array;
}

/** Per feature the share of its top contexts in each label, and who meets the rule. */
export function domainSummary(st: FeatureStats): DomainSummary {
  const { features: F, top } = st.shape, D = st.labels.length;
  const share = new Float32Array(F * D), owner = new Int32Array(F).fill(-1);
  const byLabel: Record<string, number> = Object.fromEntries(st.labels.map((l) => [l, 0]));
  let alive = 0, full = 0, meeting = 0;
  for (let f = 0; f < F; f++) {
    if (st.fires[f] > 0) alive++;
    let known = 0, filled = 0;
    for (let s = 0; s < top; s++) {
      const i = f * top + s;
      if (st.top.values[i] === -Infinity) continue;
      filled++;
      const l = st.top.labels[i];
      if (l >= 0) {
        share[f * D + l]++;
        known++;
      }
    }
    for (let l = 0; l < D; l++) if (known) share[f * D + l] /= known;
    if (filled < top) continue;
    full++;
    for (let l = 0; l < D; l++) {
      if (known === filled && share[f * D + l] >= DOMAIN_RULE) {
        owner[f] = l;
        meeting++;
        byLabel[st.labels[l]]++;
      }
    }
  }
  return { share, alive, full, meeting, byLabel, owner };
}

export interface FeaturesOutput {
  stats: FeatureStats;
  /** One per decoder (a crosscoder's inputs), or the reason there are none. */
  logits: LogitEffects[] | { none: string };
  /** Crosscoders: [F, L] ‖W_dec[l, i]‖ and, for two inputs, r_i = ‖W_dec[1,i]‖/(‖W_dec[0,i]‖ + ‖W_dec[1,i]‖). */
  decoderNorms?: Float32Array;
  /** What was run: model(s), hooks, data, … (copied into features.json as they are). */
  about: Record<string, unknown>;
}

const i32 = (a: Int32Array, shape: number[]) => tensor(a, { shape, dtype: "i32" });
const f32 = (a: Float32Array, shape: number[]) => tensor(a, { shape });
const f64 = (a: Float64Array, shape: number[]) => tensor(a, { shape, dtype: "f64" });

/** Write DIR/features (`out`): both safetensors, then features.json; returns features.json's record. */
export async function writeFeatures(
  out: string,
  o: FeaturesOutput,
): Promise<Record<string, unknown>> {
  const st = o.stats, sh = st.shape;
  const { features: F, top, slices: S, bins: H, intervals: Q, samples: K } = sh;
  const W = sh.before + 1 + sh.after, D = st.labels.length;
  const run = crypto.randomUUID();
  const meta = { format: FEATURES_FORMAT, run };
  await ensureDir(out);
  const contexts: Record<string, Tensor> = {
    values: f32(st.top.values, [F, top]),
    tokens: i32(st.top.tokens, [F, top, W]),
    acts: f32(st.top.acts, [F, top, W]),
    rows: i32(st.top.rows, [F, top]),
    positions: i32(st.top.positions, [F, top]),
    fires: f64(st.fires, [F]),
  };
  if (S > 1) contexts.slices = i32(st.top.slices, [F, top]);
  if (D > 0) contexts.domains = i32(st.top.labels, [F, top]);
  await saveSafetensors(`${out}/contexts.safetensors`, contexts, meta);
  for (const t of Object.values(contexts)) t.dispose();

  const dist = st.dist;
  const stats: Record<string, Tensor> = { act_sum: f64(st.actSum, [F]) };
  if (H > 0) {
    stats.hist = f64(dist.hist, [F, H]);
    stats.hist_scale = f64(dist.scale, [F]);
  }
  if (Q > 0) {
    stats.interval_counts = f64(dist.counts, [F, Q]);
    if (K > 0) {
      stats.sample_values = f32(dist.values, [F, Q, K]);
      stats.sample_tokens = i32(dist.tokens, [F, Q, K, W]);
      stats.sample_acts = f32(dist.acts, [F, Q, K, W]);
      stats.sample_rows = i32(dist.rows, [F, Q, K]);
      stats.sample_positions = i32(dist.positions, [F, Q, K]);
      if (S > 1) stats.sample_slices = i32(dist.slices, [F, Q, K]);
      if (D > 0) stats.sample_domains = i32(dist.labels, [F, Q, K]);
    }
  }
  if (S > 1) {
    stats.slice_fires = f64(st.sliceFires, [F, S]);
    stats.slice_act_sum = f64(st.sliceSum, [F, S]);
  }
  const domains = D > 0 ? domainSummary(st) : null;
  if (domains) {
    stats.domain_fires = f64(st.labelFires, [F, D]);
    stats.domain_share = f32(domains.share, [F, D]);
  }
  const effects = Array.isArray(o.logits) ? o.logits : null;
  if (effects) {
    const L = effects.length, k = effects[0].k;
    const cat = <T extends Int32Array | Float32Array>(
      pick: (e: LogitEffects) => T,
      make: (n: number) => T,
    ): T => {
      if (L === 1) return pick(effects[0]);
      // [F, L, k]: feature-major, so one feature's effects on every input are together.
      const outArr = make(F * L * k);
      effects.forEach((e, l) => {
        for (let f = 0; f < F; f++) {
          outArr.set(pick(e).subarray(f * k, (f + 1) * k), (f * L + l) * k);
        }
      });
      return outArr;
    };
    const shape = L === 1 ? [F, k] : [F, L, k];
    stats.logit_up_ids = i32(cat((e) => e.upIds, (n) => new Int32Array(n)), shape);
    stats.logit_up = f32(cat((e) => e.up, (n) => new Float32Array(n)), shape);
    stats.logit_down_ids = i32(cat((e) => e.downIds, (n) => new Int32Array(n)), shape);
    stats.logit_down = f32(cat((e) => e.down, (n) => new Float32Array(n)), shape);
  }
  if (o.decoderNorms) {
    const L = o.decoderNorms.length / F;
    stats.decoder_norms = f32(o.decoderNorms, [F, L]);
    if (L === 2) {
      const r = new Float32Array(F);
      for (let f = 0; f < F; f++) {
        const a = o.decoderNorms[2 * f], b = o.decoderNorms[2 * f + 1];
        r[f] = a + b > 0 ? b / (a + b) : NaN;
      }
      stats.relative_norm = f32(r, [F]);
    }
  }
  await saveSafetensors(`${out}/stats.safetensors`, stats, meta);
  for (const t of Object.values(stats)) t.dispose();

  const about = {
    format: FEATURES_FORMAT,
    run,
    ...o.about,
    tokens_scanned: st.scanned,
    features: F,
    alive: domains?.alive ?? st.fires.reduce((n, v) => n + (v > 0 ? 1 : 0), 0),
    top,
    before: sh.before,
    after: sh.after,
    slices: S,
    histogram: H > 0 ? { bins: H } : null,
    intervals: Q > 0 ? { intervals: Q, samples: K, seed: sh.seed } : null,
    logits: "none" in o.logits
      ? { none: o.logits.none }
      : { ...(o.about.logits as object ?? {}), k: o.logits[0].k },
    domains: domains
      ? {
        ...(o.about.domains as object ?? {}),
        names: st.labels,
        rule: DOMAIN_RULE,
        full: domains.full,
        meeting: domains.meeting,
        by_domain: domains.byLabel,
      }
      : null,
  };
  await writeJsonAtomic(`${out}/features.json`, about);
  return about;
}

export interface ReadFeatures {
  about: Record<string, unknown>;
  /** Format 1 or 2. */
  version: number;
  contexts: Record<string, Tensor>;
  /** stats.safetensors (format 2); null for format 1. */
  stats: Record<string, Tensor> | null;
}

/** Read DIR/features (`dir`): format /1 or /2; anything else, or mixed runs, is an error saying so. */
export async function readFeatures(dir: string): Promise<ReadFeatures> {
  const path = `${dir}/features.json`;
  let about: Record<string, unknown>;
  try {
    about = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new Error(`readFeatures: cannot read ${path}: ${(e as Error).message}`);
  }
  const format = about.format;
  if (typeof format !== "string" || !READABLE.includes(format)) {
    throw new Error(
      `readFeatures: ${path} has format ${JSON.stringify(format)}; this reader knows ${
        READABLE.join(" and ")
      }`,
    );
  }
  const version = Number(format.split("/")[1]);
  const contexts = await loadSafetensors(`${dir}/contexts.safetensors`);
  if (version === 1) return { about, version, contexts: contexts.tensors, stats: null };
  const stats = await loadSafetensors(`${dir}/stats.safetensors`);
  for (const [name, f] of [["contexts", contexts], ["stats", stats]] as const) {
    if (f.metadata.run !== about.run) {
      for (const t of [...Object.values(contexts.tensors), ...Object.values(stats.tensors)]) {
        t.dispose();
      }
      throw new Error(
        `readFeatures: ${dir}/${name}.safetensors is of run ${f.metadata.run}, features.json of ${about.run} (a write was interrupted: run sae features again)`,
      );
    }
  }
  return { about, version, contexts: contexts.tensors, stats: stats.tensors };
}
