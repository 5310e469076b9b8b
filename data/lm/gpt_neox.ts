/**
 * GPT-NeoX (Pythia): its config, its loader and its forward pass with TransformerLens's hook
 * points. Per-head interleaved QKV, partial rotary, parallel residual (or sequential when the
 * config says so), an untied `embed_out` head by default.
 */
import { add } from "../../tensor/ops/elementwise.ts";
import { mT, reshape, sliceAxis } from "../../tensor/ops/shape.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import {
  activation,
  cacheRun,
  causalAttention,
  embedRows,
  type ForwardOptions,
  hookNamesOf,
  layerNorm,
  linear,
  makeHook,
  rotary,
  type Tokens,
  tokenTensor,
  widen16,
} from "./common.ts";
import { LmConfigError, readConfigFields } from "./config.ts";
import { type LayerNormParams, type LoadOptions, readModelTensors } from "./load.ts";

export interface NeoxConfig {
  modelType: "gpt_neox";
  vocabSize: number;
  maxPositions: number;
  dModel: number;
  nLayer: number;
  nHead: number;
  dMlp: number;
  /** "none" for the exact erf GELU (`gelu`), "tanh" for its tanh forms. */
  gelu: "tanh" | "none";
  layerNormEps: number;
  /** Rotated dims per head: ⌊head_dim·rotary_pct⌋. */
  nRot: number;
  rotaryBase: number;
  parallelResidual: boolean;
  tiedHead: boolean;
}

const GELU: Record<string, "tanh" | "none"> = {
  gelu: "none",
  gelu_new: "tanh",
  gelu_fast: "tanh",
  gelu_pytorch_tanh: "tanh",
};

/** Read `<dir>/config.json` with GPTNeoXConfig's field names and defaults. */
export function readNeoxConfig(dir: string): NeoxConfig {
  const f = readConfigFields(dir, "gpt_neox");
  const dModel = f.int("hidden_size", 6144);
  const nHead = f.int("num_attention_heads", 64);
  if (dModel % nHead !== 0) {
    throw new LmConfigError(
      `${f.source}: hidden_size ${dModel} is not divisible by num_attention_heads ${nHead}`,
    );
  }
  const act = f.str("hidden_act", "gelu");
  const g = GELU[act];
  if (g === undefined) {
    throw new LmConfigError(
      `${f.source}: unsupported hidden_act ${JSON.stringify(act)} (expected one of ${
        Object.keys(GELU).join(", ")
      })`,
    );
  }
  // Newer files name these partial_rotary_factor and rope_theta.
  const pct = f.num("partial_rotary_factor", f.num("rotary_pct", 0.25));
  const hd = dModel / nHead;
  const nRot = Math.floor(hd * pct);
  if (pct > 1 || nRot % 2 !== 0) {
    throw new LmConfigError(
      `${f.source}: rotary_pct ${pct} gives ${nRot} rotary dims of head_dim ${hd} (need an even number ≤ head_dim)`,
    );
  }
  if (f.raw.rope_scaling != null) {
    throw new LmConfigError(
      `${f.source}: unsupported rope_scaling ${JSON.stringify(f.raw.rope_scaling)}`,
    );
  }
  if (!f.bool("attention_bias", true)) {
    throw new LmConfigError(`${f.source}: unsupported attention_bias false`);
  }
  return {
    modelType: "gpt_neox",
    vocabSize: f.int("vocab_size", 50432),
    maxPositions: f.int("max_position_embeddings", 2048),
    dModel,
    nLayer: f.int("num_hidden_layers", 44),
    nHead,
    dMlp: f.int("intermediate_size", 24576),
    gelu: g,
    layerNormEps: f.num("layer_norm_eps", 1e-5),
    nRot,
    rotaryBase: f.num("rope_theta", f.num("rotary_emb_base", 10000)),
    parallelResidual: f.bool("use_parallel_residual", true),
    tiedHead: f.bool("tie_word_embeddings", false),
  };
}

/** One block; projections are nn.Linear, [out, in]. */
export interface NeoxBlockParams {
  ln1: LayerNormParams;
  /** [3d, d]: per head, hd rows of q, then k, then v. */
  wQkv: Tensor;
  bQkv: Tensor;
  wO: Tensor;
  bO: Tensor;
  ln2: LayerNormParams;
  wIn: Tensor;
  bIn: Tensor;
  wOut: Tensor;
  bOut: Tensor;
}

export interface NeoxParams {
  /** [V, d] */
  embedIn: Tensor;
  blocks: NeoxBlockParams[];
  lnF: LayerNormParams;
  /** [V, d]; embedIn itself when the head is tied. */
  embedOut: Tensor;
  /** [V]: an unembedding bias (weight processing folds the final norm's bias into it). */
  headBias?: Tensor;
}

export interface NeoxModel {
  cfg: NeoxConfig;
  params: NeoxParams;
}

/** Every tensor the model needs, by its name without `gpt_neox.`, with its expected shape. */
export function neoxTensorShapes(cfg: NeoxConfig): Map<string, number[]> {
  const { dModel: d, dMlp: m, vocabSize: V } = cfg;
  const out = new Map<string, number[]>([["embed_in.weight", [V, d]]]);
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `layers.${l}.`;
    for (const ln of ["input_layernorm", "post_attention_layernorm"]) {
      out.set(`${p}${ln}.weight`, [d]).set(`${p}${ln}.bias`, [d]);
    }
    out.set(p + "attention.query_key_value.weight", [3 * d, d]);
    out.set(p + "attention.query_key_value.bias", [3 * d]);
    out.set(p + "attention.dense.weight", [d, d]).set(p + "attention.dense.bias", [d]);
    out.set(p + "mlp.dense_h_to_4h.weight", [m, d]).set(p + "mlp.dense_h_to_4h.bias", [m]);
    out.set(p + "mlp.dense_4h_to_h.weight", [d, m]).set(p + "mlp.dense_4h_to_h.bias", [d]);
  }
  out.set("final_layer_norm.weight", [d]).set("final_layer_norm.bias", [d]);
  if (!cfg.tiedHead) out.set("embed_out.weight", [V, d]);
  return out;
}

/** Buffers the file may carry: the causal mask, its fill value, the rotary cache. */
const isBuffer = (name: string): boolean =>
  name.endsWith(".attention.bias") || name.endsWith(".attention.masked_bias") ||
  name.endsWith(".rotary_emb.inv_freq");

/** Load a GPT-NeoX model folder; F16/BF16 weights stay 16-bit unless `dtype: "f32"`. */
export async function loadNeox(dir: string, opts: LoadOptions = {}): Promise<NeoxModel> {
  const cfg = readNeoxConfig(dir);
  const { get } = await readModelTensors(dir, {
    family: "gpt_neox",
    expected: neoxTensorShapes(cfg),
    prefix: "gpt_neox.",
    ignore: isBuffer,
    optional: cfg.tiedHead
      ? new Map([["embed_out.weight", [cfg.vocabSize, cfg.dModel]]])
      : undefined,
  }, opts);
  const ln = (p: string): LayerNormParams => ({ w: get(p + ".weight"), b: get(p + ".bias") });
  const blocks: NeoxBlockParams[] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `layers.${l}.`;
    blocks.push({
      ln1: ln(p + "input_layernorm"),
      wQkv: get(p + "attention.query_key_value.weight"),
      bQkv: get(p + "attention.query_key_value.bias"),
      wO: get(p + "attention.dense.weight"),
      bO: get(p + "attention.dense.bias"),
      ln2: ln(p + "post_attention_layernorm"),
      wIn: get(p + "mlp.dense_h_to_4h.weight"),
      bIn: get(p + "mlp.dense_h_to_4h.bias"),
      wOut: get(p + "mlp.dense_4h_to_h.weight"),
      bOut: get(p + "mlp.dense_4h_to_h.bias"),
    });
  }
  const embedIn = get("embed_in.weight");
  return {
    cfg,
    params: {
      embedIn,
      blocks,
      lnF: ln("final_layer_norm"),
      embedOut: cfg.tiedHead ? embedIn : get("embed_out.weight"),
    },
  };
}

/** Every hook point, in the order the forward pass reaches them. */
export function neoxHookNames(cfg: NeoxConfig): string[] {
  return hookNamesOf(cfg.nLayer, { rotary: true, residMid: !cfg.parallelResidual });
}

/** y = x·Wᵀ + b for an nn.Linear weight [out, in]. */
const nnLinear = (x: Tensor, w: Tensor, b: Tensor): Tensor => linear(x, mT(widen16(w)), b);

/** Logits [B, T, V] for token ids [B, T]; hooks run at each of neoxHookNames. */
export function neoxForward(
  params: NeoxParams,
  tokens: Tokens,
  cfg: NeoxConfig,
  opts: ForwardOptions = {},
): Tensor {
  const hook = makeHook(opts);
  const ids = tokenTensor(tokens, "gpt_neox", cfg.vocabSize, cfg.maxPositions);
  const [B, T] = ids.shape;
  const d = cfg.dModel, H = cfg.nHead, hd = d / H, eps = cfg.layerNormEps;
  let x = hook("hook_embed", embedRows(params.embedIn, ids));
  params.blocks.forEach((p, l) => {
    const b = `blocks.${l}.`;
    x = hook(b + "hook_resid_pre", x);
    const h1 = layerNorm(hook, b + "ln1", x, p.ln1.w, p.ln1.b, eps);
    const qkv = reshape(nnLinear(h1, p.wQkv, p.bQkv), [B, T, H, 3 * hd]);
    const q = hook(b + "attn.hook_q", sliceAxis(qkv, -1, 0, hd));
    const k = hook(b + "attn.hook_k", sliceAxis(qkv, -1, hd, 2 * hd));
    const v = hook(b + "attn.hook_v", sliceAxis(qkv, -1, 2 * hd));
    const rq = hook(b + "attn.hook_rot_q", rotary(q, cfg.nRot, cfg.rotaryBase));
    const rk = hook(b + "attn.hook_rot_k", rotary(k, cfg.nRot, cfg.rotaryBase));
    const z = causalAttention(hook, b + "attn.", rq, rk, v, 1 / Math.sqrt(hd), {
      mask: opts.attentionMask,
    });
    const attnOut = hook(b + "hook_attn_out", nnLinear(reshape(z, [B, T, d]), p.wO, p.bO));
    // Parallel: the MLP reads the block input; sequential: the residual after attention.
    const mlpIn = cfg.parallelResidual ? x : hook(b + "hook_resid_mid", add(x, attnOut));
    const h2 = layerNorm(hook, b + "ln2", mlpIn, p.ln2.w, p.ln2.b, eps);
    const pre = hook(b + "mlp.hook_pre", nnLinear(h2, p.wIn, p.bIn));
    const post = hook(
      b + "mlp.hook_post",
      activation(pre, cfg.gelu === "tanh" ? "gelu_tanh" : "gelu"),
    );
    const mlpOut = hook(b + "hook_mlp_out", nnLinear(post, p.wOut, p.bOut));
    x = hook(
      b + "hook_resid_post",
      cfg.parallelResidual ? add(add(x, attnOut), mlpOut) : add(mlpIn, mlpOut),
    );
  });
  const { w, b } = params.lnF;
  return linear(
    layerNorm(hook, "ln_final", x, w, b, eps),
    mT(widen16(params.embedOut)),
    params.headBias,
  );
}

/** Logits plus the activations at `names` (every hook point when omitted). */
export function neoxRunWithCache(
  model: NeoxModel,
  tokens: Tokens,
  names: readonly string[] = neoxHookNames(model.cfg),
): { logits: Tensor; cache: Record<string, Tensor> } {
  return cacheRun(
    neoxHookNames(model.cfg),
    names,
    (opts) => neoxForward(model.params, tokens, model.cfg, opts),
  );
}
