/**
 * Qwen2: Llama's forward pass with biases on the q/k/v projections (not o), under its own config
 * names and defaults. Sliding windows apply only to the layers `layer_types` marks
 * "sliding_attention" (older files: layers from `max_window_layers` on, when `use_sliding_window`).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import type { Tokens } from "./common.ts";
import { LmConfigError, readConfigFields } from "./config.ts";
import {
  type LlamaConfig,
  llamaHookNames,
  type LlamaModel,
  llamaRunWithCache,
  loadLlamaLike,
  readHeads,
  readRopeTheta,
} from "./llama.ts";
import type { LoadOptions } from "./load.ts";

/** Read `<dir>/config.json` with Qwen2Config's field names and defaults. */
export function readQwen2Config(dir: string): LlamaConfig {
  const f = readConfigFields(dir, "qwen2");
  const dModel = f.int("hidden_size", 4096);
  const { nHead, nKvHead, headDim } = readHeads(f, dModel, 32);
  const act = f.str("hidden_act", "silu");
  if (act !== "silu") {
    throw new LmConfigError(
      `${f.source}: unsupported hidden_act ${JSON.stringify(act)} (expected "silu")`,
    );
  }
  const nLayer = f.int("num_hidden_layers", 32);
  const window = f.bool("use_sliding_window", false) ? f.int("sliding_window", 4096) : null;
  const firstSliding = f.raw.max_window_layers == null ? 28 : f.int("max_window_layers", 28);
  let layerWindows: (number | null)[] = Array.from(
    { length: nLayer },
    (_, l) => window !== null && l >= firstSliding ? window : null,
  );
  const types = f.raw.layer_types;
  if (types != null) {
    if (!Array.isArray(types) || types.length !== nLayer) {
      throw new LmConfigError(`${f.source}: layer_types must list ${nLayer} layer types`);
    }
    layerWindows = types.map((t, l) => {
      if (t === "full_attention") return null;
      // Hugging Face drops sliding_window when use_sliding_window is false, whatever the types say.
      if (t === "sliding_attention") return window;
      throw new LmConfigError(
        `${f.source}: layer_types[${l}] ${JSON.stringify(t)} is not a supported attention type`,
      );
    });
  }
  return {
    modelType: "qwen2",
    vocabSize: f.int("vocab_size", 151936),
    maxPositions: f.int("max_position_embeddings", 32768),
    dModel,
    nLayer,
    nHead,
    nKvHead,
    headDim,
    dMlp: f.int("intermediate_size", 22016),
    rmsNormEps: f.num("rms_norm_eps", 1e-6),
    ropeTheta: readRopeTheta(f, 10000),
    tiedHead: f.bool("tie_word_embeddings", false),
    qkvBias: true,
    layerWindows,
  };
}

/** Load a Qwen2 model folder; F16/BF16 weights stay 16-bit unless `dtype: "f32"`. */
export function loadQwen2(dir: string, opts: LoadOptions = {}): Promise<LlamaModel> {
  return loadLlamaLike(dir, readQwen2Config(dir), opts);
}

/** Every hook point of a Qwen2 with `nLayer` layers: Llama's. */
export const qwen2HookNames = llamaHookNames;

/** Logits plus the activations at `names` (every hook point when omitted). */
export function qwen2RunWithCache(
  model: LlamaModel,
  tokens: Tokens,
  names?: readonly string[],
): { logits: Tensor; cache: Record<string, Tensor> } {
  return llamaRunWithCache(model, tokens, names);
}
