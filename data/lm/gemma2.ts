/**
 * Gemma-2: its config, its loader and its forward pass with TransformerLens's hook points. As
 * Llama, but the embedding is scaled by √d (rounded to f32), every RMSNorm multiplies by (1 + w),
 * attention and MLP outputs pass through their own post-norms, scores are scaled by
 * `query_pre_attn_scalar`^−½ and soft-capped, even layers attend within a sliding window, the MLP
 * is GeGLU with tanh GELU and the final logits are soft-capped. The head is tied by default.
 */
import { add, mul } from "../../tensor/ops/elementwise.ts";
import { mT, reshape } from "../../tensor/ops/shape.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import {
  activation,
  cacheRun,
  causalAttention,
  embedRows,
  type ForwardOptions,
  linear,
  makeHook,
  rmsNorm,
  rotary,
  softcap,
  type Tokens,
  tokenTensor,
  widen16,
} from "./common.ts";
import { type ConfigFields, LmConfigError, readConfigFields } from "./config.ts";
import {
  llamaHookNames,
  llamaTensorShapes,
  readHeads,
  readLlamaLayout,
  readRopeTheta,
} from "./llama.ts";
import type { LoadOptions } from "./load.ts";

export interface Gemma2Config {
  modelType: "gemma2";
  vocabSize: number;
  maxPositions: number;
  dModel: number;
  nLayer: number;
  nHead: number;
  nKvHead: number;
  /** Not d/H in general (Gemma-2 2B: 8 heads of 256 over d 2304). */
  headDim: number;
  dMlp: number;
  rmsNormEps: number;
  ropeTheta: number;
  tiedHead: boolean;
  /** Scores are scaled by this to the −½ (not head_dim). */
  queryPreAttnScalar: number;
  /** c in c·tanh(s/c) on the attention scores; null: no cap. */
  attnSoftcap: number | null;
  /** f in f·tanh(z/f) on the logits; null: no cap. */
  finalSoftcap: number | null;
  /** Per layer: its sliding window, or null for global attention. */
  layerWindows: (number | null)[];
}

/** A positive number, or null when the key is present as null (the cap switched off). */
function optionalCap(f: ConfigFields, key: string, fallback: number): number | null {
  if (key in f.raw && f.raw[key] === null) return null;
  const v = f.num(key, fallback);
  if (!(v > 0)) throw new LmConfigError(`${f.source}: ${key} must be positive or null, got ${v}`);
  return v;
}

/** Read `<dir>/config.json` with Gemma2Config's field names and defaults. */
export function readGemma2Config(dir: string): Gemma2Config {
  const f = readConfigFields(dir, "gemma2");
  const dModel = f.int("hidden_size", 2304);
  const { nHead, nKvHead } = readHeads(f, dModel, 8);
  const headDim = f.int("head_dim", 256);
  if (headDim % 2 !== 0) {
    throw new LmConfigError(`${f.source}: head_dim ${headDim} must be even`);
  }
  const act = f.str("hidden_activation", f.str("hidden_act", "gelu_pytorch_tanh"));
  if (act !== "gelu_pytorch_tanh" && act !== "gelu_new") {
    throw new LmConfigError(
      `${f.source}: unsupported hidden_activation ${
        JSON.stringify(act)
      } (expected "gelu_pytorch_tanh")`,
    );
  }
  if (f.bool("attention_bias", false)) {
    throw new LmConfigError(`${f.source}: unsupported attention_bias true`);
  }
  const nLayer = f.int("num_hidden_layers", 26);
  const window = f.int("sliding_window", 4096);
  const types = f.raw.layer_types;
  if (types != null && (!Array.isArray(types) || types.length !== nLayer)) {
    throw new LmConfigError(`${f.source}: layer_types must list ${nLayer} layer types`);
  }
  // Without layer_types, even layers slide and odd layers are global.
  const layerWindows = Array.from({ length: nLayer }, (_, l) => {
    const t = types == null ? (l % 2 === 0 ? "sliding_attention" : "full_attention") : types[l];
    if (t === "full_attention") return null;
    if (t === "sliding_attention") return window;
    throw new LmConfigError(
      `${f.source}: layer_types[${l}] ${JSON.stringify(t)} is not a supported attention type`,
    );
  });
  return {
    modelType: "gemma2",
    vocabSize: f.int("vocab_size", 256000),
    maxPositions: f.int("max_position_embeddings", 8192),
    dModel,
    nLayer,
    nHead,
    nKvHead,
    headDim,
    dMlp: f.int("intermediate_size", 9216),
    rmsNormEps: f.num("rms_norm_eps", 1e-6),
    ropeTheta: readRopeTheta(f, 10000),
    tiedHead: f.bool("tie_word_embeddings", true),
    queryPreAttnScalar: f.num("query_pre_attn_scalar", 256),
    attnSoftcap: optionalCap(f, "attn_logit_softcapping", 50),
    finalSoftcap: optionalCap(f, "final_logit_softcapping", 30),
    layerWindows,
  };
}

/** One block; projections are nn.Linear, [out, in]; norm weights w enter as (1 + w). */
export interface Gemma2BlockParams {
  ln1: Tensor;
  wQ: Tensor;
  wK: Tensor;
  wV: Tensor;
  wO: Tensor;
  /** post_attention_layernorm: on the attention output, before the residual add. */
  ln1Post: Tensor;
  /** pre_feedforward_layernorm: the MLP's input norm. */
  ln2: Tensor;
  /** post_feedforward_layernorm: on the MLP output. */
  ln2Post: Tensor;
  wGate: Tensor;
  wUp: Tensor;
  wDown: Tensor;
}

export interface Gemma2Params {
  /** [V, d], unscaled as stored. */
  embed: Tensor;
  blocks: Gemma2BlockParams[];
  lnF: Tensor;
  /** [V, d]; embed itself when tied. */
  head: Tensor;
}

export interface Gemma2Model {
  cfg: Gemma2Config;
  params: Gemma2Params;
}

/** Every tensor the model needs, by its Hugging Face name: Llama's layout with four norms a block. */
export function gemma2TensorShapes(cfg: Gemma2Config): Map<string, number[]> {
  return llamaTensorShapes({ ...cfg, qkvBias: false }, [
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
  ]);
}

/** Load a Gemma-2 model folder; F16/BF16 weights stay 16-bit unless `dtype: "f32"`. */
export function loadGemma2(dir: string, opts: LoadOptions = {}): Promise<Gemma2Model> {
  const cfg = readGemma2Config(dir);
  return readLlamaLayout(dir, cfg, gemma2TensorShapes(cfg), (get, p) => ({
    ln1: get(p + "input_layernorm.weight"),
    wQ: get(p + "self_attn.q_proj.weight"),
    wK: get(p + "self_attn.k_proj.weight"),
    wV: get(p + "self_attn.v_proj.weight"),
    wO: get(p + "self_attn.o_proj.weight"),
    ln1Post: get(p + "post_attention_layernorm.weight"),
    ln2: get(p + "pre_feedforward_layernorm.weight"),
    ln2Post: get(p + "post_feedforward_layernorm.weight"),
    wGate: get(p + "mlp.gate_proj.weight"),
    wUp: get(p + "mlp.up_proj.weight"),
    wDown: get(p + "mlp.down_proj.weight"),
  }), opts);
}

/** Every hook point of a Gemma-2 with `nLayer` layers: Llama's plus the two post-norms. */
export function gemma2HookNames(nLayer: number): string[] {
  const names: string[] = [];
  for (const n of llamaHookNames(nLayer)) {
    const m = /^(blocks\.\d+\.)hook_(attn|mlp)_out$/.exec(n);
    if (m) {
      const ln = m[1] + (m[2] === "attn" ? "ln1_post" : "ln2_post");
      names.push(ln + ".hook_scale", ln + ".hook_normalized");
    }
    names.push(n);
  }
  return names;
}

/** Logits [B, T, V] for token ids [B, T] (soft-capped); hooks run at each of gemma2HookNames. */
export function gemma2Forward(
  params: Gemma2Params,
  tokens: Tokens,
  cfg: Gemma2Config,
  opts: ForwardOptions = {},
): Tensor {
  const hook = makeHook(opts);
  const ids = tokenTensor(tokens, "gemma2", cfg.vocabSize, cfg.maxPositions);
  const [B, T] = ids.shape;
  const H = cfg.nHead, Hkv = cfg.nKvHead, hd = cfg.headDim, eps = cfg.rmsNormEps;
  const lin = (x: Tensor, w: Tensor): Tensor => linear(x, mT(widen16(w)));
  const norm = (prefix: string, x: Tensor, w: Tensor) =>
    rmsNorm(hook, prefix, x, w, eps, { plusOne: true });
  // √d is rounded to the weights' dtype (f32) before it multiplies, as Gemma does.
  let x = hook("hook_embed", mul(embedRows(params.embed, ids), Math.fround(Math.sqrt(cfg.dModel))));
  params.blocks.forEach((p, l) => {
    const b = `blocks.${l}.`;
    x = hook(b + "hook_resid_pre", x);
    const u = norm(b + "ln1", x, p.ln1);
    const q = hook(b + "attn.hook_q", reshape(lin(u, p.wQ), [B, T, H, hd]));
    const k = hook(b + "attn.hook_k", reshape(lin(u, p.wK), [B, T, Hkv, hd]));
    const v = hook(b + "attn.hook_v", reshape(lin(u, p.wV), [B, T, Hkv, hd]));
    const rq = hook(b + "attn.hook_rot_q", rotary(q, hd, cfg.ropeTheta));
    const rk = hook(b + "attn.hook_rot_k", rotary(k, hd, cfg.ropeTheta));
    const z = causalAttention(hook, b + "attn.", rq, rk, v, cfg.queryPreAttnScalar ** -0.5, {
      mask: opts.attentionMask,
      softcap: cfg.attnSoftcap,
      window: cfg.layerWindows[l],
    });
    const attn = lin(reshape(z, [B, T, H * hd]), p.wO);
    const attnOut = hook(b + "hook_attn_out", norm(b + "ln1_post", attn, p.ln1Post));
    const mid = hook(b + "hook_resid_mid", add(x, attnOut));
    const h = norm(b + "ln2", mid, p.ln2);
    const gate = hook(b + "mlp.hook_pre", lin(h, p.wGate));
    const up = hook(b + "mlp.hook_pre_linear", lin(h, p.wUp));
    const post = hook(b + "mlp.hook_post", mul(activation(gate, "gelu_tanh"), up));
    const mlpOut = hook(b + "hook_mlp_out", norm(b + "ln2_post", lin(post, p.wDown), p.ln2Post));
    x = hook(b + "hook_resid_post", add(mid, mlpOut));
  });
  const logits = lin(norm("ln_final", x, params.lnF), params.head);
  return cfg.finalSoftcap === null ? logits : softcap(logits, cfg.finalSoftcap);
}

/** Logits plus the activations at `names` (every hook point when omitted). */
export function gemma2RunWithCache(
  model: Gemma2Model,
  tokens: Tokens,
  names: readonly string[] = gemma2HookNames(model.cfg.nLayer),
): { logits: Tensor; cache: Record<string, Tensor> } {
  return cacheRun(
    gemma2HookNames(model.cfg.nLayer),
    names,
    (opts) => gemma2Forward(model.params, tokens, model.cfg, opts),
  );
}
