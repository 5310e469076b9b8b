/**
 * `sae train --model M --hook H --data TEXT`: a dictionary trained on activations straight from
 * the model, through an activation buffer (data/lm/activation_buffer.ts), with no store on disk.
 * `--hook A,B` reads several hook points as rows [L, d] (MLSAE, crosscoders); `--target-hook` gives
 * a transcoder its targets at the same tokens.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { loadNpy } from "../../data/npy.ts";
import { resolveModel } from "../../data/lm/hub.ts";
import { loadModel } from "../../data/lm/model.ts";
import { activationBuffer, type LiveSource } from "../../data/lm/activation_buffer.ts";
import { idRows } from "../../data/text/id_rows.ts";
import type { TokenRowStream } from "../../data/text/token_rows.ts";

export interface LiveCommand {
  /** A model folder or Hugging Face repo id. */
  model: string;
  /** Hook points read (several: rows [L, d]). */
  hooks: string[];
  targetHook?: string;
  /** The text (for now: pre-tokenised ids, see openTrainingText). */
  data: string;
  context: number;
  /** Token rows the buffer holds (default: 16 batches' worth, at least one model batch). */
  bufferContexts?: number;
  modelBatch: number;
  excludeSpecial: boolean;
  seed: number;
  batch: number;
}

export const LIVE_DEFAULTS = { context: 128, modelBatch: 8 };

/**
 * The text adapter, to be replaced by data/text's corpus readers and packing: `--data` as
 * pre-tokenised int32 ids in a .npy ([N, T] with T ≥ context, each row cut to its first `context`
 * ids; or flat [n], cut into rows of `context`), and the special ids the model's config.json names
 * (bos_token_id, eos_token_id, pad_token_id).
 */
export async function openTrainingText(
  path: string,
  context: number,
  modelDir: string,
  fail: (m: string) => never,
): Promise<{ rows: TokenRowStream; special: ReadonlySet<number> }> {
  if (!path.endsWith(".npy")) {
    fail(`--data ${path}: live training reads pre-tokenised int32 ids (.npy) for now`);
  }
  const t = await loadNpy(path).catch((e) => fail(`--data ${path}: ${(e as Error).message}`));
  if (t.dtype !== "i32" || t.ndim < 1 || t.ndim > 2) {
    fail(`--data ${path}: expected int32 token ids [N, T] or [n], got ${t.dtype} [${t.shape}]`);
  }
  let ids = t.dataSync() as Int32Array;
  if (t.ndim === 2) {
    const [N, T] = t.shape;
    if (T < context) {
      fail(`--data ${path}: rows of ${T} tokens are shorter than --context ${context}`);
    }
    if (T > context) {
      const cut = new Int32Array(N * context);
      for (let i = 0; i < N; i++) cut.set(ids.subarray(i * T, i * T + context), i * context);
      ids = cut;
    }
  }
  if (ids.length < context) {
    fail(`--data ${path}: ${ids.length} tokens, fewer than one row of ${context}`);
  }
  const cfg = JSON.parse(await readFile(join(modelDir, "config.json"), "utf8"));
  const special = new Set<number>(
    ["bos_token_id", "eos_token_id", "pad_token_id"].map((k) => cfg[k]).filter(Number.isInteger),
  );
  return { rows: idRows(ids, context, { name: path }), special };
}

/** The live source, what data.json records, and the cfg.json fields that name model and hooks. */
export async function liveData(
  c: LiveCommand,
  fail: (m: string) => never,
): Promise<{ data: LiveSource; describe: unknown; extra: Record<string, unknown> }> {
  const dir = await resolveModel(c.model);
  const model = await loadModel(dir);
  const { rows, special } = await openTrainingText(c.data, c.context, dir, fail);
  const contexts = c.bufferContexts ??
    Math.max(Math.ceil((16 * c.batch) / c.context), c.modelBatch);
  let data: LiveSource;
  try {
    data = activationBuffer({
      model,
      modelName: c.model,
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
  if (c.batch > contexts * c.context) {
    fail(
      `--batch ${c.batch} exceeds the buffer's ${
        contexts * c.context
      } rows (--buffer-contexts ${contexts} × --context ${c.context})`,
    );
  }
  return {
    data: data!,
    describe: data!.identity,
    // SAELens's names, so `sae eval --model` and SAELens-style readers find the hook.
    extra: {
      model_name: c.model,
      hook_name: c.hooks[0],
      ...(c.hooks.length > 1 ? { hook_names: c.hooks } : {}),
      ...(c.targetHook ? { hook_name_out: c.targetHook } : {}),
      context_size: c.context,
      dataset_path: c.data,
    },
  };
}
