/**
 * fast-check arbitraries for properties of tensors, dictionaries and DFC partitions. Values are
 * drawn by fast-check (so failures shrink); tensors are built from them on the current backend.
 * Parameter records come from a drawn seed through the library's own random keys, which keeps
 * large records cheap to generate and still reproducible from fast-check's seed.
 */
import fc from "fast-check";
import type { Tensor } from "../tensor/tensor.ts";
import type { DType } from "../tensor/dtype.ts";
import * as random from "../tensor/random.ts";
import { tensor } from "../tensor/ops/create.ts";
import { abs, cast } from "../tensor/ops/elementwise.ts";
import { treeMap } from "../autodiff/tree.ts";
import { architecture, ARCHS, dfcPartition, isCrosscoderArch } from "../sae/arch/registry.ts";
import {
  type ArchName,
  resolveConfig,
  type SaeConfig,
  type SaeConfigInput,
} from "../sae/config.ts";
import { CODE_NORMS } from "../sae/crosscoder/config.ts";
import { makePartition, type Partition } from "../sae/crosscoder/partition.ts";
import { maskParams } from "../sae/crosscoder/grad_mask.ts";
import type { SaeParams } from "../sae/params.ts";
import { Tensor as TensorClass } from "../tensor/tensor.ts";

/** Shapes of rank minRank..maxRank with dimensions 1..maxDim (0 too with allowEmpty). */
export function shapeArb(
  o: { minRank?: number; maxRank?: number; maxDim?: number; allowEmpty?: boolean } = {},
): fc.Arbitrary<number[]> {
  const dim = fc.integer({ min: o.allowEmpty ? 0 : 1, max: o.maxDim ?? 5 });
  return fc.array(dim, { minLength: o.minRank ?? 0, maxLength: o.maxRank ?? 3 });
}

export interface TensorArbOptions {
  dtype?: DType;
  /** Value range of float entries (default [-4, 4]) or integer entries (default [-10, 10]). */
  min?: number;
  max?: number;
}

/** Tensors of a fixed shape (or of shapes drawn from an arbitrary), any dtype. */
export function tensorArb(
  shape: readonly number[] | fc.Arbitrary<number[]>,
  o: TensorArbOptions = {},
): fc.Arbitrary<Tensor> {
  const dtype = o.dtype ?? "f32";
  const shapes = Array.isArray(shape)
    ? fc.constant([...shape] as number[])
    : shape as fc.Arbitrary<number[]>;
  return shapes.chain((s) => {
    const n = s.reduce((a, b) => a * b, 1);
    const values: fc.Arbitrary<number[]> = dtype === "bool"
      ? fc.array(fc.integer({ min: 0, max: 1 }), { minLength: n, maxLength: n })
      : dtype === "i32"
      ? fc.array(fc.integer({ min: o.min ?? -10, max: o.max ?? 10 }), {
        minLength: n,
        maxLength: n,
      })
      : fc.array(
        fc.double({ min: o.min ?? -4, max: o.max ?? 4, noNaN: true, noDefaultInfinity: true }),
        { minLength: n, maxLength: n },
      );
    return values.map((v) => {
      const wide = dtype === "f32" || dtype === "f64" || dtype === "i32" || dtype === "bool"
        ? dtype
        : "f32";
      const t = tensor(v, { dtype: wide, shape: s });
      return wide === dtype ? t : cast(t, dtype); // f16/bf16: rounded from f32
    });
  });
}

/** Small valid configurations of an architecture (every one in ARCHS by default). */
export function saeConfigArb(
  arch?: ArchName | fc.Arbitrary<ArchName>,
  o: { maxD?: number; maxFeatures?: number; maxInputs?: number } = {},
): fc.Arbitrary<SaeConfig> {
  const archs = arch === undefined
    ? fc.constantFrom(...ARCHS)
    : typeof arch === "string"
    ? fc.constant(arch)
    : arch;
  return fc.record({
    arch: archs,
    d: fc.integer({ min: 2, max: o.maxD ?? 8 }),
    F: fc.integer({ min: 4, max: o.maxFeatures ?? 24 }),
    L: fc.integer({ min: 2, max: o.maxInputs ?? 3 }),
    kFrac: fc.double({ min: 0, max: 1, noNaN: true }),
    shares: fc.array(fc.double({ min: 0, max: 0.9, noNaN: true }), {
      minLength: o.maxInputs ?? 3,
      maxLength: o.maxInputs ?? 3,
    }),
    codeNorm: fc.constantFrom(...CODE_NORMS),
  }).map(({ arch, d, F, L, kFrac, shares, codeNorm }) => {
    const c: SaeConfigInput = { arch, d_in: d, d_sae: F, k: 1 + Math.floor(kFrac * (F - 1) * 0.5) };
    if (architecture(arch).nestedGroups) {
      c.matryoshka_groups = [Math.floor(F / 2), F - Math.floor(F / 2)];
    }
    if (isCrosscoderArch(arch)) {
      Object.assign(c, {
        n_inputs: L,
        dfc_shares: shares.slice(0, L).map((s) => s / L),
        code_norm: codeNorm,
      });
    }
    return resolveConfig(c);
  });
}

/** DFC configurations: random F, shares (each input's exclusive share), d, L, k and code norm. */
export function dfcConfigArb(
  o: { maxD?: number; maxFeatures?: number; maxInputs?: number } = {},
): fc.Arbitrary<SaeConfig> {
  return saeConfigArb("dfc", o);
}

/** Partitions of F features over L inputs, with the shares that made them. */
export function partitionArb(
  o: { maxFeatures?: number; maxInputs?: number } = {},
): fc.Arbitrary<{ partition: Partition; shares: number[] }> {
  return fc.record({
    F: fc.integer({ min: 1, max: o.maxFeatures ?? 200_000 }),
    raw: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), {
      minLength: 1,
      maxLength: o.maxInputs ?? 4,
    }),
    room: fc.double({ min: 0, max: 1, noNaN: true }),
  }).map(({ F, raw, room }) => {
    const total = raw.reduce((a, b) => a + b, 0) || 1;
    const shares = raw.map((r) => (r / total) * room);
    // Σ shares may exceed 1 by a rounding error; scale back just below it.
    const s = shares.reduce((a, b) => a + b, 0) > 1 ? shares.map((x) => x * (1 - 1e-12)) : shares;
    return { partition: makePartition(F, s), shares: s };
  });
}

/**
 * Parameter records of an architecture: its init's shapes with every leaf (biases too) drawn from
 * N(0, scale²) under a drawn seed; JumpReLU θ is made positive, and a DFC's forbidden entries are zero.
 */
export function paramsArb(cfg: SaeConfig, o: { scale?: number } = {}): fc.Arbitrary<SaeParams> {
  return fc.integer({ min: 0, max: 2 ** 31 - 1 }).map((seed) => {
    const base = architecture(cfg.arch).init(random.key(seed), cfg);
    let i = 0;
    const k = random.key(seed ^ 0x5bd1e995);
    const drawn = treeMap((x: unknown) => {
      if (!(x instanceof TensorClass)) return x;
      const v = random.normal(random.foldIn(k, i++), x.shape, { std: o.scale ?? 0.5 });
      x.dispose();
      return v;
    }, base) as SaeParams;
    if (drawn.threshold) drawn.threshold = abs(drawn.threshold);
    const partition = dfcPartition(cfg);
    if (partition) return maskParams(drawn, partition);
    return drawn;
  });
}
