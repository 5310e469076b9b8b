/**
 * A trained GPT-2 as a Hugging Face model folder: config.json (model_type gpt2, exact GELU, tied
 * head), model.safetensors with GPT2LMHeadModel's tensor names (`transformer.` prefix, Conv1D
 * [in, out] weights, no lm_head.weight since it is tied) in bf16 or f32, and the tokenizer's
 * tokenizer.json (+ tokenizer_config.json) copied beside them, so `loadModel` and transformers'
 * `GPT2LMHeadModel.from_pretrained` both read it.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { cast } from "../../../tensor/ops/elementwise.ts";
import type { Tensor } from "../../../tensor/tensor.ts";
import { ensureDir, readFileBytes, writeFileAtomic, writeJsonAtomic } from "../../atomic.ts";
import { saveSafetensors } from "../../safetensors.ts";
import type { Gpt2Config } from "../config.ts";
import type { Gpt2Params } from "../load.ts";

/** How weights are stored in model.safetensors. */
export type SaveDType = "bf16" | "f32";

/**
 * The record's tensors by their Hugging Face names without the `transformer.` prefix (the names
 * of gpt2TensorShapes). Works on any record shaped like the params, e.g. gradients.
 */
export function gpt2TensorsOf(p: Gpt2Params): Record<string, Tensor> {
  if (p.head || p.headBias) {
    throw new RangeError("gpt2TensorsOf: an untied head or head bias has no GPT-2 tensor name");
  }
  const out: Record<string, Tensor> = { "wte.weight": p.wte, "wpe.weight": p.wpe };
  p.blocks.forEach((b, l) => {
    const h = `h.${l}.`;
    Object.assign(out, {
      [h + "ln_1.weight"]: b.ln1.w,
      [h + "ln_1.bias"]: b.ln1.b,
      [h + "attn.c_attn.weight"]: b.wQkv,
      [h + "attn.c_attn.bias"]: b.bQkv,
      [h + "attn.c_proj.weight"]: b.wO,
      [h + "attn.c_proj.bias"]: b.bO,
      [h + "ln_2.weight"]: b.ln2.w,
      [h + "ln_2.bias"]: b.ln2.b,
      [h + "mlp.c_fc.weight"]: b.wIn,
      [h + "mlp.c_fc.bias"]: b.bIn,
      [h + "mlp.c_proj.weight"]: b.wOut,
      [h + "mlp.c_proj.bias"]: b.bOut,
    });
  });
  out["ln_f.weight"] = p.lnF.w;
  out["ln_f.bias"] = p.lnF.b;
  return out;
}

/** config.json for `cfg`, with the tokenizer's BOS/EOS ids. */
export function gpt2ConfigJson(
  cfg: Gpt2Config,
  o: { bosId: number | null; eosId: number | null; dtype: SaveDType },
): Record<string, unknown> {
  return {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    vocab_size: cfg.vocabSize,
    n_positions: cfg.nPositions,
    n_ctx: cfg.nPositions,
    n_embd: cfg.dModel,
    n_layer: cfg.nLayer,
    n_head: cfg.nHead,
    n_inner: cfg.dMlp === 4 * cfg.dModel ? null : cfg.dMlp,
    activation_function: cfg.gelu === "none" ? "gelu" : "gelu_new",
    layer_norm_epsilon: cfg.layerNormEps,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    scale_attn_weights: cfg.scaleAttnWeights,
    scale_attn_by_inverse_layer_idx: cfg.scaleAttnByInverseLayerIdx,
    tie_word_embeddings: true,
    bos_token_id: o.bosId,
    eos_token_id: o.eosId,
    torch_dtype: o.dtype === "bf16" ? "bfloat16" : "float32",
  };
}

export interface SaveModelOptions {
  dtype?: SaveDType;
  /** A folder whose tokenizer.json (and tokenizer_config.json, if present) is copied. */
  tokenizerDir?: string;
  bosId?: number | null;
  eosId?: number | null;
  /** Strings for the safetensors `__metadata__` (besides format "pt"). */
  metadata?: Record<string, string>;
}

/** Write the model folder `dir` (created if missing); each file is written atomically. */
export async function saveGpt2Folder(
  dir: string,
  params: Gpt2Params,
  cfg: Gpt2Config,
  o: SaveModelOptions = {},
): Promise<void> {
  const dtype = o.dtype ?? "bf16";
  if (dtype !== "bf16" && dtype !== "f32") {
    throw new RangeError(`saveGpt2Folder: dtype must be "bf16" or "f32", got ${dtype}`);
  }
  await ensureDir(dir);
  const tensors: Record<string, Tensor> = {};
  const made: Tensor[] = [];
  for (const [name, t] of Object.entries(gpt2TensorsOf(params))) {
    const stored = t.dtype === dtype ? t : cast(t, dtype);
    if (stored !== t) made.push(stored);
    tensors["transformer." + name] = stored;
  }
  try {
    await saveSafetensors(join(dir, "model.safetensors"), tensors, {
      format: "pt",
      ...o.metadata,
    });
  } finally {
    for (const t of made) t.dispose();
  }
  await writeJsonAtomic(
    join(dir, "config.json"),
    gpt2ConfigJson(cfg, { bosId: o.bosId ?? null, eosId: o.eosId ?? null, dtype }),
  );
  if (o.tokenizerDir) {
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      const src = join(o.tokenizerDir, f);
      if (existsSync(src)) await writeFileAtomic(join(dir, f), await readFileBytes(src));
      else if (f === "tokenizer.json") {
        throw new Error(`saveGpt2Folder: ${src}: no tokenizer.json to copy`);
      }
    }
  }
}
