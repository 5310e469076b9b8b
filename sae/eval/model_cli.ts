/**
 * `sae eval DIR --model M --data ids.npy`: a saved dictionary judged on a language model's
 * activations and by what the model loses when it is spliced in. Token rows [N, T] (an integer
 * .npy) are cut to their first `context` tokens; the first ceil(tokens / context) rows are read, in
 * forward batches of `batch` rows. The activation metrics (FVU, L0, …, as `sae eval` prints them)
 * are taken over the hook's activations at positions whose input token is not special, the
 * downstream figures as downstream.ts defines them. cli.ts calls `modelEval`; `fail` throws its
 * usage error.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { contiguous, reshape, sliceAxis, stack, take } from "../../tensor/ops/shape.ts";
import { loadNpy } from "../../data/npy.ts";
import { dispose, tidy } from "../../tensor/scope.ts";
import {
  hookNames,
  type LanguageModel,
  loadModel,
  modelInfo,
  runWithCache,
} from "../../data/lm/model.ts";
import { resolveModel } from "../../data/lm/hub.ts";
import { processWeights } from "../../data/lm/process_weights.ts";
import type { Batch } from "../arch/architecture.ts";
import { architecture, isCrosscoder } from "../arch/registry.ts";
import type { SavedSae } from "../io/saelens.ts";
import { isSet, single } from "../threshold.ts";
import { type EvalMetrics, evaluate, formatMetricsTable } from "./metrics.ts";
import { crosscoderReport } from "../crosscoder/cli.ts";
import {
  defaultTranscoderInput,
  dictionarySplice,
  multiHookSplice,
  type Splice,
  transcoderSplice,
} from "./splice.ts";
import { downstreamLoss, type DownstreamMetrics, tokenBatches } from "./downstream.ts";
import {
  openTextRows,
  TEXT_FLAGS,
  type TextRowsOptions,
  textRowsOptions,
} from "../../data/text/open_rows.ts";

export const MODEL_EVAL_FLAGS = [
  ...TEXT_FLAGS,
  "model",
  "hook",
  "hooks",
  "input-hook",
  "tokens",
  "special-ids",
  "pad-id",
  "process-weights",
];

export const MODEL_EVAL_HELP = `
with a language model (--model): the dictionary spliced in, CE and KL recovered added
  --model M          a model folder (config.json + safetensors) or a Hugging Face repo id
  --process-weights  TransformerLens's default weight processing (for dictionaries trained on its
                     activations, e.g. SAELens's GPT-2 small residual SAEs)
  --data PATH        token ids (an integer .npy [N, T]) or text, tokenised by the model's
                     tokenizer.json and cut into rows as below (the first --tokens of it, default 32768)
  --hook NAME        the hook point (default: cfg.json's hook_name); a transcoder's output hook
  --input-hook NAME  a transcoder's input (default: cfg.json's hook_name, else blocks.L.ln2.hook_normalized)
  --hooks A,B,...    a crosscoder's or MLSAE's hook points, in its input order (default: cfg.json's hook_names)
  --context N        tokens per row: each row's first N (default min(T, 128); text: 128)
  --tokens N         evaluate the first ceil(N / context) rows (default all)
  --batch N          rows per forward pass (default 8)
  --special-ids A,B  ids whose positions are left out (default: the config's bos/eos/pad ids, and
                     for text the tokenizer's special tokens)
  --pad-id N         dictionary_learning's ignored target id (default: the config's pad_token_id)
  --packing, --prepend-bos, --field, --separator, --format   how text is read (sae harvest --help)`;

type Flags = Record<string, string | true>;
type Fail = (msg: string) => never;

function value(flags: Flags, name: string, fail: Fail): string | undefined {
  const v = flags[name];
  if (v === true) fail(`--${name} needs a value`);
  return v as string | undefined;
}

function integer(flags: Flags, name: string, min: number, fail: Fail): number | undefined {
  const v = value(flags, name, fail);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    fail(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  return n;
}

function idList(v: string, name: string, fail: Fail): number[] {
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
async function readTokens(
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

/** Which hooks the dictionary reads and how it is spliced, from the flags and cfg.json. */
function planSplice(
  model: LanguageModel,
  saved: SavedSae,
  flags: Flags,
  fail: Fail,
): { splice: Splice; reads: string[]; target?: string } {
  const { cfg } = saved;
  const extra = cfg.extra ?? {};
  const known = new Set(hookNames(model));
  const check = (h: string, flag: string) => {
    if (!known.has(h)) {
      fail(
        `${flag} ${h}: ${model.family} has no hook point named ${JSON.stringify(h)} (e.g. ${
          [...known].filter((n) => n.startsWith("blocks.0.")).join(", ")
        })`,
      );
    }
    return h;
  };
  const a = architecture(cfg.arch);
  const several = flags.hooks !== undefined || Array.isArray(extra.hook_names);
  if (isCrosscoder(cfg) || (a.input === "layers" && several)) {
    const given = value(flags, "hooks", fail);
    const hooks = given
      ? given.split(",")
      : Array.isArray(extra.hook_names)
      ? (extra.hook_names as string[])
      : fail(`sae eval: a ${cfg.arch} reads several hook points: pass --hooks A,B,...`);
    hooks.forEach((h) => check(h, "--hooks"));
    return { splice: multiHookSplice(model, saved, hooks), reads: hooks };
  }
  const hook = value(flags, "hook", fail) ??
    (a.needsTargets ? extra.hook_name_out : extra.hook_name) as string | undefined ??
    fail("sae eval: --model needs --hook NAME (cfg.json names no hook_name)");
  check(hook, "--hook");
  if (a.needsTargets) {
    const input = value(flags, "input-hook", fail) ??
      (typeof extra.hook_name === "string" && extra.hook_name !== hook
        ? extra.hook_name
        : defaultTranscoderInput(hook)) ??
      fail(`sae eval: a transcoder at ${hook} needs --input-hook NAME`);
    check(input, "--input-hook");
    return {
      splice: transcoderSplice(model, saved, { input, output: hook }),
      reads: [input],
      target: hook,
    };
  }
  return { splice: dictionarySplice(model, saved, hook), reads: [hook] };
}

/** The width of each hook as a dictionary reads it (heads flattened), from a one-row pass. */
function hookWidths(model: LanguageModel, tokens: Tensor, hooks: string[]): Record<string, number> {
  const probe = sliceAxis(sliceAxis(tokens, 0, 0, 1), 1, 0, 2);
  const { cache } = runWithCache(model, probe, hooks, { stopEarly: true });
  return Object.fromEntries(
    hooks.map((h) => {
      const s = cache[h].shape;
      return [h, s.length === 4 ? s[2] * s[3] : s[s.length - 1]];
    }),
  );
}

/** Activations at kept positions: rows [n, d] per hook (for the sparsity/variance metrics). */
function* activationBatches(
  model: LanguageModel,
  tokens: Tensor,
  batch: number,
  reads: string[],
  target: string | undefined,
  special: readonly number[],
  layout: "rows" | "layers" | "inputs",
): Generator<Batch> {
  const names = target ? [...reads, target] : reads;
  for (const tb of tokenBatches(tokens, batch)) {
    const ids = tb.dataSync();
    const keep: number[] = [];
    for (let i = 0; i < ids.length; i++) if (!special.includes(Number(ids[i]))) keep.push(i);
    if (keep.length === 0) continue;
    // The cache and the gathered rows are freed once the consumer asks for the next batch.
    const b: Batch = tidy(() => {
      const { cache } = runWithCache(model, tb, names, { stopEarly: true });
      const idx = tensor(keep, { dtype: "i32" });
      const rows = (h: string) => {
        const a = cache[h];
        const d = a.ndim === 4 ? a.shape[2] * a.shape[3] : a.shape[a.ndim - 1];
        return take(reshape(a, [-1, d]), idx, 0);
      };
      if (target) return { x: rows(reads[0]), y: rows(target) };
      return layout === "rows" ? { x: rows(reads[0]) } : { x: stack(reads.map(rows), 1) };
    });
    yield b;
    dispose(b);
  }
}

/** What modelEvaluation measured: the activation metrics, the downstream ones, and on what. */
export interface ModelEvaluation {
  /** The activation metrics as eval.json holds them (a crosscoder's report for crosscoders). */
  json: Record<string, unknown>;
  downstream: DownstreamMetrics;
  about: Record<string, unknown>;
  /** Both as the printed table. */
  text: string;
}

/** Run the evaluation and print it (a table, or one JSON object with --json). */
export async function modelEval(saved: SavedSae, flags: Flags, fail: Fail): Promise<void> {
  const r = await modelEvaluation(saved, flags, fail);
  console.log(flags.json ? JSON.stringify({ ...r.json, ...r.downstream, ...r.about }) : r.text);
}

/** The dictionary on the model's activations and spliced into it, from `sae eval`'s flags. */
export async function modelEvaluation(
  saved: SavedSae,
  flags: Flags,
  fail: Fail,
): Promise<ModelEvaluation> {
  const modelDir = value(flags, "model", fail)!;
  const dataPath = value(flags, "data", fail) ??
    fail("sae eval: --model needs --data (token ids [N, T] as .npy, or text)");
  // A repo id resolves to its cached snapshot folder, where the config's special ids are read.
  const dir = await resolveModel(modelDir).catch((e) =>
    fail(`--model ${modelDir}: ${(e as Error).message}`)
  );
  const loaded = await loadModel(dir).catch((e) =>
    fail(`--model ${modelDir}: ${(e as Error).message}`)
  );
  const model = flags["process-weights"] ? processWeights(loaded) : loaded;
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
  const batch = integer(flags, "batch", 1, fail) ?? 8;
  const fromConfig = configSpecialIds(dir);
  const specialFlag = value(flags, "special-ids", fail);
  const special = specialFlag !== undefined
    ? idList(specialFlag, "special-ids", fail)
    : [...new Set([...fromConfig.special, ...(textSpecial ?? [])])].sort((a, b) => a - b);
  const padId = integer(flags, "pad-id", 0, fail) ?? fromConfig.pad;
  const { cfg, params, threshold } = saved;
  const { splice, reads, target } = planSplice(model, saved, flags, fail);
  const widths = hookWidths(model, tokens, target ? [...reads, target] : reads);
  for (const h of reads) {
    if (widths[h] !== cfg.d_in) {
      fail(`sae eval: the dictionary's d_in is ${cfg.d_in}, but ${h} is ${widths[h]} wide`);
    }
  }
  if (target && widths[target] !== cfg.d_out) {
    fail(
      `sae eval: the transcoder's d_out is ${cfg.d_out}, but ${target} is ${widths[target]} wide`,
    );
  }
  const layout = architecture(cfg.arch).input;
  const acts = () => activationBatches(model, tokens, batch, reads, target, special, layout);
  let json: Record<string, unknown>;
  let text: string;
  if (isCrosscoder(cfg)) {
    const r = await crosscoderReport(params, cfg, acts(), threshold);
    json = r.json;
    text = r.text;
  } else {
    const m: EvalMetrics = await evaluate(
      params,
      cfg,
      acts(),
      isSet(threshold) ? { threshold: single(threshold, "sae eval") } : {},
    );
    json = { ...m, feature_density: undefined };
    text = formatMetricsTable(m);
  }
  const d: DownstreamMetrics = await downstreamLoss(model, tokenBatches(tokens, batch), splice, {
    specialIds: special,
    padId,
  });
  const about = {
    model: modelDir,
    hooks: splice.replaces,
    ...(target ? { input_hook: reads[0] } : {}),
    context,
    special_ids: special,
    pad_id: padId,
  };
  return { json, downstream: d, about, text: `${text}\n${formatDownstream(d, about.hooks)}` };
}

/** The downstream figures as the table's continuation. */
export function formatDownstream(d: DownstreamMetrics, hooks: readonly string[]): string {
  const f = (v: number) => (Number.isInteger(v) ? String(v) : v.toPrecision(6));
  const rows: [string, number][] = [
    ["ce_clean", d.ce_clean],
    ["ce_spliced", d.ce_spliced],
    ["ce_zero", d.ce_zero],
    ["ce_loss_score", d.ce_loss_score],
    ["kl_spliced", d.kl_spliced],
    ["kl_zero", d.kl_zero],
    ["kl_div_score", d.kl_div_score],
    ["frac_recovered (dictionary_learning)", d.frac_recovered],
    ["ce_positions", d.ce_positions],
    ["kl_positions", d.kl_positions],
  ];
  return [`spliced at ${hooks.join(", ")}:`, ...rows.map(([k, v]) => `  ${k.padEnd(38)} ${f(v)}`)]
    .join("\n");
}
