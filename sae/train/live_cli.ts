/**
 * `sae train --model M --hook H --data TEXT`: a dictionary trained on activations straight from
 * the model, through an activation buffer (data/lm/activation_buffer.ts), with no store on disk.
 * `--hook A,B` reads several hook points as rows [L, d] (MLSAE, crosscoders); `--target-hook` gives
 * a transcoder its targets at the same tokens. `--model A,B` runs several models sharing a tokenizer
 * on the same token rows at one hook: rows [models, d] for a crosscoder across models.
 */
import { resolveModel } from "../../data/lm/hub.ts";
import { loadModel } from "../../data/lm/model.ts";
import { activationBuffer, type LiveSource } from "../../data/lm/activation_buffer.ts";
import { openTextRows, type TextRowsOptions } from "../../data/text/open_rows.ts";
import { assertSameTokenizer } from "../../data/text/tokenizer_match.ts";

export interface LiveCommand {
  /** Model folders or Hugging Face repo ids: one, or several read together at one hook. */
  models: string[];
  /** Hook points read (several: rows [L, d]). */
  hooks: string[];
  targetHook?: string;
  /** The text: any corpus data/text reads, tokenised by the model's tokenizer.json. */
  data: string;
  /** Context, packing and the corpus's field/separator/format. */
  text: TextRowsOptions;
  /** Token rows the buffer holds (default: 16 batches' worth, at least one model batch). */
  bufferContexts?: number;
  modelBatch: number;
  excludeSpecial: boolean;
  seed: number;
  batch: number;
}

export const LIVE_DEFAULTS = { context: 128, modelBatch: 8 };

/** The live source, what data.json records, and the cfg.json fields that name model and hooks. */
export async function liveData(
  c: LiveCommand,
  fail: (m: string) => never,
): Promise<{ data: LiveSource; describe: unknown; extra: Record<string, unknown> }> {
  const dirs = await Promise.all(c.models.map((m) => resolveModel(m)));
  if (dirs.length > 1) {
    try {
      assertSameTokenizer(dirs);
    } catch (e) {
      fail((e as Error).message);
    }
  }
  const [model, ...others] = await Promise.all(dirs.map((d) => loadModel(d)));
  const { rows, special } = await openTextRows(c.data, dirs[0], c.text).catch((e) =>
    fail(`--data ${c.data}: ${(e as Error).message}`)
  );
  const context = c.text.context;
  const contexts = c.bufferContexts ??
    Math.max(Math.ceil((16 * c.batch) / context), c.modelBatch);
  let data: LiveSource;
  try {
    data = activationBuffer({
      model,
      modelName: c.models[0],
      ...(others.length
        ? { alongside: others.map((m, i) => ({ model: m, name: c.models[i + 1] })) }
        : {}),
      rows,
      hooks: c.hooks,
      ...(c.targetHook ? { targetHook: c.targetHook } : {}),
      contexts,
      modelBatch: c.modelBatch,
      seed: c.seed,
      ...(c.excludeSpecial ? { exclude: special } : {}),
    });
  } catch (e) {
    fail((e as Error).message);
  }
  if (c.batch > contexts * context) {
    fail(
      `--batch ${c.batch} exceeds the buffer's ${
        contexts * context
      } rows (--buffer-contexts ${contexts} × --context ${context})`,
    );
  }
  return {
    data: data!,
    describe: data!.identity,
    // SAELens's names, so `sae eval --model` and SAELens-style readers find the hook.
    extra: {
      model_name: c.models[0],
      ...(c.models.length > 1 ? { model_names: c.models } : {}),
      hook_name: c.hooks[0],
      ...(c.hooks.length > 1 ? { hook_names: c.hooks } : {}),
      ...(c.targetHook ? { hook_name_out: c.targetHook } : {}),
      context_size: context,
      dataset_path: c.data,
    },
  };
}
