/**
 * Llama: its config, its loader and its forward pass with TransformerLens's hook points. RMSNorm,
 * grouped-query attention, RoPE over the whole head, SiLU-gated MLP, no biases (Qwen2, loaded by
 * qwen2.ts, adds q/k/v biases and per-layer sliding windows); the head is
 * `lm_head.weight`, or the embedding when tied.
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
  hookNamesOf,
  linear,
  makeHook,
  rmsNorm,
  rotary,
  type Tokens,
  tokenTensor,
  widen16,
} from "./common.ts";
import { type ConfigFields, LmConfigError, readConfigFields } from "./config.ts";
import { type LoadOptions, readModelTensors } from "./load.ts";

/** Llama and the families that differ from it only in config names and q/k/v biases (Qwen2). */
export interface LlamaConfig {
  modelType: "llama" | "qwen2";
  vocabSize: number;
  maxPositions: number;
  dModel: number;
  nLayer: number;
  nHead: number;
  /** Key/value heads (GQA); nHead divides by it. */
  nKvHead: number;
  headDim: number;
  dMlp: number;
  rmsNormEps: number;
  ropeTheta: number;
  tiedHead: boolean;
  /** Biases on the q/k/v projections (Qwen2), not on o. */
  qkvBias: boolean;
  /** Per layer: its sliding window, or null for global attention. */
  layerWindows: (number | null)[];
}

/** rope_theta (or inside rope_parameters, as newer files write it); other rope types are refused. */
export function readRopeTheta(f: ConfigFields, fallback: number): number {
  const rp = f.raw.rope_parameters as Record<string, unknown> | null | undefined;
  const scaling = (f.raw.rope_scaling ?? rp) as Record<string, unknown> | null | undefined;
  const ropeType = scaling?.rope_type ?? scaling?.type ?? "default";
  if (ropeType !== "default") {
    throw new LmConfigError(`${f.source}: unsupported rope type ${JSON.stringify(ropeType)}`);
  }
  const theta = rp?.rope_theta ?? f.num("rope_theta", fallback);
  if (typeof theta !== "number" || !(theta > 0)) {
    throw new LmConfigError(`${f.source}: rope_theta must be a positive number, got ${theta}`);
  }
  return theta;
}

/** Query and key/value head counts and the head size, checked (GQA: H divides by Hkv). */
export function readHeads(
  f: ConfigFields,
  dModel: number,
  nHeadDefault: number,
): { nHead: number; nKvHead: number; headDim: number } {
  const nHead = f.int("num_attention_heads", nHeadDefault);
  const nKvHead = f.int("num_key_value_heads", nHead);
  if (nHead % nKvHead !== 0) {
    throw new LmConfigError(
      `${f.source}: num_attention_heads ${nHead} is not divisible by num_key_value_heads ${nKvHead}`,
    );
  }
  const headDim = f.raw.head_dim == null ? dModel / nHead : f.int("head_dim", 0);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new LmConfigError(`${f.source}: head_dim ${headDim} must be an even integer`);
  }
  return { nHead, nKvHead, headDim };
}

/** Read `<dir>/config.json` with LlamaConfig's field names and defaults. */
export function readLlamaConfig(dir: string): LlamaConfig {
  const f = readConfigFields(dir, "llama");
  const dModel = f.int("hidden_size", 4096);
  const { nHead, nKvHead, headDim } = readHeads(f, dModel, 32);
  const act = f.str("hidden_act", "silu");
  if (act !== "silu") {
    throw new LmConfigError(
      `${f.source}: unsupported hidden_act ${JSON.stringify(act)} (expected "silu")`,
    );
  }
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (f.bool(key, false)) throw new LmConfigError(`${f.source}: unsupported ${key} true`);
  }
  const nLayer = f.int("num_hidden_layers", 32);
  return {
    modelType: "llama",
    vocabSize: f.int("vocab_size", 32000),
    maxPositions: f.int("max_position_embeddings", 2048),
    dModel,
    nLayer,
    nHead,
    nKvHead,
    headDim,
    dMlp: f.int("intermediate_size", 11008),
    rmsNormEps: f.num("rms_norm_eps", 1e-6),
    ropeTheta: readRopeTheta(f, 10000),
    tiedHead: f.bool("tie_word_embeddings", false),
    qkvBias: false,
    layerWindows: new Array(nLayer).fill(null),
  };
}

/** One block; projections are nn.Linear, [out, in]. */
export interface LlamaBlockParams {
  ln1: Tensor;
  /** [H·hd, d] */
  wQ: Tensor;
  /** [Hkv·hd, d] */
  wK: Tensor;
  wV: Tensor;
  /** q/k/v biases where the family has them (Qwen2). */
  bQ?: Tensor;
  bK?: Tensor;
  bV?: Tensor;
  /** [d, H·hd] */
  wO: Tensor;
  /** [d]: an output bias (weight processing folds Qwen2's value biases into it). */
  bO?: Tensor;
  ln2: Tensor;
  wGate: Tensor;
  wUp: Tensor;
  wDown: Tensor;
}

export interface LlamaParams {
  /** [V, d] */
  embed: Tensor;
  blocks: LlamaBlockParams[];
  lnF: Tensor;
  /** [V, d]; embed itself when the head is tied. */
  head: Tensor;
}

export interface LlamaModel {
  cfg: LlamaConfig;
  params: LlamaParams;
}

/** The dimensions the Llama checkpoint layout depends on (Gemma-2 shares it). */
export type LlamaLayout = Pick<
  LlamaConfig,
  | "dModel"
  | "dMlp"
  | "vocabSize"
  | "headDim"
  | "nLayer"
  | "nHead"
  | "nKvHead"
  | "tiedHead"
  | "qkvBias"
>;

/**
 * Every tensor the model needs, by its Hugging Face name, with its expected shape. `norms` are the
 * per-block RMSNorm weights ([d] each): Gemma-2 has two more than Llama.
 */
export function llamaTensorShapes(
  cfg: LlamaLayout,
  norms = ["input_layernorm", "post_attention_layernorm"],
): Map<string, number[]> {
  const { dModel: d, dMlp: m, vocabSize: V, headDim: hd } = cfg;
  const out = new Map<string, number[]>([["model.embed_tokens.weight", [V, d]]]);
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `model.layers.${l}.`;
    for (const n of norms) out.set(`${p}${n}.weight`, [d]);
    out.set(p + "self_attn.q_proj.weight", [cfg.nHead * hd, d]);
    out.set(p + "self_attn.k_proj.weight", [cfg.nKvHead * hd, d]);
    out.set(p + "self_attn.v_proj.weight", [cfg.nKvHead * hd, d]);
    out.set(p + "self_attn.o_proj.weight", [d, cfg.nHead * hd]);
    if (cfg.qkvBias) {
      out.set(p + "self_attn.q_proj.bias", [cfg.nHead * hd]);
      out.set(p + "self_attn.k_proj.bias", [cfg.nKvHead * hd]);
      out.set(p + "self_attn.v_proj.bias", [cfg.nKvHead * hd]);
    }
    out.set(p + "mlp.gate_proj.weight", [m, d]).set(p + "mlp.up_proj.weight", [m, d]);
    out.set(p + "mlp.down_proj.weight", [d, m]);
  }
  out.set("model.norm.weight", [d]);
  if (!cfg.tiedHead) out.set("lm_head.weight", [V, d]);
  return out;
}

/** Load a Llama model folder; F16/BF16 weights stay 16-bit unless `dtype: "f32"`. */
export function loadLlama(dir: string, opts: LoadOptions = {}): Promise<LlamaModel> {
  return loadLlamaLike(dir, readLlamaConfig(dir), opts);
}

/** Load the tensors `cfg` calls for from a folder of Llama-named weights. */
export function loadLlamaLike(
  dir: string,
  cfg: LlamaConfig,
  opts: LoadOptions = {},
): Promise<LlamaModel> {
  return readLlamaLayout(dir, cfg, llamaTensorShapes(cfg), (get, p) => ({
    ln1: get(p + "input_layernorm.weight"),
    wQ: get(p + "self_attn.q_proj.weight"),
    wK: get(p + "self_attn.k_proj.weight"),
    wV: get(p + "self_attn.v_proj.weight"),
    ...(cfg.qkvBias
      ? {
        bQ: get(p + "self_attn.q_proj.bias"),
        bK: get(p + "self_attn.k_proj.bias"),
        bV: get(p + "self_attn.v_proj.bias"),
      }
      : {}),
    wO: get(p + "self_attn.o_proj.weight"),
    ln2: get(p + "post_attention_layernorm.weight"),
    wGate: get(p + "mlp.gate_proj.weight"),
    wUp: get(p + "mlp.up_proj.weight"),
    wDown: get(p + "mlp.down_proj.weight"),
  }), opts);
}

/**
 * A checkpoint in Llama's layout (Llama, Qwen2, Gemma-2): embedding, blocks under
 * `model.layers.l.` (each picked by `block`), final norm, and a head that may be tied.
 */
export async function readLlamaLayout<
  C extends Pick<LlamaConfig, "tiedHead" | "vocabSize" | "dModel" | "nLayer"> & {
    modelType: string;
  },
  B,
>(
  dir: string,
  cfg: C,
  expected: Map<string, number[]>,
  block: (get: (name: string) => Tensor, prefix: string) => B,
  opts: LoadOptions,
): Promise<{ cfg: C; params: { embed: Tensor; blocks: B[]; lnF: Tensor; head: Tensor } }> {
  const { get } = await readModelTensors(dir, {
    family: cfg.modelType,
    expected,
    ignore: (name) => name.endsWith(".rotary_emb.inv_freq"),
    optional: cfg.tiedHead ? new Map([["lm_head.weight", [cfg.vocabSize, cfg.dModel]]]) : undefined,
  }, opts);
  const blocks: B[] = [];
  for (let l = 0; l < cfg.nLayer; l++) blocks.push(block(get, `model.layers.${l}.`));
  const embed = get("model.embed_tokens.weight");
  const head = cfg.tiedHead ? embed : get("lm_head.weight");
  return { cfg, params: { embed, blocks, lnF: get("model.norm.weight"), head } };
}

/** Every hook point of a Llama with `nLayer` layers, in the order the forward pass reaches them. */
export function llamaHookNames(nLayer: number): string[] {
  return hookNamesOf(nLayer, { rotary: true, gated: true });
}

/** Logits [B, T, V] for token ids [B, T]; hooks run at each of llamaHookNames. */
export function llamaForward(
  params: LlamaParams,
  tokens: Tokens,
  cfg: LlamaConfig,
  opts: ForwardOptions = {},
): Tensor {
  const hook = makeHook(opts);
  const ids = tokenTensor(tokens, cfg.modelType, cfg.vocabSize, cfg.maxPositions);
  const [B, T] = ids.shape;
  const H = cfg.nHead, Hkv = cfg.nKvHead, hd = cfg.headDim, eps = cfg.rmsNormEps;
  const lin = (x: Tensor, w: Tensor, bias?: Tensor): Tensor => linear(x, mT(widen16(w)), bias);
  let x = hook("hook_embed", embedRows(params.embed, ids));
  params.blocks.forEach((p, l) => {
    const b = `blocks.${l}.`;
    x = hook(b + "hook_resid_pre", x);
    const u = rmsNorm(hook, b + "ln1", x, p.ln1, eps);
    const q = hook(b + "attn.hook_q", reshape(lin(u, p.wQ, p.bQ), [B, T, H, hd]));
    const k = hook(b + "attn.hook_k", reshape(lin(u, p.wK, p.bK), [B, T, Hkv, hd]));
    const v = hook(b + "attn.hook_v", reshape(lin(u, p.wV, p.bV), [B, T, Hkv, hd]));
    const rq = hook(b + "attn.hook_rot_q", rotary(q, hd, cfg.ropeTheta));
    const rk = hook(b + "attn.hook_rot_k", rotary(k, hd, cfg.ropeTheta));
    const z = causalAttention(hook, b + "attn.", rq, rk, v, 1 / Math.sqrt(hd), {
      mask: opts.attentionMask,
      window: cfg.layerWindows[l],
    });
    const attnOut = hook(b + "hook_attn_out", lin(reshape(z, [B, T, H * hd]), p.wO, p.bO));
    const mid = hook(b + "hook_resid_mid", add(x, attnOut));
    const h = rmsNorm(hook, b + "ln2", mid, p.ln2, eps);
    const gate = hook(b + "mlp.hook_pre", lin(h, p.wGate));
    const up = hook(b + "mlp.hook_pre_linear", lin(h, p.wUp));
    const post = hook(b + "mlp.hook_post", mul(activation(gate, "silu"), up));
    const mlpOut = hook(b + "hook_mlp_out", lin(post, p.wDown));
    x = hook(b + "hook_resid_post", add(mid, mlpOut));
  });
  return lin(rmsNorm(hook, "ln_final", x, params.lnF, eps), params.head);
}

/** Logits plus the activations at `names` (every hook point when omitted). */
export function llamaRunWithCache(
  model: LlamaModel,
  tokens: Tokens,
  names: readonly string[] = llamaHookNames(model.cfg.nLayer),
): { logits: Tensor; cache: Record<string, Tensor> } {
  return cacheRun(
    llamaHookNames(model.cfg.nLayer),
    names,
    (opts) => llamaForward(model.params, tokens, model.cfg, opts),
  );
}
