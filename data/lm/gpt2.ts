/**
 * GPT-2's forward pass as a pure function of its parameters, built from the library's tensor ops
 * so that gradients flow through it. Activations pass through TransformerLens's hook points (names
 * and meanings as TransformerLens gives them for the unprocessed model: no weight folding or
 * centring), where a caller may read or replace them.
 */
import { tensor } from "../../tensor/ops/create.ts";
import { add, div, gelu, mul, sqrt, sub, where } from "../../tensor/ops/elementwise.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { mean, softmax } from "../../tensor/ops/reduce.ts";
import { broadcastTo, mT, reshape, sliceAxis, take, transpose } from "../../tensor/ops/shape.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { Gpt2Config } from "./config.ts";
import type { Gpt2Model, Gpt2Params, LayerNormParams } from "./load.ts";

import type { ForwardOptions, HookFn, Tokens } from "./common.ts";

export type { ForwardOptions, HookFn, Tokens };

/** Every hook point of a GPT-2 with `nLayer` layers, in the order the forward pass reaches them. */
export function gpt2HookNames(nLayer: number): string[] {
  const names = ["hook_embed", "hook_pos_embed"];
  for (let l = 0; l < nLayer; l++) {
    const b = `blocks.${l}.`;
    names.push(
      b + "hook_resid_pre",
      b + "ln1.hook_scale",
      b + "ln1.hook_normalized",
      b + "attn.hook_q",
      b + "attn.hook_k",
      b + "attn.hook_v",
      b + "attn.hook_pattern",
      b + "attn.hook_z",
      b + "hook_attn_out",
      b + "hook_resid_mid",
      b + "ln2.hook_scale",
      b + "ln2.hook_normalized",
      b + "mlp.hook_pre",
      b + "mlp.hook_post",
      b + "hook_mlp_out",
      b + "hook_resid_post",
    );
  }
  names.push("ln_final.hook_scale", "ln_final.hook_normalized");
  return names;
}

function tokenTensor(tokens: Tokens, cfg: Gpt2Config): Tensor {
  const t = Array.isArray(tokens)
    ? tensor(tokens as number[][], { dtype: "i32" })
    : tokens as Tensor;
  if (t.ndim !== 2 || t.dtype !== "i32") {
    throw new TypeError(`gpt2 forward: tokens must be i32 [B, T], got ${t.dtype} [${t.shape}]`);
  }
  if (t.shape[1] > cfg.nPositions) {
    throw new RangeError(
      `gpt2 forward: ${t.shape[1]} tokens exceed n_positions ${cfg.nPositions}`,
    );
  }
  if (t.backend.name === "cpu") {
    for (const id of t.dataSync()) {
      if (!(id >= 0 && id < cfg.vocabSize)) {
        throw new RangeError(`gpt2 forward: token id ${id} outside [0, ${cfg.vocabSize})`);
      }
    }
  }
  return t;
}

/**
 * Logits [B, T, V] for token ids [B, T]. Hooks run at each hook point; see gpt2HookNames.
 */
export function forward(
  params: Gpt2Params,
  tokens: Tokens,
  cfg: Gpt2Config,
  opts: ForwardOptions = {},
): Tensor {
  const hooks = opts.hooks ?? {};
  const hook = (name: string, x: Tensor): Tensor => {
    const f = hooks[name];
    return f ? (f(x) ?? x) : x;
  };
  const ids = tokenTensor(tokens, cfg);
  const [B, T] = ids.shape;
  const d = cfg.dModel, H = cfg.nHead, hd = d / H;

  // LayerNorm with the biased variance; the hooks see the scale and the value before w and b.
  const layerNorm = (prefix: string, x: Tensor, p: LayerNormParams): Tensor => {
    const c = sub(x, mean(x, -1, { keepdims: true }));
    const scale = hook(
      prefix + ".hook_scale",
      sqrt(add(mean(mul(c, c), -1, { keepdims: true }), cfg.layerNormEps)),
    );
    const normalized = hook(prefix + ".hook_normalized", div(c, scale));
    return add(mul(normalized, p.w), p.b);
  };

  // Query i may attend to keys j ≤ i.
  const causal = tensor(
    Array.from({ length: T }, (_, i) => Array.from({ length: T }, (_, j) => j <= i)),
    { dtype: "bool" },
  );
  const heads = (x: Tensor): Tensor => reshape(x, [B, T, H, hd]);

  const embed = hook("hook_embed", take(params.wte, ids, 0));
  const pos = hook("hook_pos_embed", broadcastTo(sliceAxis(params.wpe, 0, 0, T), [B, T, d]));
  let x = add(embed, pos);
  params.blocks.forEach((p, l) => {
    const b = `blocks.${l}.`;
    x = hook(b + "hook_resid_pre", x);
    const h1 = layerNorm(b + "ln1", x, p.ln1);
    const qkv = add(matmul(h1, p.wQkv), p.bQkv);
    const q = hook(b + "attn.hook_q", heads(sliceAxis(qkv, -1, 0, d)));
    const k = hook(b + "attn.hook_k", heads(sliceAxis(qkv, -1, d, 2 * d)));
    const v = hook(b + "attn.hook_v", heads(sliceAxis(qkv, -1, 2 * d, 3 * d)));
    const toBH = (t: Tensor) => transpose(t, [0, 2, 1, 3]); // [B, H, T, hd]
    let divisor = cfg.scaleAttnWeights ? Math.sqrt(hd) : 1;
    if (cfg.scaleAttnByInverseLayerIdx) divisor *= l + 1;
    const scores = div(matmul(toBH(q), mT(toBH(k))), divisor);
    const pattern = hook(
      b + "attn.hook_pattern",
      softmax(where(causal, scores, -Infinity), -1),
    );
    const z = hook(b + "attn.hook_z", transpose(matmul(pattern, toBH(v)), [0, 2, 1, 3]));
    const attnOut = hook(
      b + "hook_attn_out",
      add(matmul(reshape(z, [B, T, d]), p.wO), p.bO),
    );
    const mid = hook(b + "hook_resid_mid", add(x, attnOut));
    const h2 = layerNorm(b + "ln2", mid, p.ln2);
    const pre = hook(b + "mlp.hook_pre", add(matmul(h2, p.wIn), p.bIn));
    const post = hook(b + "mlp.hook_post", gelu(pre, { approximate: cfg.gelu }));
    const mlpOut = hook(b + "hook_mlp_out", add(matmul(post, p.wOut), p.bOut));
    x = hook(b + "hook_resid_post", add(mid, mlpOut));
  });
  // The head is tied: logits = LN_f(x)·wteᵀ.
  return matmul(layerNorm("ln_final", x, params.lnF), mT(params.wte));
}

/** Logits plus the activations at `names` (every hook point when omitted). */
export function runWithCache(
  model: Gpt2Model,
  tokens: Tokens,
  names: readonly string[] = gpt2HookNames(model.cfg.nLayer),
): { logits: Tensor; cache: Record<string, Tensor> } {
  const known = new Set(gpt2HookNames(model.cfg.nLayer));
  for (const n of names) {
    if (!known.has(n)) {
      throw new RangeError(`runWithCache: no hook point named ${JSON.stringify(n)}`);
    }
  }
  const cache: Record<string, Tensor> = {};
  const hooks: Record<string, HookFn> = {};
  for (const n of names) hooks[n] = (a) => void (cache[n] = a);
  const logits = forward(model.params, tokens, model.cfg, { hooks });
  return { logits, cache };
}
