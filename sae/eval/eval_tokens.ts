/**
 * The token rows an evaluation with a language model reads (`sae eval --model`, `sae diff`): token
 * ids [N, T] from an integer .npy, or text through the model's tokenizer.json, cut to `context` and
 * checked against the model's vocabulary and positions; the special ids its config names; and the
 * flag readers those commands share. `fail` throws the command's usage error.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { contiguous, sliceAxis } from "../../tensor/ops/shape.ts";
import { loadNpy } from "../../data/npy.ts";
import { type LanguageModel, loadModel, modelInfo, runWithCache } from "../../data/lm/model.ts";
import { resolveModel } from "../../data/lm/hub.ts";
import { processWeights } from "../../data/lm/process_weights.ts";
import {
  openTextRows,
  TEXT_FLAGS,
  type TextRowsOptions,
  textRowsOptions,
} from "../../data/text/open_rows.ts";
import { assertSameTokenizer } from "../../data/text/tokenizer_match.ts";
import { dispose, tidy } from "../../tensor/scope.ts";
import type { Batch } from "../arch/architecture.ts";
import { tokenBatches } from "./downstream.ts";

export type Flags = Record<string, string | true>;
export type Fail = (msg: string) => never;

export function value(flags: Flags, name: string, fail: Fail): string | undefined {
  const v = flags[name];
  if (v === true) fail(`--${name} needs a value`);
  return v as string | undefined;
}

export function integer(flags: Flags, name: string, min: number, fail: Fail): number | undefined {
  const v = value(flags, name, fail);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    fail(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  return n;
}

export function idList(v: string, name: string, fail: Fail): number[] {
  if (v === "") return [];
  return v.split(",").map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) fail(`--${name}: ${JSON.stringify(s)} is not a token id`);
    return n;
  });
}

/** bos/eos/pad ids from the model's config.json (numbers or lists of numbers; missing ones skipped). */
export function configSpecialIds(modelDir: string): { special: number[]; pad: number | null } {
  let raw: Record<string, unknown> = {};
  try {
    raw = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8"));
  } catch {
    // loadModel reports an unreadable config first.
  }
  const ids = (v: unknown): number[] =>
    typeof v === "number" ? [v] : Array.isArray(v) ? v.filter((x) => typeof x === "number") : [];
  const special = [
    ...new Set([...ids(raw.bos_token_id), ...ids(raw.eos_token_id), ...ids(raw.pad_token_id)]),
  ];
  return { special, pad: typeof raw.pad_token_id === "number" ? raw.pad_token_id : null };
}

/** Token ids [N, T] from an integer .npy, or from text through the model's tokenizer.json. */
export async function readTokens(
  path: string,
  model: LanguageModel,
  modelDir: string,
  opts: { context?: number; tokens?: number; text: TextRowsOptions | null },
  fail: Fail,
): Promise<{ tokens: Tensor; context: number; special?: ReadonlySet<number> }> {
  if (!path.endsWith(".npy")) {
    const context = opts.context ?? 128;
    const { rows, special } = await textTokenRows(
      path,
      modelDir,
      { ...opts.text, context },
      opts.tokens,
    ).catch((e) => fail(`--data ${path}: ${(e as Error).message}`));
    if (rows.shape[0] === 0) fail(`--data ${path}: no full row of ${context} tokens`);
    return { ...checkTokens(rows, path, model, { context }, fail), special };
  }
  const raw = await loadNpy(path).catch((e) => fail(`--data ${path}: ${(e as Error).message}`));
  // Integer .npy files (any width whose values fit) load as i32.
  if (raw.ndim !== 2 || raw.dtype !== "i32") {
    fail(`--data ${path}: expected integer token ids [N, T], got ${raw.dtype} [${raw.shape}]`);
  }
  return checkTokens(raw, path, model, opts, fail);
}

/** The first rows of a text corpus, enough for `tokens` ids (default 32768), as i32 [N, T]. */
async function textTokenRows(
  path: string,
  modelDir: string,
  text: TextRowsOptions,
  tokens = 32768,
): Promise<{ rows: Tensor; special: ReadonlySet<number> }> {
  const { rows, special } = await openTextRows(path, modelDir, text);
  const T = text.context, want = Math.ceil(tokens / T), ids: Int32Array[] = [];
  for await (const r of rows.rows()) {
    // Padded rows (truncate mode) keep their padding: its special ids are left out of the loss.
    ids.push(r.ids);
    if (ids.length === want) break;
  }
  const flat = new Int32Array(ids.length * T);
  ids.forEach((r, i) => flat.set(r, i * T));
  return { rows: tensor(flat, { shape: [ids.length, T], dtype: "i32" }), special };
}

/** Rows checked (ids < vocabulary, context within the model's positions) and cut to `context`. */
function checkTokens(
  raw: Tensor,
  path: string,
  model: LanguageModel,
  opts: { context?: number; tokens?: number },
  fail: Fail,
): { tokens: Tensor; context: number } {
  const [N, T] = raw.shape;
  const info = modelInfo(model);
  const context = opts.context ?? Math.min(T, 128);
  if (context > T) fail(`--context ${context} exceeds the ${T} tokens per row of ${path}`);
  if (context < 2) fail(`--context must be at least 2 (next-token loss), got ${context}`);
  if (context > info.maxPositions) {
    fail(`--context ${context} exceeds the model's ${info.maxPositions} positions`);
  }
  const rows = opts.tokens === undefined ? N : Math.min(N, Math.ceil(opts.tokens / context));
  const ids = raw.dataSync();
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < context; t++) {
      const id = Number(ids[r * T + t]);
      if (!(id >= 0 && id < info.vocabSize)) {
        fail(
          `--data ${path}: token id ${id} at row ${r}, position ${t} is outside the model's vocabulary [0, ${info.vocabSize})`,
        );
      }
    }
  }
  return { tokens: contiguous(sliceAxis(sliceAxis(raw, 0, 0, rows), 1, 0, context)), context };
}

/** `--model A[,B,…]`: each resolved, loaded, and (--process-weights) processed; several must share a tokenizer. */
export async function evalModels(
  flags: Flags,
  fail: Fail,
): Promise<{ names: string[]; dirs: string[]; models: LanguageModel[] }> {
  const given = value(flags, "model", fail) ?? fail("--model needs a value");
  const names = given.split(",").map((m) => m.trim()).filter((m) => m);
  if (!names.length) fail(`--model ${JSON.stringify(given)} names no model`);
  // A repo id resolves to its cached snapshot folder, where the config's special ids are read.
  const dirs = await Promise.all(
    names.map((m) => resolveModel(m).catch((e) => fail(`--model ${m}: ${(e as Error).message}`))),
  );
  if (dirs.length > 1) {
    try {
      assertSameTokenizer(dirs);
    } catch (e) {
      fail((e as Error).message);
    }
  }
  const models = await Promise.all(dirs.map(async (d, i) => {
    const loaded = await loadModel(d).catch((e) =>
      fail(`--model ${names[i]}: ${(e as Error).message}`)
    );
    return flags["process-weights"] ? processWeights(loaded) : loaded;
  }));
  return { names, dirs, models };
}

/** The token rows, special ids and pad id an evaluation reads, from --data and the text flags. */
export interface EvalTokens {
  tokens: Tensor;
  context: number;
  /** Ids whose positions are left out. */
  special: number[];
  padId: number | null;
  /** Rows per forward pass. */
  batch: number;
}

/** EvalTokens from the flags, for `model` (in the resolved folder `dir`). */
export async function evalTokens(
  flags: Flags,
  model: LanguageModel,
  dir: string,
  fail: Fail,
): Promise<EvalTokens> {
  const dataPath = value(flags, "data", fail) ??
    fail("sae eval: --model needs --data (token ids [N, T] as .npy, or text)");
  const isText = !dataPath.endsWith(".npy");
  for (const f of TEXT_FLAGS) {
    if (!isText && f !== "context" && flags[f] !== undefined) {
      fail(`sae eval: --${f} applies to text --data, not to token ids (.npy)`);
    }
  }
  const { tokens, context, special: textSpecial } = await readTokens(dataPath, model, dir, {
    context: integer(flags, "context", 2, fail),
    tokens: integer(flags, "tokens", 1, fail),
    text: isText ? textRowsOptions(flags, fail) : null,
  }, fail);
  const fromConfig = configSpecialIds(dir);
  const specialFlag = value(flags, "special-ids", fail);
  const special = specialFlag !== undefined
    ? idList(specialFlag, "special-ids", fail)
    : [...new Set([...fromConfig.special, ...(textSpecial ?? [])])].sort((a, b) => a - b);
  return {
    tokens,
    context,
    special,
    padId: integer(flags, "pad-id", 0, fail) ?? fromConfig.pad,
    batch: integer(flags, "batch", 1, fail) ?? 8,
  };
}

/** The width of each hook as a dictionary reads it (heads flattened), from a one-row pass. */
export function hookWidths(
  model: LanguageModel,
  tokens: Tensor,
  hooks: string[],
): Record<string, number> {
  const probe = sliceAxis(sliceAxis(tokens, 0, 0, 1), 1, 0, 2);
  const { cache } = runWithCache(model, probe, hooks, { stopEarly: true });
  return Object.fromEntries(
    hooks.map((h) => {
      const s = cache[h].shape;
      return [h, s.length === 4 ? s[2] * s[3] : s[s.length - 1]];
    }),
  );
}

/**
 * Batches of `batch` token rows, each made by `gather` (inside a scope) from the rows' ids and the
 * flat indices (into [B·T]) of the positions whose token is not special; a batch with none is
 * skipped, and each is freed once the consumer asks for the next.
 */
export function* keptPositionBatches(
  tokens: Tensor,
  batch: number,
  special: readonly number[],
  gather: (ids: Tensor, kept: Tensor) => Batch,
): Generator<Batch> {
  for (const tb of tokenBatches(tokens, batch)) {
    const ids = tb.dataSync();
    const keep: number[] = [];
    for (let i = 0; i < ids.length; i++) if (!special.includes(Number(ids[i]))) keep.push(i);
    if (keep.length === 0) continue;
    const b: Batch = tidy(() => gather(tb, tensor(keep, { dtype: "i32" })));
    yield b;
    dispose(b);
  }
}
