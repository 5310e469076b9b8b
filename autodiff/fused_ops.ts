/**
 * Differentiable ops with fused kernels for both passes: softmax cross-entropy, activations
 * (exact and tanh gelu, silu), LayerNorm/RMSNorm, causal attention's softmax and the squared
 * error. Where the backend
 * has the kernels (tensor/fused.ts), the forward is one kernel and the backward another, joined by
 * a customVjp rule, so a training step holds no [N, V] temporaries beyond the gradient and makes
 * no pass per elementwise op. Elsewhere (WebGPU, CUDA, 16-bit or strided operands) each op is its
 * composition of primitives, traced as usual; a backward pass that cannot use its kernel (its
 * cotangent traced: grad of grad) differentiates the composition instead, so every order of
 * derivative stays exact.
 */
import type { Activation, AttnSoftmaxOptions, RowNormOptions } from "../tensor/backend.ts";
import {
  fusedActivation,
  fusedActivationGrad,
  fusedAttnSoftmax,
  fusedAttnSoftmaxGrad,
  fusedCrossEntropy,
  fusedCrossEntropyGrad,
  fusedRowNorm,
  fusedRowNormGrad,
  fusedSquaredErrorGrad,
  fusedSquaredErrorRows,
} from "../tensor/fused.ts";
import { tensor } from "../tensor/ops/create.ts";
import {
  add,
  div,
  gelu,
  mul,
  ne,
  sigmoid,
  sqrt,
  sub,
  tanh,
  where,
} from "../tensor/ops/elementwise.ts";
import { takeAlongAxis } from "../tensor/ops/index.ts";
import { logsumexp, mean, softmax, sum } from "../tensor/ops/reduce.ts";
import { contiguous, expandDims, reshape } from "../tensor/ops/shape.ts";
import { fmt, shapesEqual } from "../tensor/shape.ts";
import { canFuseSquaredError } from "../tensor/fused.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { customVjp, vjp } from "./grad.ts";
import { untraced } from "./trace.ts";

/**
 * `compose(...xs)`, run as `forward` and `backward` where they can: `forward` (untraced) gives
 * the output and residuals or null (no kernel: compose); `backward` gives the inputs' cotangents
 * or null (no kernel for these operands: the composition's VJP).
 */
function fusedVjp<R>(
  name: string,
  xs: Tensor[],
  forward: () => [Tensor, R] | null,
  backward: (res: R, g: Tensor, needs: boolean[]) => (Tensor | null)[] | null,
  compose: (...xs: Tensor[]) => Tensor,
): Tensor {
  const done = untraced(forward);
  if (!done) return compose(...xs);
  const op = customVjp(
    (..._: Tensor[]) => done,
    (res: R, g: Tensor, needs: boolean[]) => {
      // A broadcast cotangent (from a mean, say) is copied once rather than lose the kernel.
      const gc = g.isContiguous() ? g : contiguous(g);
      return backward(res, gc, needs) ?? vjp(compose, ...xs)[1](g);
    },
    name,
  );
  return op(...xs);
}

export interface CrossEntropyOptions {
  /** Positions whose target is this get loss 0 and no gradient (PyTorch's default, −100). */
  ignoreIndex?: number;
}

/**
 * Softmax cross-entropy per position: logsumexp(logits) − logits[target] over the last axis, for
 * logits [..., V] and i32 targets [...]; the loss has the targets' shape. Positions whose target
 * is `ignoreIndex` get 0 (average over the others yourself). A target outside [0, V) otherwise
 * is a RangeError.
 */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor,
  opts: CrossEntropyOptions = {},
): Tensor {
  const ignore = opts.ignoreIndex ?? -100;
  if (
    logits.ndim < 1 || targets.dtype !== "i32" ||
    !shapesEqual(targets.shape, logits.shape.slice(0, -1))
  ) {
    throw new TypeError(
      `crossEntropy: logits ${logits.dtype} ${fmt(logits.shape)} need i32 targets of shape ${
        fmt(logits.shape.slice(0, -1))
      }, got ${targets.dtype} ${fmt(targets.shape)}`,
    );
  }
  // Targets sliced from a token batch are strided: a copy of them is cheap, the composition not.
  if (!targets.isContiguous()) targets = contiguous(targets);
  const compose = (x: Tensor) => {
    const kept = ne(targets, ignore);
    const idx = expandDims(where(kept, targets, tensor(0, { dtype: "i32" })), -1);
    const picked = reshape(takeAlongAxis(x, idx, -1), targets.shape);
    return where(kept, sub(logsumexp(x, -1), picked), 0);
  };
  return fusedVjp(
    "crossEntropy",
    [logits],
    () => fusedCrossEntropy(logits, targets, ignore),
    (lse, g) => {
      const dx = fusedCrossEntropyGrad(logits, targets, lse, g, ignore);
      return dx && [dx];
    },
    compose,
  );
}

/** An activation (gelu's tanh form, exact gelu, silu), differentiable, fused where it can be. */
export function activation(x: Tensor, kind: Activation): Tensor {
  const compose = (x: Tensor) =>
    kind === "silu"
      ? mul(x, sigmoid(x))
      : gelu(x, { approximate: kind === "gelu_tanh" ? "tanh" : "none" });
  return fusedVjp(
    `activation:${kind}`,
    [x],
    () => {
      const y = fusedActivation(x, kind);
      return y && [y, null];
    },
    (_, g) => {
      const dx = fusedActivationGrad(g, x, kind);
      return dx && [dx];
    },
    compose,
  );
}

/** Where a composed row norm shows its intermediates (TransformerLens's hook_scale, _normalized). */
export interface RowNormTaps {
  scale?: (x: Tensor) => Tensor;
  normalized?: (x: Tensor) => Tensor;
}

/**
 * LayerNorm (x − μ)/√(σ² + eps)·w + b with `center`, else RMSNorm x/√(mean x² + eps)·w (·(1 + w)
 * with plusOne), over the last axis, differentiable. With `taps` it is always the composition,
 * each tap seeing (and possibly replacing) its intermediate.
 */
export function rowNorm(
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  o: RowNormOptions,
  taps?: RowNormTaps,
): Tensor {
  const compose = (x: Tensor, w: Tensor, b?: Tensor) => {
    const c = o.center ? sub(x, mean(x, -1, { keepdims: true })) : x;
    const s = sqrt(add(mean(mul(c, c), -1, { keepdims: true }), o.eps));
    const scale = taps?.scale ? taps.scale(s) : s;
    const n = div(c, scale);
    const y = mul(taps?.normalized ? taps.normalized(n) : n, o.plusOne ? add(1, w) : w);
    return b ? add(y, b) : y;
  };
  const xs = b ? [x, w, b] : [x, w];
  if (taps) return compose(x, w, b ?? undefined);
  return fusedVjp(
    o.center ? "layerNorm" : "rmsNorm",
    xs,
    () => {
      const y = fusedRowNorm(x, w, b, o);
      return y && [y, null];
    },
    (_, g) => {
      const r = fusedRowNormGrad(g, x, w, b !== null, o);
      return r && (b ? r : r.slice(0, 2));
    },
    compose,
  );
}

/**
 * Causal attention's pattern from raw scores [B, H, T, T]: softmax over keys of the scaled
 * (optionally soft-capped) scores, keys hidden by `mask` (bool [B, T]) at −1e30, keys after the
 * query or `window` or more before it at 0 weight. Fused in both passes where there is no soft cap.
 */
export function causalSoftmax(raw: Tensor, mask: Tensor | null, o: AttnSoftmaxOptions): Tensor {
  const [B, , T] = raw.shape;
  const compose = (raw: Tensor) => {
    const window = o.window ?? Infinity;
    const causal = tensor(
      Array.from(
        { length: T },
        (_, i) => Array.from({ length: T }, (_, j) => j <= i && j > i - window),
      ),
      { dtype: "bool" },
    );
    let scores = mul(raw, o.scale);
    if (o.softcap != null) scores = mul(tanh(div(scores, o.softcap)), o.softcap);
    // Padding gets a finite floor so that a fully hidden row stays finite; exp underflows to 0.
    if (mask) scores = where(reshape(mask, [B, 1, 1, T]), scores, -1e30);
    return softmax(where(causal, scores, -Infinity), -1);
  };
  if (o.softcap != null) {
    // No backward kernel for the cap: fused only where nothing is traced (inference).
    return fusedAttnSoftmax(raw, mask, o) ?? compose(raw);
  }
  return fusedVjp(
    "causalSoftmax",
    [raw],
    () => {
      const p = fusedAttnSoftmax(raw, mask, o);
      return p && [p, p];
    },
    (p, g) => {
      const ds = fusedAttnSoftmaxGrad(g, p, mask, o.scale);
      return ds && [ds];
    },
    compose,
  );
}

/**
 * The squared error mean(Σ (x − y)² over the last axis) of two tensors of one shape (an SAE's
 * reconstruction loss), differentiable, where the backend has the kernels, in one pass forward
 * (the residual and its rows' sums of squares) and one per operand that needs a cotangent
 * backward (the rules form s·r for each factor of r·r, add them and negate for y: three passes
 * more), with the composition's bits both ways.
 */
export function squaredError(x: Tensor, y: Tensor): Tensor {
  const compose = (x: Tensor, y: Tensor) => {
    const r = sub(x, y);
    return mean(sum(mul(r, r), -1));
  };
  if (x.ndim < 1) return compose(x, y);
  const rows = x.size / x.shape[x.ndim - 1];
  return fusedVjp(
    "squaredError",
    [x, y],
    () => {
      if (!canFuseSquaredError(x, y)) return null;
      const rows = fusedSquaredErrorRows(x, y);
      if (rows) return [mean(rows[1]), rows[0]];
      const r = sub(x, y);
      return [mean(sum(mul(r, r), -1)), r];
    },
    (r, g, needs) => {
      // mean's rule: g/rows, broadcast over r (every element the same s).
      const s = div(g, rows);
      const dx = needs[0] ? fusedSquaredErrorGrad(r, s, false) : null;
      const dy = needs[1] ? fusedSquaredErrorGrad(r, s, true) : null;
      return (needs[0] && !dx) || (needs[1] && !dy) ? null : [dx, dy];
    },
    compose,
  );
}
