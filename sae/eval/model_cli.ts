/**
 * `sae eval DIR --model M --data ids.npy`: a saved dictionary judged on a language model's
 * activations and by what the model loses when it is spliced in. Token rows [N, T] (an integer
 * .npy) are cut to their first `context` tokens; the first ceil(tokens / context) rows are read, in
 * forward batches of `batch` rows. The activation metrics (FVU, L0, …, as `sae eval` prints them)
 * are taken over the hook's activations at positions whose input token is not special, the
 * downstream figures as downstream.ts defines them. cli.ts calls `modelEval`; `fail` throws its
 * usage error.
 */
import { typedArraysAsLists } from "../../data/atomic.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { reshape, stack, take } from "../../tensor/ops/shape.ts";
import { hookNames, type LanguageModel, runWithCache } from "../../data/lm/model.ts";
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
import {
  downstreamLoss,
  type DownstreamMetrics,
  formatDownstream,
  tokenBatches,
} from "./downstream.ts";
import { TEXT_FLAGS } from "../../data/text/open_rows.ts";
import {
  evalModels,
  evalTokens,
  type Fail,
  type Flags,
  hookWidths,
  keptPositionBatches,
  value,
} from "./eval_tokens.ts";
import { crossModelEvaluation, modelNamesOf } from "./cross_model.ts";

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
  --model M          a model folder (config.json + safetensors) or a Hugging Face repo id;
                     A,B for a crosscoder across models (default hook: cfg.json's hook_name): each
                     model in turn gets its own slice of the reconstruction, CE/KL per model
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
  yield* keptPositionBatches(tokens, batch, special, (tb, idx) => {
    const { cache } = runWithCache(model, tb, names, { stopEarly: true });
    const rows = (h: string) => {
      const a = cache[h];
      const d = a.ndim === 4 ? a.shape[2] * a.shape[3] : a.shape[a.ndim - 1];
      return take(reshape(a, [-1, d]), idx, 0);
    };
    if (target) return { x: rows(reads[0]), y: rows(target) };
    return layout === "rows" ? { x: rows(reads[0]) } : { x: stack(reads.map(rows), 1) };
  });
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

/** `--model A,B`: a crosscoder across several models (cross_model.ts). */
const severalModels = (flags: Flags, fail: Fail): boolean =>
  (value(flags, "model", fail) ?? "").includes(",");

/** Run the evaluation and print it (a table, or one JSON object with --json). */
export async function modelEval(saved: SavedSae, flags: Flags, fail: Fail): Promise<void> {
  if (severalModels(flags, fail)) {
    const r = await crossModelEvaluation(saved, flags, fail);
    console.log(
      flags.json
        ? JSON.stringify({ ...r.json, per_model: r.perModel, ...r.about }, typedArraysAsLists)
        : r.text,
    );
    return;
  }
  const r = await modelEvaluation(saved, flags, fail);
  console.log(flags.json ? JSON.stringify({ ...r.json, ...r.downstream, ...r.about }) : r.text);
}

/** The dictionary on the model's activations and spliced into it, from `sae eval`'s flags. */
export async function modelEvaluation(
  saved: SavedSae,
  flags: Flags,
  fail: Fail,
): Promise<ModelEvaluation> {
  const { names, dirs, models } = await evalModels(flags, fail);
  const trained = modelNamesOf(saved.cfg);
  if (trained.length > 1) {
    fail(
      `sae eval: this ${saved.cfg.arch} was trained across ${trained.length} models (${
        trained.join(", ")
      }): pass them all, --model ${trained.join(",")}`,
    );
  }
  const [model, dir, modelDir] = [models[0], dirs[0], names[0]];
  const { tokens, context, special, padId, batch } = await evalTokens(flags, model, dir, fail);
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

/**
 * The dictionary spliced into the model, or into each of several models in turn (a crosscoder
 * across models): the fields eval.json adds, and the printed lines. For a live run's end.
 */
export async function splicedReport(
  saved: SavedSae,
  flags: Flags,
  fail: Fail,
): Promise<{ json: Record<string, unknown>; text: string }> {
  if (severalModels(flags, fail)) {
    const r = await crossModelEvaluation(saved, flags, fail);
    return { json: { per_model: r.perModel, downstream_eval: r.about }, text: r.downstreamText };
  }
  const r = await modelEvaluation(saved, flags, fail);
  return {
    json: { ...r.downstream, downstream_eval: r.about },
    text: formatDownstream(r.downstream, r.about.hooks as string[]),
  };
}
