/**
 * Feature partitions of dedicated-feature crosscoders (DFC): the F features split into one
 * exclusive set per input (model) and a shared set. For two models this is the reference layout:
 * A-only [0, n_A), B-only [n_A, n_A + n_B), shared [n_A + n_B, F), n = floor(F·p); with L inputs
 * the exclusive sets follow each other in input order and the shared set takes the rest.
 * Input l may use its own exclusive features and the shared ones; its encoder columns
 * W_enc[l, :, i] and decoder rows W_dec[l, i, :] of every other input's exclusive features are
 * "forbidden" and must stay exactly zero. Partitions are plain JSON-able records.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { abs } from "../../tensor/ops/elementwise.ts";
import { max } from "../../tensor/ops/reduce.ts";
import { sliceAxis } from "../../tensor/ops/shape.ts";
import { dispose, tidy } from "../../tensor/scope.ts";
import { fmt } from "../../tensor/shape.ts";

export interface Partition {
  /** Dictionary size F. */
  features: number;
  /** exclusive[l] = [start, end): the features only input l uses. */
  exclusive: [number, number][];
  /** [start, end): the features every input uses. */
  shared: [number, number];
}

export class PartitionError extends Error {
  override name = "PartitionError";
}

/** Exclusive shares p_l (each in [0, 1], Σ ≤ 1) → sizes floor(F·p_l) laid out in input order. */
export function makePartition(features: number, shares: readonly number[]): Partition {
  if (!Number.isInteger(features) || features <= 0) {
    throw new PartitionError(`makePartition: features must be a positive integer, got ${features}`);
  }
  if (shares.length === 0) {
    throw new PartitionError("makePartition: need one exclusive share per input, got none");
  }
  shares.forEach((p, l) => {
    if (typeof p !== "number" || !(p >= 0 && p <= 1)) {
      throw new PartitionError(
        `makePartition: shares[${l}] must be a number in [0, 1], got ${JSON.stringify(p)}`,
      );
    }
  });
  const total = shares.reduce((a, b) => a + b, 0);
  if (total > 1) {
    throw new PartitionError(
      `makePartition: exclusive shares sum to ${total} > 1 (${JSON.stringify(shares)})`,
    );
  }
  const exclusive: [number, number][] = [];
  let start = 0;
  for (const p of shares) {
    // floor(F·p) in doubles, exactly as the reference computes it (so 0.29·100 gives 28, not 29).
    const n = Math.floor(features * p);
    exclusive.push([start, start + n]);
    start += n;
  }
  return { features, exclusive, shared: [start, features] };
}

/** Sizes: one per input's exclusive set, then the shared set. */
export function partitionSizes(p: Partition): { exclusive: number[]; shared: number } {
  return { exclusive: p.exclusive.map(([a, b]) => b - a), shared: p.shared[1] - p.shared[0] };
}

/** For each feature: the input that owns it, or -1 when shared. */
export function featureOwner(p: Partition): Int32Array {
  const owner = new Int32Array(p.features).fill(-1);
  p.exclusive.forEach(([a, b], l) => owner.fill(l, a, b));
  return owner;
}

/** The [start, end) ranges of features input `l` must not use (the other inputs' exclusive sets). */
export function forbiddenRanges(p: Partition, l: number): [number, number][] {
  return p.exclusive.filter(([a, b], m) => m !== l && b > a);
}

const isRange = (r: unknown): r is [number, number] =>
  Array.isArray(r) && r.length === 2 && r.every((v) => Number.isInteger(v)) && r[0] <= r[1];

/**
 * Throw a PartitionError naming the field unless `p` is a well-formed partition of `features`
 * features over `inputs` inputs: ranges in bounds, disjoint, contiguous, covering [0, F).
 */
export function checkPartition(
  p: unknown,
  features?: number,
  inputs?: number,
  where = "partition",
): Partition {
  const bad = (msg: string): never => {
    throw new PartitionError(`${where}: ${msg}`);
  };
  if (!p || typeof p !== "object") {
    bad(`expected an object {features, exclusive, shared}, got ${JSON.stringify(p)}`);
  }
  const q = p as Partition;
  if (!Number.isInteger(q.features) || q.features <= 0) {
    bad(`features must be a positive integer, got ${JSON.stringify(q.features)}`);
  }
  if (features !== undefined && q.features !== features) {
    bad(`features = ${q.features} but the dictionary has ${features}`);
  }
  if (!Array.isArray(q.exclusive)) {
    bad(`exclusive must be an array of [start, end) ranges, got ${JSON.stringify(q.exclusive)}`);
  }
  if (inputs !== undefined && q.exclusive.length !== inputs) {
    bad(`exclusive has ${q.exclusive.length} sets for ${inputs} inputs`);
  }
  let at = 0;
  q.exclusive.forEach((r, l) => {
    if (!isRange(r)) {
      bad(
        `exclusive[${l}] must be [start, end) with integer start <= end, got ${JSON.stringify(r)}`,
      );
    }
    if (r[0] !== at) {
      bad(
        `exclusive[${l}] = ${
          JSON.stringify(r)
        } should start at ${at} (sets must be disjoint and contiguous)`,
      );
    }
    at = r[1];
  });
  if (!isRange(q.shared)) {
    bad(`shared must be [start, end) with integer start <= end, got ${JSON.stringify(q.shared)}`);
  }
  if (q.shared[0] !== at || q.shared[1] !== q.features) {
    bad(
      `shared = ${
        JSON.stringify(q.shared)
      } should be [${at}, ${q.features}) so the sets cover every feature once`,
    );
  }
  return q;
}

export function partitionsEqual(a: Partition, b: Partition): boolean {
  return JSON.stringify([a.features, a.exclusive, a.shared]) ===
    JSON.stringify([b.features, b.exclusive, b.shared]);
}

/** Crosscoder weights as the checks read them: W_enc [L, d, F], W_dec [L, F, d]. */
export interface CrosscoderWeights {
  W_enc: Tensor;
  W_dec: Tensor;
}

export interface IntegrityReport {
  /** Per input: max |w| over its forbidden encoder columns and decoder rows (0 when it has none). */
  inputs: { input: number; encoderMax: number; decoderMax: number }[];
  encoderMax: number;
  decoderMax: number;
  /** max(encoderMax, decoderMax). */
  max: number;
  tolerance: number;
  /** Every forbidden entry satisfies |w| <= tolerance (NaN counts as a violation). */
  ok: boolean;
}

function checkWeights(w: CrosscoderWeights, p: Partition, op: string): void {
  const L = p.exclusive.length;
  if (w.W_enc.ndim !== 3 || w.W_enc.shape[0] !== L || w.W_enc.shape[2] !== p.features) {
    throw new PartitionError(
      `${op}: W_enc must be [${L}, d, ${p.features}] for this partition, got ${fmt(w.W_enc.shape)}`,
    );
  }
  if (w.W_dec.ndim !== 3 || w.W_dec.shape[0] !== L || w.W_dec.shape[1] !== p.features) {
    throw new PartitionError(
      `${op}: W_dec must be [${L}, ${p.features}, d] for this partition, got ${fmt(w.W_dec.shape)}`,
    );
  }
}

/** Max |w| over forbidden entries, per input and overall; `ok` honours `tolerance` (default 0: exactly zero). */
export async function verifyPartitionIntegrity(
  w: CrosscoderWeights,
  p: Partition,
  opts: { tolerance?: number } = {},
): Promise<IntegrityReport> {
  const tolerance = opts.tolerance ?? 0;
  if (!(tolerance >= 0)) {
    throw new PartitionError(`verifyPartitionIntegrity: tolerance must be >= 0, got ${tolerance}`);
  }
  checkPartition(p, undefined, undefined, "verifyPartitionIntegrity: partition");
  checkWeights(w, p, "verifyPartitionIntegrity");
  const inputs: IntegrityReport["inputs"] = [];
  for (let l = 0; l < p.exclusive.length; l++) {
    const ranges = forbiddenRanges(p, l);
    const maxes = tidy(() => {
      const enc = sliceAxis(w.W_enc, 0, l, l + 1), dec = sliceAxis(w.W_dec, 0, l, l + 1);
      return ranges.flatMap((
        [a, b],
      ) => [max(abs(sliceAxis(enc, 2, a, b))), max(abs(sliceAxis(dec, 1, a, b)))]);
    });
    const vals = await Promise.all(maxes.map((m) => m.item()));
    dispose(maxes);
    // NaN must not pass for zero: Math.max propagates it, and NaN <= tolerance is false.
    const pick = (parity: number) =>
      vals.filter((_, i) => i % 2 === parity).reduce((a, b) => Math.max(a, b), 0);
    inputs.push({ input: l, encoderMax: pick(0), decoderMax: pick(1) });
  }
  const encoderMax = inputs.reduce((a, r) => Math.max(a, r.encoderMax), 0);
  const decoderMax = inputs.reduce((a, r) => Math.max(a, r.decoderMax), 0);
  const m = Math.max(encoderMax, decoderMax);
  return { inputs, encoderMax, decoderMax, max: m, tolerance, ok: m <= tolerance };
}

/** Throw a PartitionError saying which input and which matrix break the partition. */
export async function assertPartitionIntact(
  w: CrosscoderWeights,
  p: Partition,
  opts: { tolerance?: number; where?: string } = {},
): Promise<IntegrityReport> {
  const r = await verifyPartitionIntegrity(w, p, opts);
  if (!r.ok) {
    const worst = r.inputs.filter((i) =>
      !(i.encoderMax <= r.tolerance && i.decoderMax <= r.tolerance)
    )
      .map((i) => `input ${i.input}: max |W_enc| ${i.encoderMax}, max |W_dec| ${i.decoderMax}`)
      .join("; ");
    throw new PartitionError(
      `${
        opts.where ? opts.where + ": " : ""
      }partition broken: forbidden weights exceed tolerance ${r.tolerance} (${worst})`,
    );
  }
  return r;
}
