/**
 * Dictionaries on disk in the SAELens layout: a folder with cfg.json and sae_weights.safetensors
 * (W_enc [d_in, d_sae], W_dec [d_sae, d_out], b_enc, b_dec, and threshold / b_gate, b_mag, r_mag
 * where the architecture has them). Our own full config rides along under "sparsecoder"; fields
 * we do not know are kept. Folders written by SAELens itself load too.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { full, tensor } from "../../tensor/ops/create.ts";
import { cast } from "../../tensor/ops/elementwise.ts";
import { fmt, shapesEqual } from "../../tensor/shape.ts";
import { ensureDir, readFileBytes, writeJsonAtomic } from "../../data/atomic.ts";
import { loadSafetensors, saveSafetensors } from "../../data/safetensors.ts";
import {
  type ArchName,
  ConfigError,
  resolveConfig,
  type SaeConfig,
  type SaeConfigInput,
} from "../config.ts";
import type { SaeParams } from "../params.ts";
import { checkLoadedCrosscoder, crosscoderJson } from "../crosscoder/io.ts";
import { isSet, parseThreshold, type Threshold } from "../threshold.ts";
import { architecture, isCrosscoder, thresholdInputs, usesThreshold } from "../arch/registry.ts";

export const CFG_FILE = "cfg.json";
export const WEIGHTS_FILE = "sae_weights.safetensors";

export interface SavedSae {
  params: SaeParams;
  cfg: SaeConfig;
  /** BatchTopK/Matryoshka inference threshold, when one was saved (one per input for decoupled crosscoders). */
  threshold?: Threshold;
  /** Evaluation metrics stored beside the weights, if any. */
  metrics?: Record<string, unknown>;
}

/** SAELens architecture names for ours (BatchTopK is saved as JumpReLU with a uniform θ, as SAELens does). */
const FROM_SAELENS: Record<string, ArchName> = {
  standard: "relu",
  gated: "gated",
  jumprelu: "jumprelu",
  topk: "topk",
};

const join = (dir: string, f: string) => (dir.endsWith("/") ? dir + f : `${dir}/${f}`);

/** Write the dictionary atomically (each file via a temporary file and rename). */
export async function saveSae(dir: string, s: SavedSae): Promise<void> {
  const { params: p, cfg } = s;
  await ensureDir(dir);
  const tensors: Record<string, Tensor> = { W_enc: p.W_enc, W_dec: p.W_dec, b_dec: p.b_dec };
  if (p.b_enc) tensors.b_enc = p.b_enc;
  for (const k of ["b_gate", "b_mag", "r_mag", "threshold"] as const) if (p[k]) tensors[k] = p[k]!;
  const arch = architecture(cfg.arch);
  const thresholdArch = usesThreshold(cfg);
  const θ = thresholdArch && isSet(s.threshold) ? s.threshold : undefined;
  // SAELens keeps θ per feature: a uniform [d_sae] tensor, or [L, d_sae] with one row per input.
  if (θ !== undefined) {
    tensors.threshold = typeof θ === "number"
      ? full([cfg.d_sae], θ, p.W_enc.dtype, p.W_enc.backend)
      : tensor(θ.flatMap((v) => new Array<number>(cfg.d_sae).fill(v)), {
        dtype: p.W_enc.dtype,
        shape: [θ.length, cfg.d_sae],
        backend: p.W_enc.backend,
      });
  }
  await saveSafetensors(join(dir, WEIGHTS_FILE), tensors, { format: "pt" });
  if (thresholdArch) tensors.threshold?.dispose();
  const { extra, ...ours } = cfg;
  const json: Record<string, unknown> = {
    ...extra,
    architecture: arch.saelensName,
    d_in: cfg.d_in,
    d_sae: cfg.d_sae,
    ...(cfg.d_out !== cfg.d_in ? { d_out: cfg.d_out } : {}),
    dtype: p.W_enc.dtype === "f64"
      ? "float64"
      : p.W_enc.dtype === "bf16"
      ? "bfloat16"
      : p.W_enc.dtype === "f16"
      ? "float16"
      : "float32",
    apply_b_dec_to_input: cfg.apply_b_dec_to_input,
    // SAELens' TopK reads k from cfg.json; the θ of the BatchTopK family rides in the tensor.
    ...(arch.saelensName === "topk" ? { k: cfg.k } : {}),
    ...(isCrosscoder(cfg) ? crosscoderJson(cfg) : {}),
    normalize_activations: "none",
    sparsecoder: { ...ours, ...(θ !== undefined ? { threshold: θ } : {}) },
    ...(s.metrics ? { metrics: s.metrics } : {}),
  };
  await writeJsonAtomic(join(dir, CFG_FILE), json);
}

function need(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new ConfigError(msg);
}

/** Load a dictionary written by saveSae or by SAELens. */
export async function loadSae(dir: string): Promise<SavedSae> {
  const cfgPath = join(dir, CFG_FILE), wPath = join(dir, WEIGHTS_FILE);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(new TextDecoder().decode(await readFileBytes(cfgPath)));
  } catch (e) {
    throw new ConfigError(`${cfgPath}: ${(e as Error).message}`);
  }
  need(raw && typeof raw === "object" && !Array.isArray(raw), `${cfgPath}: expected a JSON object`);
  const ours = raw.sparsecoder as (SaeConfigInput & { threshold?: unknown }) | undefined;
  const { tensors } = await loadSafetensors(wPath);
  let cfg: SaeConfig;
  // Config errors (a missing or invalid d_sae, k, ...) should say which file they came from.
  const resolveFrom = (c: SaeConfigInput): SaeConfig => {
    try {
      return resolveConfig(c);
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`${cfgPath}: ${e.message}`);
      throw e;
    }
  };
  const known = new Set([
    "architecture",
    "d_in",
    "d_sae",
    "d_out",
    "dtype",
    "apply_b_dec_to_input",
    "k",
    "normalize_activations",
    "sparsecoder",
    "metrics",
    "n_inputs",
    "partition",
  ]);
  const extra = Object.fromEntries(Object.entries(raw).filter(([k]) => !known.has(k)));
  if (ours) {
    const { threshold: _t, ...c } = ours;
    cfg = resolveFrom({ ...c, extra: { ...(c.extra ?? {}), ...extra } });
  } else {
    // SAELens folds these into its own forward pass; encoding without them would be silently wrong.
    const norm = raw.normalize_activations;
    need(
      norm === undefined || norm === null || norm === "none",
      `${cfgPath}: normalize_activations ${JSON.stringify(norm)} is not supported (only "none")`,
    );
    const arch = FROM_SAELENS[String(raw.architecture ?? "standard")];
    need(
      arch,
      `${cfgPath}: architecture ${JSON.stringify(raw.architecture)} is not one of ${
        Object.keys(FROM_SAELENS).join(", ")
      }`,
    );
    const k = raw.k ?? (raw.activation_fn_kwargs as Record<string, unknown> | undefined)?.k;
    cfg = resolveFrom({
      arch,
      d_in: raw.d_in as number,
      d_sae: raw.d_sae as number,
      ...(raw.d_out !== undefined ? { d_out: raw.d_out as number } : {}),
      ...(k !== undefined ? { k: k as number } : {}),
      // Unset: our default for the architecture, which is SAELens' (false for JumpReLU only).
      ...(raw.apply_b_dec_to_input === undefined
        ? {}
        : { apply_b_dec_to_input: Boolean(raw.apply_b_dec_to_input) }),
      extra,
    });
  }
  const a = architecture(cfg.arch);
  const expect = a.paramShapes(cfg);
  for (const [name, shape] of Object.entries(expect)) {
    const t = tensors[name];
    need(
      t,
      `${wPath}: missing tensor "${name}" for a ${cfg.arch} dictionary (has ${
        Object.keys(tensors).join(", ")
      })`,
    );
    need(
      shapesEqual(t.shape, shape),
      `${wPath}: tensor "${name}" has shape ${fmt(t.shape)}, expected ${
        fmt(shape)
      } from ${CFG_FILE}`,
    );
  }
  // Storage dtypes (f16/bf16) compute in f32, as everywhere else.
  const toF32 = (t: Tensor) => (t.dtype === "f16" || t.dtype === "bf16" ? cast(t, "f32") : t);
  const params: SaeParams = {
    W_enc: toF32(tensors.W_enc),
    W_dec: toF32(tensors.W_dec),
    b_dec: toF32(tensors.b_dec),
  };
  for (const k of ["b_enc", "b_gate", "b_mag", "r_mag"] as const) {
    if (tensors[k]) params[k] = toF32(tensors[k]);
  }
  const thresholdParam = a.thresholdUse === "parameter";
  if (thresholdParam) params.threshold = toF32(tensors.threshold);
  if (isCrosscoder(cfg)) {
    await checkLoadedCrosscoder(raw, cfg, params, cfgPath, wPath, (m) => need(false, m) as never);
  }
  let threshold: Threshold | undefined;
  if (ours?.threshold !== undefined) {
    threshold = parseThreshold(ours.threshold, thresholdInputs(cfg), `${cfgPath}: sparsecoder`);
  } else if (usesThreshold(cfg) && tensors.threshold) {
    // A θ tensor without our config field (SAELens' BatchTopK as JumpReLU): uniform per feature.
    const v = await tensors.threshold.data();
    threshold = parseThreshold(
      tensors.threshold.ndim === 2
        ? Array.from({ length: tensors.threshold.shape[0] }, (_, l) => v[l * cfg.d_sae])
        : v[0],
      thresholdInputs(cfg),
      `${wPath}: tensor "threshold"`,
    );
  }
  if (!thresholdParam) tensors.threshold?.dispose();
  return {
    params,
    cfg,
    ...(threshold !== undefined ? { threshold } : {}),
    ...(raw.metrics ? { metrics: raw.metrics as Record<string, unknown> } : {}),
  };
}
