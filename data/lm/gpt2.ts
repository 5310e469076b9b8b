/**
 * GPT-2's forward pass as a pure function of its parameters, built from the library's tensor ops
 * so that gradients flow through it. Activations pass through TransformerLens's hook points (names
 * and meanings as TransformerLens gives them for the unprocessed model: no weight folding or
 * centring), where a caller may read or replace them.
 */
import { add } from "../../tensor/ops/elementwise.ts";
import { broadcastTo, mT, reshape, sliceAxis } from "../../tensor/ops/shape.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { Gpt2Config } from "./config.ts";
import type { Gpt2Model, Gpt2Params, LayerNormParams } from "./load.ts";

import {
  activation,
  cacheRun,
  causalAttention,
  embedRows,
  type ForwardOptions,
  type HookFn,
  hookNamesOf,
  layerNorm,
  linear,
  makeHook,
  type Tokens,
  tokenTensor,
  widen16,
} from "./common.ts";

export type { ForwardOptions, HookFn, Tokens };

/** Every hook point of a GPT-2 with `nLayer` layers, in the order the forward pass reaches them. */
export function gpt2HookNames(nLayer: number): string[] {
  return hookNamesOf(nLayer, { posEmbed: true });
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
  const hook = makeHook(opts);
  const ids = tokenTensor(tokens, "gpt2", cfg.vocabSize, cfg.nPositions);
  const [B, T] = ids.shape;
  const d = cfg.dModel, H = cfg.nHead, hd = d / H, eps = cfg.layerNormEps;
  const heads = (x: Tensor): Tensor => reshape(x, [B, T, H, hd]);
  const ln = (prefix: string, x: Tensor, p: LayerNormParams) =>
    layerNorm(hook, prefix, x, p.w, p.b, eps);

  const embed = hook("hook_embed", embedRows(params.wte, ids));
  const pos = hook(
    "hook_pos_embed",
    broadcastTo(widen16(sliceAxis(params.wpe, 0, 0, T)), [B, T, d]),
  );
  let x = add(embed, pos);
  params.blocks.forEach((p, l) => {
    const b = `blocks.${l}.`;
    x = hook(b + "hook_resid_pre", x);
    const qkv = linear(ln(b + "ln1", x, p.ln1), p.wQkv, p.bQkv);
    const q = hook(b + "attn.hook_q", heads(sliceAxis(qkv, -1, 0, d)));
    const k = hook(b + "attn.hook_k", heads(sliceAxis(qkv, -1, d, 2 * d)));
    const v = hook(b + "attn.hook_v", heads(sliceAxis(qkv, -1, 2 * d, 3 * d)));
    let divisor = cfg.scaleAttnWeights ? Math.sqrt(hd) : 1;
    if (cfg.scaleAttnByInverseLayerIdx) divisor *= l + 1;
    const z = causalAttention(hook, b + "attn.", q, k, v, 1 / divisor, {
      mask: opts.attentionMask,
    });
    const attnOut = hook(b + "hook_attn_out", linear(reshape(z, [B, T, d]), p.wO, p.bO));
    const mid = hook(b + "hook_resid_mid", add(x, attnOut));
    const pre = hook(b + "mlp.hook_pre", linear(ln(b + "ln2", mid, p.ln2), p.wIn, p.bIn));
    const post = hook(
      b + "mlp.hook_post",
      activation(pre, cfg.gelu === "tanh" ? "gelu_tanh" : "gelu"),
    );
    const mlpOut = hook(b + "hook_mlp_out", linear(post, p.wOut, p.bOut));
    x = hook(b + "hook_resid_post", add(mid, mlpOut));
  });
  // The head is tied (logits = LN_f(x)·wteᵀ) unless weight processing untied it.
  return linear(
    ln("ln_final", x, params.lnF),
    mT(widen16(params.head ?? params.wte)),
    params.headBias,
  );
}

/** Logits plus the activations at `names` (every hook point when omitted). */
export function runWithCache(
  model: Gpt2Model,
  tokens: Tokens,
  names: readonly string[] = gpt2HookNames(model.cfg.nLayer),
): { logits: Tensor; cache: Record<string, Tensor> } {
  return cacheRun(
    gpt2HookNames(model.cfg.nLayer),
    names,
    (opts) => forward(model.params, tokens, model.cfg, opts),
  );
}
