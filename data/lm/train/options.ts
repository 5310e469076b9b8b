/**
 * The options of `sae lm train`, from command-line flags and/or a JSON file (`--config`, the same
 * names without the dashes: {"layers": 1, "d-model": 256, …}); a flag given on the command line
 * wins over the file. Every bad value is an error naming the option (and the file).
 */
import { readFileSync } from "node:fs";

export class LmTrainUsageError extends Error {
  override name = "LmTrainUsageError";
}

export interface LmTrainOptions {
  data: string;
  heldout: string;
  tokenizer: string;
  out: string;
  layers: number;
  dModel: number;
  heads: number;
  context: number;
  batch: number;
  /** Micro-batches per step (gradient accumulation); must divide batch. */
  micro: number;
  steps: number;
  lr: number;
  minLr: number;
  warmup: number;
  weightDecay: number;
  clip: number;
  seed: number;
  evalEvery: number;
  /** Held-out tokens scored per evaluation (at most). */
  evalTokens: number;
  checkpointEvery: number;
  logEvery: number;
  dtype: "bf16" | "f32";
  initFrom: string | null;
  domain: string | null;
  resume: boolean;
}

type Kind = "string" | "int" | "int0" | "number" | "bool";
/** Flag name → [field, kind, default (undefined: required)]. */
const SPEC: Record<string, [keyof LmTrainOptions, Kind, unknown]> = {
  data: ["data", "string", undefined],
  heldout: ["heldout", "string", undefined],
  tokenizer: ["tokenizer", "string", undefined],
  out: ["out", "string", undefined],
  layers: ["layers", "int", 1],
  "d-model": ["dModel", "int", 256],
  heads: ["heads", "int", 4],
  context: ["context", "int", 128],
  batch: ["batch", "int", 32],
  micro: ["micro", "int", 1],
  steps: ["steps", "int", 2000],
  lr: ["lr", "number", 1e-3],
  "min-lr": ["minLr", "number", 1e-4],
  warmup: ["warmup", "int0", 200],
  "weight-decay": ["weightDecay", "number", 0.1],
  clip: ["clip", "number", 1],
  seed: ["seed", "int0", 0],
  "eval-every": ["evalEvery", "int", 200],
  "eval-tokens": ["evalTokens", "int", 65536],
  "checkpoint-every": ["checkpointEvery", "int", 200],
  "log-every": ["logEvery", "int", 10],
  dtype: ["dtype", "string", "bf16"],
  "init-from": ["initFrom", "string", null],
  domain: ["domain", "string", null],
  resume: ["resume", "bool", false],
};

/** The option names, for the help text and the checks. */
export const LM_TRAIN_FLAGS = [...Object.keys(SPEC), "config"];

function convert(name: string, kind: string, v: unknown, where: string): unknown {
  const bad = (what: string) =>
    new LmTrainUsageError(
      `sae lm train: ${where}--${name} must be ${what}, got ${JSON.stringify(v)}`,
    );
  if (kind === "bool") {
    if (v === true || v === "true" || v === false || v === "false") {
      return v === true || v === "true";
    }
    throw bad("true or false");
  }
  if (kind === "string") {
    if (typeof v !== "string" || v === "") throw bad("a non-empty string");
    return v;
  }
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  if (kind === "int" && !(Number.isSafeInteger(n) && n > 0)) throw bad("a positive integer");
  if (kind === "int0" && !(Number.isSafeInteger(n) && n >= 0)) throw bad("a non-negative integer");
  if (kind === "number" && !(Number.isFinite(n) && n >= 0)) throw bad("a non-negative number");
  return n;
}

/** Resolve flags (and the JSON file `--config` names) into options, checked. */
export function parseLmTrainOptions(flags: Record<string, string | true>): LmTrainOptions {
  for (const f of Object.keys(flags)) {
    if (!LM_TRAIN_FLAGS.includes(f)) {
      throw new LmTrainUsageError(`sae lm train: unknown option --${f} (see sae lm --help)`);
    }
  }
  let file: Record<string, unknown> = {};
  const cfgPath = flags.config;
  if (cfgPath === true) throw new LmTrainUsageError("sae lm train: --config needs a file");
  if (cfgPath !== undefined) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(cfgPath, "utf8"));
    } catch (e) {
      throw new LmTrainUsageError(`sae lm train: ${cfgPath}: ${(e as Error).message}`);
    }
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
      throw new LmTrainUsageError(`sae lm train: ${cfgPath}: expected a JSON object`);
    }
    file = raw as Record<string, unknown>;
    for (const k of Object.keys(file)) {
      if (!(k in SPEC)) {
        throw new LmTrainUsageError(
          `sae lm train: ${cfgPath}: unknown option ${
            JSON.stringify(k)
          } (the names are the flags' without --)`,
        );
      }
    }
  }
  const out: Record<string, unknown> = {};
  for (const [name, [field, kind, dflt]] of Object.entries(SPEC)) {
    const fromFlag = flags[name] !== undefined;
    const v = fromFlag ? flags[name] : file[name];
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new LmTrainUsageError(`sae lm train: --${name} is required`);
      out[field] = dflt;
      continue;
    }
    out[field] = convert(name, kind, v, fromFlag ? "" : `${cfgPath}: `);
  }
  const o = out as unknown as LmTrainOptions;
  if (o.dtype !== "bf16" && o.dtype !== "f32") {
    throw new LmTrainUsageError(`sae lm train: --dtype must be bf16 or f32, got ${o.dtype}`);
  }
  if (o.dModel % o.heads !== 0) {
    throw new LmTrainUsageError(
      `sae lm train: --d-model ${o.dModel} is not divisible by --heads ${o.heads}`,
    );
  }
  if (o.batch % o.micro !== 0) {
    throw new LmTrainUsageError(
      `sae lm train: --micro ${o.micro} does not divide --batch ${o.batch}`,
    );
  }
  if (o.warmup >= o.steps) {
    throw new LmTrainUsageError(
      `sae lm train: --warmup ${o.warmup} must be less than --steps ${o.steps}`,
    );
  }
  if (o.minLr > o.lr) {
    throw new LmTrainUsageError(`sae lm train: --min-lr ${o.minLr} exceeds --lr ${o.lr}`);
  }
  return o;
}
