/**
 * Dictionaries written by the Python tools, converted to our parameter record (SAELens names and
 * shapes: W_enc [d_in, d_sae], W_dec [d_sae, d_in]):
 *
 * - dictionary_learning `ae.pt` (+ `config.json` beside it, whose trainer.dict_class names the
 *   class; without it the class is recognised by its parameter names). nn.Linear stores weights
 *   as [out, in], so `encoder.weight` [F, d] and `decoder.weight` [d, F] are transposed.
 *     AutoEncoder            bias, encoder.{weight,bias}, decoder.weight        → relu
 *     GatedAutoEncoder       decoder_bias, r_mag, gate_bias, mag_bias, encoder.weight, decoder.weight → gated
 *     JumpReluAutoEncoder    W_enc, b_enc, W_dec, b_dec, threshold (no b_dec on the input) → jumprelu
 *     AutoEncoderTopK        k, threshold, encoder.{weight,bias}, decoder.weight, b_dec → topk
 *     BatchTopKSAE           same names; threshold (a scalar) is the inference θ       → batchtopk
 *     MatryoshkaBatchTopKSAE k, threshold, group_sizes, W_enc, b_enc, W_dec, b_dec      → matryoshka
 * - sparsify `sae.safetensors` + `cfg.json` (encoder.weight [F, d], encoder.bias, W_dec [F, d],
 *   b_dec; TopK over ReLU(pre) with b_dec subtracted from the input unless it is a transcoder).
 * - SAELens folders (`cfg.json` + `sae_weights.safetensors`): our native layout (sae/io/saelens.ts).
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { cast } from "../../tensor/ops/elementwise.ts";
import { contiguous, transpose } from "../../tensor/ops/shape.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { type ArchName, ConfigError, resolveConfig, type SaeConfigInput } from "../config.ts";
import { loadSae, type SavedSae } from "./saelens.ts";
import type { SaeParams } from "../params.ts";
import { loadSafetensors } from "../../data/safetensors.ts";
import { loadTorch } from "../../data/torch_pt.ts";

export class DictionaryFormatError extends Error {
  override name = "DictionaryFormatError";
}

export type DictionaryFormat = "saelens" | "dictionary_learning" | "sparsify";

/** Which dictionary format a path holds, or null. */
export function detectDictionary(path: string): DictionaryFormat | null {
  const isDir = existsSync(path) && statSync(path).isDirectory();
  if (!isDir) return path.endsWith(".pt") ? "dictionary_learning" : null;
  if (existsSync(join(path, "sae_weights.safetensors")) && existsSync(join(path, "cfg.json"))) {
    return "saelens";
  }
  if (existsSync(join(path, "sae.safetensors")) && existsSync(join(path, "cfg.json"))) {
    return "sparsify";
  }
  if (existsSync(join(path, "ae.pt"))) return "dictionary_learning";
  return null;
}

/** Load a dictionary of any supported format as our SavedSae (f32). */
export async function loadDictionary(
  path: string,
): Promise<SavedSae & { format: DictionaryFormat }> {
  const format = detectDictionary(path);
  if (format === "saelens") return { ...(await loadSae(path)), format };
  if (format === "sparsify") return { ...(await loadSparsify(path)), format };
  if (format === "dictionary_learning") return { ...(await loadDictionaryLearning(path)), format };
  throw new DictionaryFormatError(
    `${path}: not a dictionary we read (a SAELens folder with cfg.json + sae_weights.safetensors, a sparsify folder with cfg.json + sae.safetensors, or a dictionary_learning ae.pt)`,
  );
}

const T = (x: Tensor) => {
  const y = contiguous(transpose(x));
  x.dispose();
  return y;
};
const f32 = (x: Tensor) => {
  if (x.dtype === "f32") return x;
  const y = cast(x, "f32");
  x.dispose();
  return y;
};

/**
 * resolveConfig for converted tensors: a config it refuses (k above d_sae, groups that do not sum
 * to it) comes from the file, so the error names the file; the tensors are freed.
 */
function configFor(where: string, input: SaeConfigInput, p: SaeParams) {
  try {
    return resolveConfig(input);
  } catch (e) {
    for (const x of Object.values(p)) x?.dispose();
    if (e instanceof ConfigError) throw new DictionaryFormatError(`${where}: ${e.message}`);
    throw e;
  }
}

function readJson(path: string): Record<string, unknown> | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new DictionaryFormatError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
}

/** Reading a dictionary_learning state dict: tensors by name (with their expected shapes) and scalars. */
interface DlReader {
  get(name: string, shape?: number[]): Tensor;
  has(name: string): boolean;
  scalar(name: string): Promise<number>;
  /** Free a buffer that was read (k, threshold, group_sizes). */
  drop(name: string): void;
}

interface DlDictionary {
  p: SaeParams;
  extra?: Partial<SaeConfigInput>;
  threshold?: number;
}

/** A TopK-style state dict (encoder.weight [F, d], decoder.weight [d, F], b_dec, k, maybe θ). */
async function readDlTopk(r: DlReader, keepThreshold: boolean): Promise<DlDictionary> {
  const W = r.get("encoder.weight"), [F, d] = W.shape;
  const p: SaeParams = {
    W_enc: T(f32(W)),
    b_enc: f32(r.get("encoder.bias", [F])),
    W_dec: T(f32(r.get("decoder.weight", [d, F]))),
    b_dec: f32(r.get("b_dec", [d])),
  };
  const extra = { k: await r.scalar("k") };
  let threshold: number | undefined;
  if (r.has("threshold")) {
    const th = await r.scalar("threshold");
    if (keepThreshold) threshold = th;
    r.drop("threshold");
  }
  r.drop("k");
  return { p, extra, ...(threshold !== undefined ? { threshold } : {}) };
}

/**
 * dictionary_learning's dictionary classes (trainer.dict_class in config.json): the architecture
 * each one is here, and how its state dict maps onto our parameter record.
 */
const DL_CLASSES: Record<string, { arch: ArchName; read(r: DlReader): Promise<DlDictionary> }> = {
  AutoEncoder: {
    arch: "relu",
    read: (r) => {
      const W = r.get("encoder.weight"), [F, d] = W.shape;
      const p: SaeParams = {
        W_enc: T(f32(W)),
        b_enc: f32(r.get("encoder.bias", [F])),
        W_dec: T(f32(r.get("decoder.weight", [d, F]))),
        b_dec: f32(r.get("bias", [d])),
      };
      return Promise.resolve({ p });
    },
  },
  GatedAutoEncoder: {
    arch: "gated",
    read: (r) => {
      const W = r.get("encoder.weight"), [F, d] = W.shape;
      const p: SaeParams = {
        W_enc: T(f32(W)),
        W_dec: T(f32(r.get("decoder.weight", [d, F]))),
        b_dec: f32(r.get("decoder_bias", [d])),
        b_gate: f32(r.get("gate_bias", [F])),
        b_mag: f32(r.get("mag_bias", [F])),
        r_mag: f32(r.get("r_mag", [F])),
      };
      return Promise.resolve({ p });
    },
  },
  JumpReluAutoEncoder: {
    arch: "jumprelu",
    read: (r) => {
      const W = r.get("W_enc"), [d, F] = W.shape;
      const p: SaeParams = {
        W_enc: f32(W),
        b_enc: f32(r.get("b_enc", [F])),
        W_dec: f32(r.get("W_dec", [F, d])),
        b_dec: f32(r.get("b_dec", [d])),
        threshold: f32(r.get("threshold", [F])),
      };
      return Promise.resolve({ p, extra: { apply_b_dec_to_input: false } });
    },
  },
  AutoEncoderTopK: { arch: "topk", read: (r) => readDlTopk(r, false) },
  BatchTopKSAE: { arch: "batchtopk", read: (r) => readDlTopk(r, true) },
  MatryoshkaBatchTopKSAE: {
    arch: "matryoshka",
    read: async (r) => {
      const W = r.get("W_enc"), [d, F] = W.shape;
      const groups = Array.from(await r.get("group_sizes").data(), Number);
      const p: SaeParams = {
        W_enc: f32(W),
        b_enc: f32(r.get("b_enc", [F])),
        W_dec: f32(r.get("W_dec", [F, d])),
        b_dec: f32(r.get("b_dec", [d])),
      };
      const extra = { k: await r.scalar("k"), matryoshka_groups: groups };
      const threshold = await r.scalar("threshold");
      r.drop("k"), r.drop("threshold"), r.drop("group_sizes");
      return { p, extra, threshold };
    },
  },
};

/** A dictionary_learning `ae.pt` (or the folder holding it with its config.json). */
export async function loadDictionaryLearning(path: string): Promise<SavedSae> {
  const file = path.endsWith(".pt") ? path : join(path, "ae.pt");
  const folder = file.slice(0, file.length - "ae.pt".length) || ".";
  const config = readJson(join(folder, "config.json"));
  const trainer = (config?.trainer ?? {}) as Record<string, unknown>;
  const { tensors: sd, other } = await loadTorch(file);
  const used = new Set<string>();
  const fail = (msg: string): never => {
    for (const x of Object.values(sd)) x.dispose();
    throw new DictionaryFormatError(`${file}: ${msg}`);
  };
  const get = (name: string, shape?: number[]): Tensor => {
    const x = sd[name];
    if (!x) {
      return fail(`missing tensor ${JSON.stringify(name)} (has ${Object.keys(sd).join(", ")})`);
    }
    if (shape && (x.shape.length !== shape.length || x.shape.some((v, i) => v !== shape[i]))) {
      fail(`tensor ${name} has shape [${x.shape}], expected [${shape}]`);
    }
    used.add(name);
    return x;
  };
  const has = (n: string) => n in sd;
  const named = typeof trainer.dict_class === "string" ? trainer.dict_class : undefined;
  if (named !== undefined && !Object.hasOwn(DL_CLASSES, named)) {
    fail(
      `dict_class ${JSON.stringify(named)} in config.json is not one we convert (${
        Object.keys(DL_CLASSES).join(", ")
      })`,
    );
  }
  const dictClass = named ??
    (has("group_sizes")
      ? "MatryoshkaBatchTopKSAE"
      : has("gate_bias")
      ? "GatedAutoEncoder"
      : has("W_enc") && has("threshold") && sd.threshold.ndim === 1
      ? "JumpReluAutoEncoder"
      : has("encoder.weight") && has("k")
      ? "AutoEncoderTopK"
      : has("bias") && has("encoder.weight")
      ? "AutoEncoder"
      : fail(
        `cannot tell the dictionary class from its tensors (${
          Object.keys(sd).join(", ")
        }) and there is no config.json with trainer.dict_class`,
      ));
  const { arch, read } = DL_CLASSES[dictClass];
  const reader: DlReader = {
    get,
    has,
    scalar: async (name) => (await get(name, []).data())[0],
    drop: (name) => sd[name].dispose(),
  };
  const { p, extra = {}, threshold } = await read(reader);
  // Buffers we do not use (normalisation statistics of some forks) must not go unnoticed.
  const left = Object.keys(sd).filter((n) =>
    !used.has(n) && !["k", "threshold", "group_sizes"].includes(n)
  );
  for (const n of left) sd[n].dispose();
  if (left.length) {
    throw new DictionaryFormatError(
      `${file}: tensors ${
        left.join(", ")
      } have no place in a ${arch} dictionary; refusing to drop them silently`,
    );
  }
  void other;
  const [d_in, d_sae] = p.W_enc.shape;
  const cfg = configFor(file, { arch, d_in, d_sae, ...extra }, p);
  return { params: p, cfg, ...(threshold !== undefined && threshold >= 0 ? { threshold } : {}) };
}

/** A sparsify folder: sae.safetensors + cfg.json. */
export async function loadSparsify(dir: string): Promise<SavedSae> {
  const cfgPath = join(dir, "cfg.json");
  const c = readJson(cfgPath) ?? {};
  const fail = (msg: string): never => {
    throw new DictionaryFormatError(`${dir}: ${msg}`);
  };
  if (c.skip_connection) fail("skip_connection (W_skip) has no counterpart in our layout");
  if (c.activation !== undefined && c.activation !== "topk") {
    fail(`activation ${JSON.stringify(c.activation)} is not supported (only topk)`);
  }
  const k = c.k;
  if (typeof k !== "number" || !Number.isSafeInteger(k) || k < 1) {
    fail(`cfg.json: k must be a positive integer, got ${JSON.stringify(k)}`);
  }
  const { tensors: st } = await loadSafetensors(join(dir, "sae.safetensors"));
  const need = ["encoder.weight", "encoder.bias", "W_dec", "b_dec"];
  const missing = need.filter((n) => !st[n]);
  const extra = Object.keys(st).filter((n) => !need.includes(n));
  if (missing.length || extra.length) {
    for (const x of Object.values(st)) x.dispose();
    fail(
      `sae.safetensors must hold exactly ${need.join(", ")}${
        missing.length ? `; missing ${missing.join(", ")}` : ""
      }${extra.length ? `; unexpected ${extra.join(", ")}` : ""}`,
    );
  }
  const [F, d] = st["encoder.weight"].shape;
  const transcode = c.transcode === true;
  const shapeOk = st["encoder.bias"].shape.join() === `${F}` && st.W_dec.shape[0] === F &&
    st.b_dec.shape.join() === `${st.W_dec.shape[1]}` && (transcode || st.W_dec.shape[1] === d);
  if (!shapeOk) {
    for (const x of Object.values(st)) x.dispose();
    fail(
      `inconsistent shapes: encoder.weight [${F}, ${d}], encoder.bias [${
        st["encoder.bias"].shape
      }], W_dec [${st.W_dec.shape}], b_dec [${st.b_dec.shape}]`,
    );
  }
  const p: SaeParams = {
    W_enc: T(f32(st["encoder.weight"])),
    b_enc: f32(st["encoder.bias"]),
    W_dec: f32(st.W_dec),
    b_dec: f32(st.b_dec),
  };
  const cfg = configFor(
    cfgPath,
    transcode
      ? {
        arch: "transcoder",
        d_in: d,
        d_sae: F,
        d_out: st.W_dec.shape[1],
        k: k as number,
        apply_b_dec_to_input: false,
      }
      : { arch: "topk", d_in: d, d_sae: F, k: k as number },
    p,
  );
  return { params: p, cfg };
}
