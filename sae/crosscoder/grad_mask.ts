/**
 * Gradient masks for dedicated-feature crosscoders, as pure transforms of records: the forbidden
 * encoder columns W_enc[l, :, i] and decoder rows W_dec[l, i, :] (see partition.ts) get exactly
 * zero gradient. With zero weights, zero gradients and zero Adam moments, Adam's update of those
 * entries is 0·…/(0 + ε) = 0, so they stay exactly zero forever; `maskMoments` restores that
 * invariant for an optimizer state that did not start at zero (e.g. a crosscoder turned into a
 * DFC mid-training — the reference tries this before Adam has state, which does nothing).
 * `where`, not a multiplication by 0/1, so NaN or ∞ gradients (‖·‖' at a zero row) become 0 too.
 */
import { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { where } from "../../tensor/ops/elementwise.ts";
import { fmt } from "../../tensor/shape.ts";
import type { Backend } from "../../tensor/backend.ts";
import { featureOwner, forbiddenRanges, type Partition, PartitionError } from "./partition.ts";
import { fusedZeroSpans } from "../../tensor/fused.ts";

/** Boolean masks, true where forbidden: encoder [L, 1, F] and decoder [L, F, 1] (broadcast, never materialised). */
export interface PartitionMasks {
  enc: Tensor;
  dec: Tensor;
}

/** The forbidden-entry masks of a partition. The caller disposes them (or builds them inside tidy). */
export function partitionMasks(p: Partition, backend?: Backend): PartitionMasks {
  const L = p.exclusive.length, F = p.features;
  const owner = featureOwner(p);
  const forbidden = new Uint8Array(L * F);
  for (let l = 0; l < L; l++) {
    for (let i = 0; i < F; i++) forbidden[l * F + i] = owner[i] >= 0 && owner[i] !== l ? 1 : 0;
  }
  const mk = (shape: number[]) =>
    tensor(forbidden, { dtype: "bool", shape, ...(backend ? { backend } : {}) });
  return { enc: mk([L, 1, F]), dec: mk([L, F, 1]) };
}

/** Inputs L and features F of a partition or of its masks. */
const sizesOf = (m: Partition | PartitionMasks): [number, number] =>
  "enc" in m ? [m.enc.shape[0], m.enc.shape[2]] : [m.exclusive.length, m.features];

function checkLeaf(name: string, x: unknown, [L, F]: [number, number], axisF: number): Tensor {
  if (!(x instanceof Tensor)) {
    throw new PartitionError(
      `maskGradients: ${name} must be a tensor, got ${x === null ? "null" : typeof x}`,
    );
  }
  if (x.ndim !== 3 || x.shape[0] !== L || x.shape[axisF] !== F) {
    throw new PartitionError(
      `maskGradients: ${name} has shape ${fmt(x.shape)}, expected ${
        axisF === 2 ? `[${L}, d, ${F}]` : `[${L}, ${F}, d]`
      } for the partition`,
    );
  }
  return x;
}

/**
 * The forbidden entries of a contiguous W_enc [L, d, F] or W_dec [L, F, d] as element spans
 * [start, end) in ascending order: per input l, the other inputs' exclusive ranges, once per row
 * of d for the encoder and as whole blocks of d-long rows for the decoder.
 */
export function forbiddenSpans(
  p: Partition,
  shape: readonly number[],
  which: "enc" | "dec",
): Int32Array {
  const [L, a, b] = shape; // enc: [L, d, F]; dec: [L, F, d]
  const out: number[] = [];
  for (let l = 0; l < L; l++) {
    const ranges = forbiddenRanges(p, l);
    if (which === "dec") {
      for (const [lo, hi] of ranges) out.push((l * a + lo) * b, (l * a + hi) * b);
    } else {for (let j = 0; j < a; j++) {
        for (const [lo, hi] of ranges) out.push((l * a + j) * b + lo, (l * a + j) * b + hi);
      }}
  }
  return Int32Array.from(out);
}

/** Where the backend can copy around spans (the CPU: memcpy and fill), masking is one copy instead of a `where` over a broadcast mask. */
function zeroForbidden(x: Tensor, p: Partition, which: "enc" | "dec"): Tensor | null {
  return fusedZeroSpans(x, () => forbiddenSpans(p, x.shape, which));
}

/** Zero the forbidden entries of W_enc and W_dec in any record that has them (gradients, params, moments). */
export function maskGradients<T extends { W_enc: unknown; W_dec: unknown }>(
  g: T,
  mask: Partition | PartitionMasks,
): T {
  if (!(g.W_enc instanceof Tensor)) {
    throw new PartitionError(
      `maskGradients: W_enc must be a tensor, got ${g.W_enc === null ? "null" : typeof g.W_enc}`,
    );
  }
  const sizes = sizesOf(mask);
  const enc = checkLeaf("W_enc", g.W_enc, sizes, 2), dec = checkLeaf("W_dec", g.W_dec, sizes, 1);
  if ("enc" in mask) {
    return { ...g, W_enc: where(mask.enc, 0, enc), W_dec: where(mask.dec, 0, dec) };
  }
  const fe = zeroForbidden(enc, mask, "enc"), fd = fe && zeroForbidden(dec, mask, "dec");
  if (fe && fd) return { ...g, W_enc: fe, W_dec: fd };
  fe?.dispose();
  const m = partitionMasks(mask, enc.backend);
  const out = { ...g, W_enc: where(m.enc, 0, enc), W_dec: where(m.dec, 0, dec) };
  m.enc.dispose();
  m.dec.dispose();
  return out;
}

/** The same transform applied to parameters: forbidden weights set to zero (DFC initialisation). */
export const maskParams = maskGradients;

/** Zero the forbidden moments of every Adam state inside an optimizer state (a chain's array too). */
export function maskMoments(opt: unknown, mask: Partition | PartitionMasks): unknown {
  if (Array.isArray(opt)) return opt.map((o) => maskMoments(o, mask));
  if (opt && typeof opt === "object" && "mu" in opt && "nu" in opt) {
    const s = opt as { mu: { W_enc: Tensor; W_dec: Tensor }; nu: { W_enc: Tensor; W_dec: Tensor } };
    return { ...s, mu: maskGradients(s.mu, mask), nu: maskGradients(s.nu, mask) };
  }
  return opt;
}
