/**
 * Harvesting into an activation store: a model runs over a stream of token rows, one forward per
 * batch of rows (stopping at the last asked hook), and its activations are written into an Arrow
 * store (data/arrow_store.ts), one store row per kept token with `token_id`, `sequence_id` (the
 * token row's index) and `position`. One hook gives rows [d]; several hooks [L, d] (multi-layer
 * SAEs, crosscoders); a second model on the same token rows [2, d] (model-diffing crosscoders).
 *
 * The store stops at exactly `tokens` rows: the last token row is cut where the count is reached.
 * Each append is one batch of whole token rows and the store is resumable, so shards end between
 * batches and a killed harvest, run again with the same options, continues after the last whole
 * shard (the progress record holds the next token row's index) and writes the same files as an
 * uninterrupted run. Memory holds one batch of activations and one shard being filled.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { tensor } from "../../tensor/ops/create.ts";
import { tidy } from "../../tensor/scope.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import {
  ArrowStoreError,
  createStoreWriter,
  MANIFEST,
  type Manifest,
  PROGRESS,
  resumeStoreWriter,
  type StoreDType,
  type StoreWriter,
  type StoreWriterOptions,
} from "../arrow_store.ts";
import { countProgress, type ProgressSink } from "../progress.ts";
import type { TokenRow, TokenRowStream } from "../text/token_rows.ts";
import { hookNames, type LanguageModel, runWithCache } from "./model.ts";

/** A harvest that cannot run as asked: bad options, mismatched models, or a store begun otherwise. */
export class HarvestError extends Error {
  override name = "HarvestError";
}

export interface HarvestStoreOptions {
  model: LanguageModel;
  /** How the model is named in the store's metadata (its folder or hub id). */
  modelName: string;
  /** A second model run on the same token rows: rows become [2, d] (model A first). */
  modelB?: LanguageModel;
  modelBName?: string;
  /** Hook points, in row order: one gives rows [d], several [L, d] (all of the same width). */
  hooks: readonly string[];
  rows: TokenRowStream;
  /** Kept tokens (store rows) to harvest; fewer when the rows run out first. */
  tokens: number;
  /** The store's folder: new, or a harvest begun with the same options (it continues). */
  out: string;
  dtype?: StoreDType;
  /** Token rows per forward pass (default 8). */
  batch?: number;
  /** Token ids whose positions are not stored (special tokens: BOS, EOS, padding). */
  excludeIds?: Iterable<number>;
  /** Target store rows per shard (default about 128 MiB of rows); shards end between batches. */
  rowsPerShard?: number;
  /** Where a progress bar is drawn (process.stderr in the CLI); none when absent. */
  progress?: ProgressSink;
}

export interface HarvestResult {
  manifest: Manifest;
  /** Store rows written by this call (0 when the store was already complete). */
  written: number;
  /** The token row this call started at: 0, or where a resumed harvest continued. */
  startRow: number;
  /** The store was complete before this call (same options): nothing was run. */
  alreadyComplete: boolean;
  /** The token rows ran out before `tokens` kept tokens. */
  exhausted: boolean;
}

/** Hooks whose values are per head pair, not per token: they have no row per token. */
const NOT_PER_TOKEN = /\.hook_(pattern|attn_scores)$/;

const maxPositions = (m: LanguageModel): number =>
  m.cfg.modelType === "gpt2" ? m.cfg.nPositions : m.cfg.maxPositions;

/** Width of each hook's per-token value, from a one-token forward (stopping at the last hook). */
function hookWidths(m: LanguageModel, hooks: readonly string[], name: string): number[] {
  const known = new Set(hookNames(m));
  for (const h of hooks) {
    if (!known.has(h)) {
      throw new HarvestError(
        `harvest: ${name} (${m.family}) has no hook point ${
          JSON.stringify(h)
        } (sae lm info ${name} --hooks lists them)`,
      );
    }
    if (NOT_PER_TOKEN.test(h)) {
      throw new HarvestError(
        `harvest: ${h} holds attention over pairs of positions, not one value per token; choose a per-token hook`,
      );
    }
  }
  const cache = tidy(() =>
    runWithCache(m, tensor(new Int32Array(1), { shape: [1, 1] }), hooks, { stopEarly: true })
      .cache
  );
  const widths = hooks.map((h) => cache[h].shape.slice(2).reduce((a, b) => a * b, 1));
  for (const t of Object.values(cache)) t.dispose();
  return widths;
}

/** Check the options; the row shape and the metadata that a resumed harvest must match. */
function plan(o: HarvestStoreOptions): {
  rowShape: number[];
  d: number;
  meta: { harvest: Record<string, unknown> };
  batch: number;
  exclude: Set<number>;
} {
  const batch = o.batch ?? 8;
  const T = o.rows.context;
  if (!Number.isSafeInteger(o.tokens) || o.tokens < 1) {
    throw new HarvestError(`harvest: tokens must be a positive integer, got ${o.tokens}`);
  }
  if (!Number.isSafeInteger(batch) || batch < 1) {
    throw new HarvestError(`harvest: batch must be a positive integer, got ${batch}`);
  }
  if (o.hooks.length === 0) throw new HarvestError("harvest: give at least one hook point");
  if (new Set(o.hooks).size !== o.hooks.length) {
    throw new HarvestError(`harvest: hook points repeat: ${o.hooks.join(", ")}`);
  }
  const models: [LanguageModel, string][] = [[o.model, o.modelName]];
  if (o.modelB) models.push([o.modelB, o.modelBName ?? "model B"]);
  for (const [m, name] of models) {
    if (T > maxPositions(m)) {
      throw new HarvestError(
        `harvest: context ${T} exceeds ${name}'s ${maxPositions(m)} positions`,
      );
    }
  }
  const widths = hookWidths(o.model, o.hooks, o.modelName);
  let rowShape: number[];
  if (o.modelB) {
    if (o.hooks.length !== 1) {
      throw new HarvestError(
        `harvest: with a second model give one hook point (rows are [2, d]), got ${o.hooks.length}: ${
          o.hooks.join(", ")
        }`,
      );
    }
    const bName = o.modelBName ?? "model B";
    if (o.modelB.cfg.vocabSize !== o.model.cfg.vocabSize) {
      throw new HarvestError(
        `harvest: the two models must share a vocabulary: ${o.modelName} has ${o.model.cfg.vocabSize} ids, ${bName} ${o.modelB.cfg.vocabSize}`,
      );
    }
    const [wB] = hookWidths(o.modelB, o.hooks, bName);
    if (wB !== widths[0]) {
      throw new HarvestError(
        `harvest: ${o.hooks[0]} is ${
          widths[0]
        } wide in ${o.modelName} but ${wB} in ${bName}; the rows [2, d] need one d`,
      );
    }
    rowShape = [2, widths[0]];
  } else if (o.hooks.length > 1) {
    if (widths.some((w) => w !== widths[0])) {
      throw new HarvestError(
        `harvest: hook points in one row [L, d] must have the same width, got ${
          o.hooks.map((h, i) => `${h} ${widths[i]}`).join(", ")
        }`,
      );
    }
    rowShape = [o.hooks.length, widths[0]];
  } else rowShape = [widths[0]];
  const exclude = new Set(o.excludeIds ?? []);
  const meta = {
    harvest: {
      model: o.modelName,
      family: o.model.family,
      model_b: o.modelB ? (o.modelBName ?? "model B") : null,
      hooks: [...o.hooks],
      data: o.rows.describe(),
      context: T,
      tokens: o.tokens,
      dtype: o.dtype ?? "f32",
      batch,
      exclude_ids: [...exclude].sort((a, b) => a - b),
      rows_per_shard: o.rowsPerShard ?? null,
    },
  };
  return { rowShape, d: widths[0], meta, batch, exclude };
}

/** How `was` and `now` differ, field by field ("dtype: the store has "f32", this run "bf16""). */
function metaDiffs(was: unknown, now: Record<string, unknown>): string[] {
  const w = (was ?? {}) as Record<string, unknown>;
  return [...new Set([...Object.keys(w), ...Object.keys(now)])].flatMap((k) => {
    const [a, b] = [JSON.stringify(w[k] ?? null), JSON.stringify(now[k] ?? null)];
    return a === b ? [] : [`${k}: the store has ${a}, this run ${b}`];
  });
}

/** The harvest record of a store in `dir` (finished or being written), or null for none. */
function existingHarvest(dir: string): { finished: boolean; meta: unknown } | null {
  for (const [file, finished] of [[MANIFEST, true], [PROGRESS, false]] as const) {
    const path = join(dir, file);
    if (!existsSync(path)) continue;
    let json: { meta?: { harvest?: unknown }; options?: { meta?: { harvest?: unknown } } };
    try {
      json = JSON.parse(readFileSync(path, "utf8"));
    } catch (e) {
      throw new HarvestError(`${path}: cannot read: ${(e as Error).message}`);
    }
    return { finished, meta: (finished ? json.meta : json.options?.meta)?.harvest ?? null };
  }
  return null;
}

/** Where a harvest stands after each shard (the store's cursor). */
interface HarvestCursor {
  next_row: number;
  kept: number;
}

/** Run the model(s) over `rows` and write their activations at `hooks` into the store `out`. */
export async function harvestToStore(o: HarvestStoreOptions): Promise<HarvestResult> {
  const { rowShape, d, meta, batch, exclude } = plan(o);
  const size = rowShape.reduce((a, b) => a * b, 1);
  const storeOptions: StoreWriterOptions = {
    rowShape,
    dtype: o.dtype ?? "f32",
    model: o.modelB ? `${o.modelName},${o.modelBName ?? "model B"}` : o.modelName,
    hookPoint: o.hooks.join(","),
    columns: ["token_id", "sequence_id", "position"],
    rowsPerShard: o.rowsPerShard,
    meta,
    resumable: true,
  };
  const existing = existingHarvest(o.out);
  if (existing && existing.meta === null) {
    throw new HarvestError(
      `harvest: ${o.out} holds a store that was not harvested (no meta.harvest); choose a new folder`,
    );
  }
  if (existing) {
    const diffs = metaDiffs(existing.meta, meta.harvest);
    if (diffs.length) {
      throw new HarvestError(
        `harvest: ${o.out} holds a harvest with other options; run it with the same ones or choose a new folder (${
          diffs.join("; ")
        })`,
      );
    }
  }
  if (existing?.finished) {
    const manifest = JSON.parse(readFileSync(join(o.out, MANIFEST), "utf8")) as Manifest;
    return { manifest, written: 0, startRow: 0, alreadyComplete: true, exhausted: false };
  }
  let writer: StoreWriter, next = 0, kept = 0;
  if (existing) {
    const r = (() => {
      try {
        return resumeStoreWriter(o.out, storeOptions);
      } catch (e) {
        if (e instanceof ArrowStoreError) throw new HarvestError(`harvest: ${e.message}`);
        throw e;
      }
    })();
    const c = r.cursor as HarvestCursor | null;
    if (c && c.kept !== r.rows) {
      throw new HarvestError(
        `${join(o.out, PROGRESS)}: the cursor counts ${c.kept} rows but the shards hold ${r.rows}`,
      );
    }
    [writer, next, kept] = [r.writer, c?.next_row ?? 0, r.rows];
  } else writer = createStoreWriter(o.out, storeOptions);
  const startRow = next, startKept = kept;
  const bar = o.progress
    ? countProgress("harvest", o.tokens, { unit: "tokens", start: kept, sink: o.progress })
    : null;
  const vocab = o.model.cfg.vocabSize, T = o.rows.context;
  const models = o.modelB ? [o.model, o.modelB] : [o.model];

  /** One forward per model over `rows`; the kept tokens' activations appended as one unit. */
  const runBatch = async (rows: TokenRow[]): Promise<void> => {
    const B = rows.length, ids = new Int32Array(B * T);
    rows.forEach((r, i) => ids.set(r.ids, i * T));
    const bad = ids.findIndex((v) => v < 0 || v >= vocab);
    if (bad >= 0) {
      throw new HarvestError(
        `harvest: token row ${rows[Math.floor(bad / T)].index} position ${bad % T} holds id ${
          ids[bad]
        }, outside the model's vocabulary [0, ${vocab})`,
      );
    }
    // The activations as f32 [B·T, d] per part (a hook, or a model), read back and released.
    const parts: Float32Array[] = [];
    for (const m of models) {
      const cache = tidy(() =>
        runWithCache(m, tensor(ids, { shape: [B, T] }), o.hooks, { stopEarly: true }).cache
      );
      try {
        for (const h of o.hooks) parts.push(await perToken(cache[h], B, T, d, h));
      } finally {
        for (const t of Object.values(cache)) t.dispose();
      }
    }
    const at: number[] = [];
    for (let b = 0; b < B && kept + at.length < o.tokens; b++) {
      const n = rows[b].length ?? T;
      for (let p = 0; p < n && kept + at.length < o.tokens; p++) {
        if (!exclude.has(ids[b * T + p])) at.push(b * T + p);
      }
    }
    const n = at.length, x = new Float32Array(n * size);
    const tokenId = new Int32Array(n), sequenceId = new Int32Array(n), position = new Int32Array(n);
    for (let k = 0; k < n; k++) {
      const i = at[k], b = Math.floor(i / T);
      for (let j = 0; j < parts.length; j++) {
        x.set(parts[j].subarray(i * d, (i + 1) * d), k * size + j * d);
      }
      tokenId[k] = ids[i];
      sequenceId[k] = rows[b].index;
      position[k] = i % T;
    }
    kept += n;
    next = rows[B - 1].index + 1;
    const cursor: HarvestCursor = { next_row: next, kept };
    await writer.append(x, { token_id: tokenId, sequence_id: sequenceId, position }, cursor);
    bar?.note(`shards ${writer.shardCount()}`);
    bar?.advance(n);
  };

  let pending: TokenRow[] = [];
  if (kept < o.tokens) {
    for await (const row of o.rows.rows()) {
      if (row.index < next) continue;
      checkRow(row, T, o.rows);
      pending.push(row);
      if (pending.length === batch) {
        await runBatch(pending);
        pending = [];
        if (kept >= o.tokens) break;
      }
    }
    if (pending.length && kept < o.tokens) await runBatch(pending);
  }
  const manifest = await writer.finish();
  bar?.note(`shards ${manifest.shards.length}`);
  bar?.done();
  return {
    manifest,
    written: kept - startKept,
    startRow,
    alreadyComplete: false,
    exhausted: kept < o.tokens,
  };
}

/** A token row as the harvest needs it: `context` ids, an index that fits int32, a sane length. */
function checkRow(row: TokenRow, T: number, s: TokenRowStream): void {
  if (!(row.ids instanceof Int32Array) || row.ids.length !== T) {
    throw new HarvestError(
      `harvest: ${s.describe()}: token row ${row.index} has ${row.ids?.length} ids, expected the context ${T}`,
    );
  }
  if (!Number.isSafeInteger(row.index) || row.index < 0 || row.index > 0x7fffffff) {
    throw new HarvestError(
      `harvest: ${s.describe()}: token row index ${row.index} is not an int32 sequence id`,
    );
  }
  const n = row.length;
  if (n !== undefined && !(Number.isInteger(n) && n >= 0 && n <= T)) {
    throw new HarvestError(
      `harvest: ${s.describe()}: token row ${row.index} has length ${n}, outside [0, ${T}]`,
    );
  }
}

/** A hook's [B, T, …] value as f32 [B·T, d], checked to be per token. */
async function perToken(
  t: Tensor,
  B: number,
  T: number,
  d: number,
  h: string,
): Promise<Float32Array> {
  const w = t.shape.slice(2).reduce((a, b) => a * b, 1);
  if (t.shape[0] !== B || t.shape[1] !== T || w !== d) {
    throw new HarvestError(
      `harvest: ${h} gave [${t.shape}], expected [${B}, ${T}, …] of width ${d}`,
    );
  }
  const v = await t.data();
  return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
}
