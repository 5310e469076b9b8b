/**
 * One record for every family: `loadModel` reads `config.json`'s model_type and hands the folder
 * to that family's loader; `forward`, `hookNames`, `runWithCache` and `runWithHooks` dispatch on
 * `family`. A model is plain data ({ family, cfg, params }), so a caller differentiates with
 * respect to the weights by passing `{ ...model, params }`.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tensor } from "../../tensor/tensor.ts";
import type { ForwardOptions, HookFn, Tokens } from "./common.ts";
import { type Gpt2Config, LmConfigError } from "./config.ts";
import {
  type Gemma2Config,
  gemma2Forward,
  gemma2HookNames,
  type Gemma2Params,
  loadGemma2,
} from "./gemma2.ts";
import { forward as gpt2Forward, gpt2HookNames } from "./gpt2.ts";
import {
  loadNeox,
  type NeoxConfig,
  neoxForward,
  neoxHookNames,
  type NeoxParams,
} from "./gpt_neox.ts";
import {
  type LlamaConfig,
  llamaForward,
  llamaHookNames,
  type LlamaParams,
  loadLlama,
} from "./llama.ts";
import { type HubOptions, resolveModel } from "./hub.ts";
import { type Gpt2Params, loadGpt2, type LoadOptions } from "./load.ts";
import { loadQwen2 } from "./qwen2.ts";

export type { ForwardOptions, HookFn, Tokens };

/** The `model_type` values this library runs. */
export const FAMILIES = ["gpt2", "gpt_neox", "llama", "qwen2", "gemma2"] as const;
export type Family = typeof FAMILIES[number];

export type LanguageModel =
  | { family: "gpt2"; cfg: Gpt2Config; params: Gpt2Params }
  | { family: "gpt_neox"; cfg: NeoxConfig; params: NeoxParams }
  | { family: "llama" | "qwen2"; cfg: LlamaConfig; params: LlamaParams }
  | { family: "gemma2"; cfg: Gemma2Config; params: Gemma2Params };

/** The config's model_type, checked against FAMILIES; errors name the file and the type. */
export function readModelType(dir: string): Family {
  const source = join(dir, "config.json");
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(source, "utf8"));
  } catch (e) {
    throw new LmConfigError(`${source}: cannot read: ${(e as Error).message}`);
  }
  const type = (raw as { model_type?: unknown } | null)?.model_type;
  if (!FAMILIES.includes(type as Family)) {
    throw new LmConfigError(
      `${source}: unsupported model_type ${JSON.stringify(type ?? null)} (supported: ${
        FAMILIES.join(", ")
      })`,
    );
  }
  return type as Family;
}

/** Where the model comes from (HubOptions) and how its weights are held (LoadOptions). */
export type LoadModelOptions = HubOptions & LoadOptions;

/**
 * Load a model of any supported family from a folder (config.json + safetensors) or a Hugging
 * Face repo id (`gpt2`, `EleutherAI/pythia-70m-deduped@main`) found in, or downloaded into, the
 * Hugging Face cache (see resolveModel).
 */
export async function loadModel(
  idOrDir: string,
  opts: LoadModelOptions = {},
): Promise<LanguageModel> {
  const dir = await resolveModel(idOrDir, opts);
  const family = readModelType(dir);
  const load = { dtype: opts.dtype };
  switch (family) {
    case "gpt2":
      return { family, ...(await loadGpt2(dir, load)) };
    case "gpt_neox":
      return { family, ...(await loadNeox(dir, load)) };
    case "llama":
      return { family, ...(await loadLlama(dir, load)) };
    case "qwen2":
      return { family, ...(await loadQwen2(dir, load)) };
    case "gemma2":
      return { family, ...(await loadGemma2(dir, load)) };
  }
}

/** Logits [B, T, V] for token ids [B, T], with hooks and an optional padding mask. */
export function forward(model: LanguageModel, tokens: Tokens, opts: ForwardOptions = {}): Tensor {
  switch (model.family) {
    case "gpt2":
      return gpt2Forward(model.params, tokens, model.cfg, opts);
    case "gpt_neox":
      return neoxForward(model.params, tokens, model.cfg, opts);
    case "llama":
    case "qwen2":
      return llamaForward(model.params, tokens, model.cfg, opts);
    case "gemma2":
      return gemma2Forward(model.params, tokens, model.cfg, opts);
  }
}

/** Every hook point of the model, in the order the forward pass reaches them. */
export function hookNames(model: LanguageModel): string[] {
  switch (model.family) {
    case "gpt2":
      return gpt2HookNames(model.cfg.nLayer);
    case "gpt_neox":
      return neoxHookNames(model.cfg);
    case "llama":
    case "qwen2":
      return llamaHookNames(model.cfg.nLayer);
    case "gemma2":
      return gemma2HookNames(model.cfg.nLayer);
  }
}

/** Sizes and names a user asks about first. */
export interface ModelInfo {
  family: Family;
  vocabSize: number;
  maxPositions: number;
  dModel: number;
  nLayer: number;
  nHead: number;
  dMlp: number;
  /** Parameter count (a tied head counted once). */
  nParams: number;
  /** The weights' dtype(s) as loaded. */
  dtypes: string[];
}

export function modelInfo(model: LanguageModel): ModelInfo {
  const { cfg } = model;
  const seen = new Set<Tensor>();
  let nParams = 0;
  const dtypes = new Set<string>();
  const visit = (v: unknown): void => {
    if (v === null || typeof v !== "object") return;
    if (v instanceof Tensor) {
      if (seen.has(v)) return;
      seen.add(v);
      nParams += v.size;
      dtypes.add(v.dtype);
      return;
    }
    for (const x of Object.values(v as Record<string, unknown>)) visit(x);
  };
  visit(model.params);
  return {
    family: model.family,
    vocabSize: cfg.vocabSize,
    maxPositions: cfg.modelType === "gpt2" ? cfg.nPositions : cfg.maxPositions,
    dModel: cfg.dModel,
    nLayer: cfg.nLayer,
    nHead: cfg.nHead,
    dMlp: cfg.dMlp,
    nParams,
    dtypes: [...dtypes].sort(),
  };
}

/** Thrown through the forward pass to stop it once every asked activation is in hand. */
class StopForward {}

export interface RunWithCacheOptions {
  /**
   * Stop once the last asked hook point is reached: no logits (null), and none of the later
   * layers computed. For harvesting activations from early layers of a large model.
   */
  stopEarly?: boolean;
  /**
   * TransformerLens's stop_at_layer: run blocks 0 … l − 1 only. The residual entering block l is
   * cached as `blocks.{l}.hook_resid_pre` (for l = nLayer, the last block's `hook_resid_post`);
   * logits are null, and an asked hook past that point is an error.
   */
  stopAtLayer?: number;
  /** A padding mask, as in forward. */
  attentionMask?: Tensor;
  /** Hooks to run as well (e.g. a dictionary spliced in); the cache sees what they return. */
  hooks?: Readonly<Record<string, HookFn>>;
}

/**
 * Logits plus the activations at `names` (every hook point when omitted), as the hooks saw them.
 * With `stopEarly`, logits are null and the pass ends at the last asked hook.
 */
export function runWithCache(
  model: LanguageModel,
  tokens: Tokens,
  names: readonly string[] = hookNames(model),
  opts: RunWithCacheOptions = {},
): { logits: Tensor | null; cache: Record<string, Tensor> } {
  const all = hookNames(model);
  const order = new Map(all.map((n, i) => [n, i]));
  checkHookNames("runWithCache", model, names, order);
  if (opts.stopAtLayer !== undefined) {
    const l = opts.stopAtLayer, L = model.cfg.nLayer;
    if (!Number.isInteger(l) || l < 0 || l > L) {
      throw new RangeError(`runWithCache: stopAtLayer must be an integer in [0, ${L}], got ${l}`);
    }
    const resid = l < L ? `blocks.${l}.hook_resid_pre` : `blocks.${L - 1}.hook_resid_post`;
    const past = names.find((n) => order.get(n)! > order.get(resid)!);
    if (past) {
      throw new RangeError(`runWithCache: ${past} lies past stopAtLayer ${l} (${resid})`);
    }
    names = names.includes(resid) ? names : [...names, resid];
    opts = { ...opts, stopEarly: true };
  }
  const last = Math.max(-1, ...names.map((n) => order.get(n)!));
  const lastName = all[last];
  const cache: Record<string, Tensor> = {};
  const hooks: Record<string, HookFn> = { ...opts.hooks };
  checkHookNames("runWithCache", model, Object.keys(hooks), order);
  for (const n of names) {
    const user = hooks[n];
    hooks[n] = (a) => {
      const out = user ? (user(a) ?? a) : a;
      cache[n] = out;
      if (opts.stopEarly && n === lastName) throw new StopForward();
      return out;
    };
  }
  if (opts.stopEarly && names.length === 0) return { logits: null, cache };
  try {
    return { logits: forward(model, tokens, { hooks, attentionMask: opts.attentionMask }), cache };
  } catch (e) {
    if (e instanceof StopForward) return { logits: null, cache };
    throw e;
  }
}

/**
 * Logits with `hooks` applied (name → function that may return a replacement); names are checked
 * against the model's hook points, so a misspelt hook is an error rather than a silent no-op.
 */
export function runWithHooks(
  model: LanguageModel,
  tokens: Tokens,
  hooks: Readonly<Record<string, HookFn>>,
  opts: { attentionMask?: Tensor } = {},
): Tensor {
  checkHookNames("runWithHooks", model, Object.keys(hooks), new Set(hookNames(model)));
  return forward(model, tokens, { hooks, attentionMask: opts.attentionMask });
}

/** A misspelt hook name would silently do nothing: make it an error naming the hook. */
function checkHookNames(
  fn: string,
  model: LanguageModel,
  names: readonly string[],
  known: { has(name: string): boolean },
): void {
  for (const n of names) {
    if (!known.has(n)) {
      throw new RangeError(`${fn}: ${model.family} has no hook point named ${JSON.stringify(n)}`);
    }
  }
}
