/**
 * What the decoder-only families share: hook plumbing, token checks, LayerNorm and RMSNorm with
 * TransformerLens's hook points, rotary embeddings in the rotate-half convention, and causal
 * attention with grouped key/value heads. All differentiable; where no hook asks for an
 * intermediate, a norm, an activation and an attention pattern are autodiff/fused_ops.ts's fused
 * ops (one backend kernel per pass, forward and backward, where the backend has them), so neither
 * inference nor training pays for a pass per elementwise op.
 */
import type { Activation } from "../../tensor/backend.ts";
import {
  activation as fusedOrComposedActivation,
  causalSoftmax,
  rowNorm,
} from "../../autodiff/fused_ops.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { add, cast, div, mul, ne, neg, tanh } from "../../tensor/ops/elementwise.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { concat, mT, reshape, sliceAxis, take, transpose } from "../../tensor/ops/shape.ts";
import type { Tensor } from "../../tensor/tensor.ts";

/** A hook sees an activation and may return a replacement; returning nothing keeps it. */
export type HookFn = (activation: Tensor) => Tensor | void;

export interface ForwardOptions {
  /** Hook point name → function, e.g. `blocks.0.hook_resid_post`. */
  hooks?: Readonly<Record<string, HookFn>>;
  /**
   * [B, T], 1 (or true) for real tokens and 0 for padding: no query attends to a padded key.
   * Positions are not shifted, so pad on the right; a query whose every key is hidden (left
   * padding) gets a uniform pattern rather than NaN, and its outputs mean nothing.
   */
  attentionMask?: Tensor;
}

/** Token ids: an i32 tensor [B, T] or nested arrays. */
export type Tokens = Tensor | readonly (readonly number[])[];

/**
 * Run the hook named `name` (if any) on `x`; its result, or `x` when it returns nothing. `has`
 * says whether a hook is set, so a fused kernel may skip an intermediate nobody looks at.
 */
export type Hook = ((name: string, x: Tensor) => Tensor) & { has(name: string): boolean };

export function makeHook(opts: ForwardOptions): Hook {
  const hooks = opts.hooks ?? {};
  const run = (name: string, x: Tensor): Tensor => {
    const f = hooks[name];
    return f ? (f(x) ?? x) : x;
  };
  return Object.assign(run, { has: (name: string) => name in hooks });
}

/**
 * x·w (+ b) for x [..., in] and w [in, out], as one GEMM over every row: the leading axes are
 * folded into the rows first (a contiguous reshape is free), so BLAS sees one [rows, in] matrix
 * rather than one small product per batch entry.
 */
export function linear(x: Tensor, w: Tensor, b?: Tensor | null): Tensor {
  const lead = x.shape.slice(0, -1), n = x.shape[x.ndim - 1];
  const y = matmul(x.ndim > 2 && x.isContiguous() ? reshape(x, [-1, n]) : x, w);
  const out = b ? add(y, b) : y;
  return out.ndim === lead.length + 1 ? out : reshape(out, [...lead, w.shape[1]]);
}

/** An activation, fused where the backend can (see autodiff/fused_ops.ts). */
export function activation(x: Tensor, kind: Activation): Tensor {
  return fusedOrComposedActivation(x, kind);
}

/** Token ids as an i32 [B, T] tensor, checked against the vocabulary and context length. */
export function tokenTensor(
  tokens: Tokens,
  family: string,
  vocabSize: number,
  maxPositions: number,
): Tensor {
  const t = Array.isArray(tokens)
    ? tensor(tokens as number[][], { dtype: "i32" })
    : tokens as Tensor;
  if (t.ndim !== 2 || t.dtype !== "i32") {
    throw new TypeError(
      `${family} forward: tokens must be i32 [B, T], got ${t.dtype} [${t.shape}]`,
    );
  }
  if (t.shape[1] > maxPositions) {
    throw new RangeError(
      `${family} forward: ${t.shape[1]} tokens exceed max_position_embeddings ${maxPositions}`,
    );
  }
  if (t.backend.name === "cpu") {
    for (const id of t.dataSync()) {
      if (!(id >= 0 && id < vocabSize)) {
        throw new RangeError(`${family} forward: token id ${id} outside [0, ${vocabSize})`);
      }
    }
  }
  return t;
}

/**
 * A 16-bit weight as f32, any other unchanged. Weights loaded with dtype "keep" stay f16/bf16 in
 * memory; binary ops promote them, and ops on a weight alone (an embedding lookup, 1 + w) go
 * through this so that every activation is f32.
 */
export function widen16(t: Tensor): Tensor {
  return t.dtype === "f16" || t.dtype === "bf16" ? cast(t, "f32") : t;
}

/** Rows `ids` of an embedding table [V, d], in the compute dtype. */
export function embedRows(table: Tensor, ids: Tensor): Tensor {
  return widen16(take(table, ids, 0));
}

/** The hooks of a norm at `prefix`, as rowNorm's taps; none (so it may fuse) when neither is set. */
function normTaps(hook: Hook, prefix: string) {
  const scale = prefix + ".hook_scale", normalized = prefix + ".hook_normalized";
  if (!hook.has(scale) && !hook.has(normalized)) return undefined;
  return { scale: (x: Tensor) => hook(scale, x), normalized: (x: Tensor) => hook(normalized, x) };
}

/** LayerNorm (biased variance); the hooks see the scale and the value before w and b. */
export function layerNorm(
  hook: Hook,
  prefix: string,
  x: Tensor,
  w: Tensor,
  b: Tensor,
  eps: number,
): Tensor {
  return rowNorm(x, w, b, { eps, center: true, plusOne: false }, normTaps(hook, prefix));
}

/**
 * RMSNorm: x/√(mean x² + eps)·w, or ·(1 + w) with `plusOne` (Gemma stores w around 0); the hooks
 * see the scale and the value before the weight.
 */
export function rmsNorm(
  hook: Hook,
  prefix: string,
  x: Tensor,
  w: Tensor,
  eps: number,
  opts: { plusOne?: boolean } = {},
): Tensor {
  const o = { eps, center: false, plusOne: !!opts.plusOne };
  return rowNorm(x, opts.plusOne ? widen16(w) : w, null, o, normTaps(hook, prefix));
}

/**
 * Rotary position embedding of x [B, T, H, hd] over its first `nRot` dims (the rest pass through):
 * inv_freq[i] = base^(−2i/nRot), and dim j pairs with j + nRot/2 (rotate-half). The angles are
 * computed in f64 and rounded once to x's dtype.
 */
export function rotary(x: Tensor, nRot: number, base: number): Tensor {
  if (nRot === 0) return x;
  const T = x.shape[1], half = nRot / 2;
  const cos = new Array<number>(T * nRot), sin = new Array<number>(T * nRot);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < nRot; i++) {
      const angle = t * Math.pow(base, (-2 * (i % half)) / nRot);
      cos[t * nRot + i] = Math.cos(angle);
      sin[t * nRot + i] = Math.sin(angle);
    }
  }
  const opts = { dtype: x.dtype, shape: [T, 1, nRot] } as const;
  const xr = sliceAxis(x, -1, 0, nRot);
  const rotated = concat([neg(sliceAxis(xr, -1, half)), sliceAxis(xr, -1, 0, half)], -1);
  const out = add(mul(xr, tensor(cos, opts)), mul(rotated, tensor(sin, opts)));
  return nRot === x.shape[3] ? out : concat([out, sliceAxis(x, -1, nRot)], -1);
}

/** What some families add to plain causal attention. */
export interface AttentionOptions {
  /** [B, T] key mask (see ForwardOptions.attentionMask). */
  mask?: Tensor;
  /** Soft-cap the scaled scores to c·tanh(s/c) before the mask (Gemma-2). */
  softcap?: number | null;
  /** A query at i sees only keys i − window + 1 … i. */
  window?: number | null;
}

/**
 * Causal attention. q [B, T, H, hd], k and v [B, T, Hkv, hd] (query head h reads key/value head
 * ⌊h/(H/Hkv)⌋); `hook_pattern` [B, H, T, T] and `hook_z` [B, T, H, hd] under `prefix`. Returns z.
 */
export function causalAttention(
  hook: Hook,
  prefix: string,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  scale: number,
  opts: AttentionOptions = {},
): Tensor {
  const T = q.shape[1], H = q.shape[2], Hkv = k.shape[2];
  if (Hkv !== H) {
    const idx = tensor(Array.from({ length: H }, (_, h) => Math.floor(h / (H / Hkv))), {
      dtype: "i32",
    });
    k = take(k, idx, 2);
    v = take(v, idx, 2);
  }
  const toBH = (t: Tensor) => transpose(t, [0, 2, 1, 3]); // [B, H, T, hd]
  const raw = matmul(toBH(q), mT(toBH(k)));
  const mask = opts.mask ? keyMask(opts.mask, q.shape[0], T) : null;
  const pattern = hook(
    prefix + "hook_pattern",
    causalSoftmax(raw, mask, {
      scale,
      softcap: opts.softcap ?? null,
      window: opts.window ?? null,
    }),
  );
  return hook(prefix + "hook_z", transpose(matmul(pattern, toBH(v)), [0, 2, 1, 3]));
}

/** An attention mask [B, T] as a bool key mask, checked. */
function keyMask(mask: Tensor, B: number, T: number): Tensor {
  if (mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== T) {
    throw new RangeError(
      `forward: attentionMask must be [${B}, ${T}] like the tokens, got [${mask.shape}]`,
    );
  }
  return mask.dtype === "bool" ? mask : ne(mask, 0);
}

/** c·tanh(x/c): bounded to (−c, c), close to x where |x| ≪ c. */
export function softcap(x: Tensor, c: number): Tensor {
  return mul(tanh(div(x, c)), c);
}

/** Logits plus the activations at `names`, checked against the family's hook points. */
export function cacheRun(
  all: readonly string[],
  names: readonly string[],
  run: (opts: ForwardOptions) => Tensor,
): { logits: Tensor; cache: Record<string, Tensor> } {
  const known = new Set(all);
  for (const n of names) {
    if (!known.has(n)) {
      throw new RangeError(`runWithCache: no hook point named ${JSON.stringify(n)}`);
    }
  }
  const cache: Record<string, Tensor> = {};
  const hooks: Record<string, HookFn> = {};
  for (const n of names) hooks[n] = (a) => void (cache[n] = a);
  return { logits: run({ hooks }), cache };
}

/** What a family's blocks hook beyond the plain pre-norm block. */
export interface HookLayout {
  /** Learned position embeddings (`hook_pos_embed`). */
  posEmbed?: boolean;
  /** `attn.hook_rot_q|k` after rotary. */
  rotary?: boolean;
  /** False for parallel-residual blocks, which have no `hook_resid_mid`. */
  residMid?: boolean;
  /** A gated MLP's up projection (`mlp.hook_pre_linear`). */
  gated?: boolean;
}

/** Every hook point of an `nLayer` model laid out as `h`, in the order the forward reaches them. */
export function hookNamesOf(nLayer: number, h: HookLayout): string[] {
  const names = h.posEmbed ? ["hook_embed", "hook_pos_embed"] : ["hook_embed"];
  for (let l = 0; l < nLayer; l++) {
    const b = `blocks.${l}.`;
    names.push(
      ...[
        "hook_resid_pre",
        "ln1.hook_scale",
        "ln1.hook_normalized",
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        ...(h.rotary ? ["attn.hook_rot_q", "attn.hook_rot_k"] : []),
        "attn.hook_pattern",
        "attn.hook_z",
        "hook_attn_out",
        ...(h.residMid === false ? [] : ["hook_resid_mid"]),
        "ln2.hook_scale",
        "ln2.hook_normalized",
        "mlp.hook_pre",
        ...(h.gated ? ["mlp.hook_pre_linear"] : []),
        "mlp.hook_post",
        "hook_mlp_out",
        "hook_resid_post",
      ].map((n) => b + n),
    );
  }
  names.push("ln_final.hook_scale", "ln_final.hook_normalized");
  return names;
}
