/**
 * A GPT-2 model's configuration, read from a Hugging Face `config.json`. Missing keys take the
 * defaults Hugging Face's GPT2Config uses, so an old file (the original `gpt2` upload: `n_ctx`, no
 * `n_inner`) reads the same as a new one.
 */
import { readFileSync } from "node:fs";

export class LmConfigError extends Error {
  override name = "LmConfigError";
}

export interface Gpt2Config {
  modelType: "gpt2";
  vocabSize: number;
  nPositions: number;
  dModel: number;
  nLayer: number;
  nHead: number;
  /** The MLP width (`n_inner`; null or absent means 4·d). */
  dMlp: number;
  /** "tanh" for gelu_new (and its aliases), "none" for the exact erf form. */
  gelu: "tanh" | "none";
  layerNormEps: number;
  /** If true, layer l's attention scores are also divided by l + 1. */
  scaleAttnByInverseLayerIdx: boolean;
  /** If false, scores are not divided by √head_dim. */
  scaleAttnWeights: boolean;
}

const GELU: Record<string, "tanh" | "none"> = {
  gelu_new: "tanh",
  gelu_pytorch_tanh: "tanh",
  gelu_fast: "tanh",
  gelu: "none",
};

/** Parse a config.json's text; `source` names the file in errors. */
export function parseGpt2Config(text: string, source = "config.json"): Gpt2Config {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new LmConfigError(`${source}: not valid JSON: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new LmConfigError(`${source}: expected a JSON object`);
  }
  const j = raw as Record<string, unknown>;
  const type = j.model_type;
  if (type !== "gpt2") {
    throw new LmConfigError(
      `${source}: unsupported model_type ${JSON.stringify(type ?? null)} (expected "gpt2")`,
    );
  }
  const int = (key: string, fallback: number): number => {
    const v = j[key] ?? fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw new LmConfigError(
        `${source}: ${key} must be a positive integer, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = j[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new LmConfigError(
        `${source}: ${key} must be a non-negative number, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = j[key] ?? fallback;
    if (typeof v !== "boolean") {
      throw new LmConfigError(`${source}: ${key} must be true or false, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const dModel = int("n_embd", 768);
  const nHead = int("n_head", 12);
  if (dModel % nHead !== 0) {
    throw new LmConfigError(`${source}: n_embd ${dModel} is not divisible by n_head ${nHead}`);
  }
  const act = j.activation_function ?? "gelu_new";
  const gelu = typeof act === "string" ? GELU[act] : undefined;
  if (gelu === undefined) {
    throw new LmConfigError(
      `${source}: unsupported activation_function ${JSON.stringify(act)} (expected one of ${
        Object.keys(GELU).join(", ")
      })`,
    );
  }
  return {
    modelType: "gpt2",
    vocabSize: int("vocab_size", 50257),
    nPositions: int("n_positions", 1024),
    dModel,
    nLayer: int("n_layer", 12),
    nHead,
    dMlp: j.n_inner == null ? 4 * dModel : int("n_inner", 4 * dModel),
    gelu,
    layerNormEps: num("layer_norm_epsilon", 1e-5),
    scaleAttnByInverseLayerIdx: bool("scale_attn_by_inverse_layer_idx", false),
    scaleAttnWeights: bool("scale_attn_weights", true),
  };
}

/** Read `<dir>/config.json`. */
export function readGpt2Config(dir: string): Gpt2Config {
  const path = `${dir.replace(/\/+$/, "")}/config.json`;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new LmConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseGpt2Config(text, path);
}

/** Typed readers over one config.json object; each falls back to a default when the key is absent. */
export interface ConfigFields {
  raw: Record<string, unknown>;
  source: string;
  int(key: string, fallback: number): number;
  num(key: string, fallback: number): number;
  bool(key: string, fallback: boolean): boolean;
  str(key: string, fallback: string): string;
}

/** Read `<dir>/config.json` and check that its model_type is `modelType`. */
export function readConfigFields(dir: string, modelType: string): ConfigFields {
  const source = `${dir.replace(/\/+$/, "")}/config.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(source, "utf8"));
  } catch (e) {
    throw new LmConfigError(`${source}: cannot read: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new LmConfigError(`${source}: expected a JSON object`);
  }
  const j = raw as Record<string, unknown>;
  if (j.model_type !== modelType) {
    throw new LmConfigError(
      `${source}: unsupported model_type ${
        JSON.stringify(j.model_type ?? null)
      } (expected "${modelType}")`,
    );
  }
  const bad = (key: string, what: string, v: unknown) =>
    new LmConfigError(`${source}: ${key} must be ${what}, got ${JSON.stringify(v)}`);
  return {
    raw: j,
    source,
    int(key, fallback) {
      const v = j[key] ?? fallback;
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
        throw bad(key, "a positive integer", v);
      }
      return v;
    },
    num(key, fallback) {
      const v = j[key] ?? fallback;
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
        throw bad(key, "a non-negative number", v);
      }
      return v;
    },
    bool(key, fallback) {
      const v = j[key] ?? fallback;
      if (typeof v !== "boolean") throw bad(key, "true or false", v);
      return v;
    },
    str(key, fallback) {
      const v = j[key] ?? fallback;
      if (typeof v !== "string") throw bad(key, "a string", v);
      return v;
    },
  };
}
