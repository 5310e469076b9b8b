/**
 * What the server shows of a crosscoder or DFC beyond a single-input dictionary: each feature's
 * decoder norm per input, its relative norm r = ‖W_dec[B,i]‖ / (‖W_dec[A,i]‖ + ‖W_dec[B,i]‖) (two
 * inputs; 0: only A writes it, 1: only B), and for a DFC the partition set it belongs to
 * ("A-exclusive", "B-exclusive", …, "shared"). Inputs are lettered A, B, … in the dictionary's
 * input order. All computed once at load, on the host (sae/crosscoder/diffing.ts, partition.ts).
 */
import { dfcPartition, isCrosscoder } from "../sae/arch/registry.ts";
import { decoderNorms, histogram } from "../sae/crosscoder/diffing.ts";
import { featureOwner, type Partition } from "../sae/crosscoder/partition.ts";
import type { SavedSae } from "../sae/io/saelens.ts";

export interface CrosscoderView {
  /** A, B, … one per input. */
  labels: string[];
  /** What each input reads (cfg.json's hook_names), when known. */
  names: string[] | null;
  /** ‖W_dec[l, i]‖, one array of F per input. */
  norms: Float64Array[];
  /** Per feature r (two inputs only); NaN where both norms are 0. */
  relative: Float64Array | null;
  /** DFC: the partition and each feature's owner (-1: shared). */
  partition: Partition | null;
  owner: Int32Array | null;
}

const letter = (l: number) => (l < 26 ? String.fromCharCode(65 + l) : `input ${l}`);

/** The view of a crosscoder (null for single-input dictionaries). */
export async function loadCrosscoderView(saved: SavedSae): Promise<CrosscoderView | null> {
  const { cfg, params } = saved;
  if (!isCrosscoder(cfg)) return null;
  const norms = await decoderNorms(params.W_dec);
  const L = norms.length;
  const relative = L === 2
    ? norms[0].map((a, i) => (a + norms[1][i] > 0 ? norms[1][i] / (a + norms[1][i]) : NaN))
    : null;
  const hooks = cfg.extra?.hook_names;
  const partition = dfcPartition(cfg);
  return {
    labels: Array.from({ length: L }, (_, l) => letter(l)),
    names: Array.isArray(hooks) && hooks.length === L ? hooks.map(String) : null,
    norms,
    relative,
    partition,
    owner: partition ? featureOwner(partition) : null,
  };
}

/** Feature f's partition set: "A-exclusive", …, "shared"; null when not a DFC. */
export function partitionOf(v: CrosscoderView, f: number): string | null {
  if (!v.owner) return null;
  const o = v.owner[f];
  return o < 0 ? "shared" : `${v.labels[o]}-exclusive`;
}

/** The set names in the partition's order (exclusive sets by input, then shared). */
export const partitionSets = (v: CrosscoderView): string[] => [
  ...v.labels.map((l) => `${l}-exclusive`),
  "shared",
];

/** What GET /v1/features/:id adds for a crosscoder. */
export function crosscoderFeature(v: CrosscoderView, f: number) {
  const r = v.relative?.[f];
  return {
    inputs: v.labels,
    decoder_norms: v.norms.map((n) => n[f]),
    relative_norm: r === undefined || Number.isNaN(r) ? null : r,
    partition: partitionOf(v, f),
  };
}

/** The fields a prompt's feature carries: its partition set and relative norm, when there are. */
export function featureTags(
  v: CrosscoderView,
  f: number,
): { partition?: string; relative_norm?: number } {
  const p = partitionOf(v, f), r = v.relative?.[f];
  return {
    ...(p !== null ? { partition: p } : {}),
    ...(r !== undefined && !Number.isNaN(r) ? { relative_norm: r } : {}),
  };
}

/** The relative-norm histogram over [0, 1]: total counts and, for a DFC, counts per partition set. */
export function relativeNormHistogram(v: CrosscoderView, bins: number) {
  const rel = v.relative!;
  const all = histogram(rel, { bins });
  let by_partition: Record<string, number[]> | null = null;
  if (v.owner) {
    by_partition = {};
    const sets = partitionSets(v);
    sets.forEach((name, s) => {
      const owner = s === sets.length - 1 ? -1 : s;
      by_partition![name] = histogram(rel.filter((_, i) => v.owner![i] === owner), { bins }).counts;
    });
  }
  return { edges: all.edges, counts: all.counts, nan: all.nan, by_partition };
}

/** What /v1/info says of a crosscoder. */
export function crosscoderInfo(v: CrosscoderView | null) {
  if (!v) return null;
  const sizes = v.partition
    ? Object.fromEntries(
      partitionSets(v).map((name, s) => {
        const [a, b] = s < v.labels.length ? v.partition!.exclusive[s] : v.partition!.shared;
        return [name, { start: a, end: b }];
      }),
    )
    : null;
  return {
    n_inputs: v.labels.length,
    inputs: v.labels,
    hooks: v.names,
    relative_norm: v.relative !== null,
    partition: sizes,
  };
}
