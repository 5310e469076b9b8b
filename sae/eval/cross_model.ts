/**
 * A crosscoder across several models at one hook (a base and a finetuned model), judged with the
 * models: the crosscoder's report on their stacked activations [n, models, d] at the same tokens,
 * and for each model the CE/KL it loses when its hook is replaced by its own slice of the
 * reconstruction (the crosscoder encoding every model's clean activation; splice.ts's
 * crossModelSplice). `sae eval DIR --model A,B` and the end of `sae train --model A,B` call it.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { reshape, stack, take } from "../../tensor/ops/shape.ts";
import { hookNames, type LanguageModel, runWithCache } from "../../data/lm/model.ts";
import type { Batch } from "../arch/architecture.ts";
import { isCrosscoder } from "../arch/registry.ts";
import type { SaeConfig } from "../config.ts";
import type { SavedSae } from "../io/saelens.ts";
import { crosscoderReport } from "../crosscoder/cli.ts";
import { crossModelSplice } from "./splice.ts";
import {
  downstreamLoss,
  type DownstreamMetrics,
  formatDownstream,
  tokenBatches,
} from "./downstream.ts";
import {
  evalModels,
  evalTokens,
  type Fail,
  type Flags,
  hookWidths,
  keptPositionBatches,
  value,
} from "./eval_tokens.ts";

/** The models a dictionary was trained across (cfg.json's model_names); [] for one model. */
export function modelNamesOf(cfg: SaeConfig): string[] {
  const names = cfg.extra?.model_names;
  return Array.isArray(names) && names.every((n) => typeof n === "string") ? names : [];
}

/**
 * Each model's activation at `hook` for rows of token ids, stacked to [n, models, d] at the
 * positions whose token is not special, one batch per `batch` rows.
 */
export function* crossModelBatches(
  models: readonly LanguageModel[],
  tokens: Tensor,
  batch: number,
  hook: string,
  special: readonly number[],
): Generator<Batch> {
  yield* keptPositionBatches(tokens, batch, special, (tb, idx) => {
    const rows = models.map((m) => {
      const a = runWithCache(m, tb, [hook], { stopEarly: true }).cache[hook];
      return take(reshape(a, [-1, a.shape[a.ndim - 1]]), idx, 0);
    });
    return { x: stack(rows, 1) };
  });
}

/** One model's downstream figures, named. */
export type ModelDownstream = { model: string } & DownstreamMetrics;

export interface CrossModelEvaluation {
  /** The crosscoder's report (reconstruction per model, sparsity, diffing views). */
  json: Record<string, unknown>;
  perModel: ModelDownstream[];
  about: Record<string, unknown>;
  /** The report and the downstream figures, as printed; the latter alone. */
  text: string;
  downstreamText: string;
}

/** The hook a crosscoder across `models` reads: --hook, else cfg.json's hook_name; checked. */
export function crossModelHook(
  saved: SavedSae,
  names: readonly string[],
  models: readonly LanguageModel[],
  flags: Flags,
  fail: Fail,
): string {
  const { cfg } = saved;
  if (!isCrosscoder(cfg)) {
    fail(`several models (--model ${names.join(",")}) need a crosscoder; this is a ${cfg.arch}`);
  }
  if ((cfg.n_inputs ?? 1) !== models.length) {
    fail(
      `the ${cfg.arch} has ${cfg.n_inputs ?? 1} inputs, --model names ${models.length} models`,
    );
  }
  for (const f of ["hooks", "input-hook"]) {
    if (flags[f] !== undefined) fail(`--${f} does not apply with several models (give --hook)`);
  }
  const extra = cfg.extra ?? {};
  const hook = value(flags, "hook", fail) ??
    (typeof extra.hook_name === "string" ? extra.hook_name : undefined) ??
    fail("several models: --hook NAME (cfg.json names no hook_name)");
  models.forEach((m, i) => {
    if (!hookNames(m).includes(hook)) {
      fail(`--hook ${hook}: ${names[i]} (${m.family}) has no hook point named ${hook}`);
    }
    const w = hookWidths(m, tensor(new Int32Array(2), { shape: [1, 2] }), [hook])[hook];
    if (w !== cfg.d_in) {
      fail(`the dictionary's d_in is ${cfg.d_in}, but ${hook} of ${names[i]} is ${w} wide`);
    }
  });
  return hook;
}

/** The crosscoder on the models' activations and spliced into each, from `sae eval`'s flags. */
export async function crossModelEvaluation(
  saved: SavedSae,
  flags: Flags,
  fail: Fail,
): Promise<CrossModelEvaluation> {
  const { names, dirs, models } = await evalModels(flags, fail);
  const hook = crossModelHook(saved, names, models, flags, fail);
  const trained = modelNamesOf(saved.cfg);
  const { tokens, context, special, padId, batch } = await evalTokens(
    flags,
    models[0],
    dirs[0],
    fail,
  );
  const { cfg, params, threshold } = saved;
  const report = await crosscoderReport(
    params,
    cfg,
    crossModelBatches(models, tokens, batch, hook, special),
    threshold,
  );
  const perModel: ModelDownstream[] = [];
  for (let m = 0; m < models.length; m++) {
    const d = await downstreamLoss(
      models[m],
      tokenBatches(tokens, batch),
      crossModelSplice(models, saved, hook, m),
      { specialIds: special, padId },
    );
    perModel.push({ model: names[m], ...d });
  }
  const about = {
    models: names,
    ...(trained.length && trained.join(",") !== names.join(",") ? { trained_on: trained } : {}),
    hooks: [hook],
    context,
    special_ids: special,
    pad_id: padId,
  };
  const downstreamText = perModel.map((p) => formatDownstream(p, [`${hook} of ${p.model}`]))
    .join("\n");
  return {
    json: report.json,
    perModel,
    about,
    text: `${report.text}\n${downstreamText}`,
    downstreamText,
  };
}
