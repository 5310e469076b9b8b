/**
 * `sae features --resume`: the collector's whole state (feature_stats.ts) saved between forward
 * batches as one safetensors file, `DIR/features/checkpoint.safetensors`, written atomically, with
 * the run's settings and the next stream row in its metadata. A resumed run checks that its
 * settings are the same (naming the first that differs), skips the rows already scanned and goes
 * on in the same batches, so its result equals an uninterrupted run's.
 */
import { existsSync } from "node:fs";
import { unlink } from "node:fs/promises";
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { loadSafetensors, saveSafetensors } from "../../data/safetensors.ts";
import { ensureDir } from "../../data/atomic.ts";
import { type FeatureStats, restoreStats, statsArrays, type StatsShape } from "./feature_stats.ts";

const FORMAT = "sparsecoder.features-checkpoint/1";

export interface Checkpoint {
  stats: FeatureStats;
  /** The first stream row not yet scanned. */
  nextRow: number;
}

export const checkpointPath = (out: string): string => `${out}/checkpoint.safetensors`;

/** Save the state after rows [0, nextRow); `settings` must equal a resumed run's. */
export async function saveCheckpoint(
  out: string,
  st: FeatureStats,
  nextRow: number,
  settings: Record<string, unknown>,
): Promise<void> {
  await ensureDir(out);
  const tensors: Record<string, Tensor> = {};
  for (const [name, a] of Object.entries(statsArrays(st))) {
    const dtype = a instanceof Float64Array ? "f64" : a instanceof Int32Array ? "i32" : "f32";
    tensors[name] = tensor(a, { shape: [a.length], dtype });
  }
  await saveSafetensors(checkpointPath(out), tensors, {
    format: FORMAT,
    settings: JSON.stringify(settings),
    shape: JSON.stringify(st.shape),
    labels: JSON.stringify(st.labels),
    scanned: String(st.scanned),
    next_row: String(nextRow),
  });
  for (const t of Object.values(tensors)) t.dispose();
}

/**
 * The saved state, or null when there is none. Settings that differ from `settings` are an error
 * naming the first of them (resuming with other settings would mix two runs).
 */
export async function loadCheckpoint(
  out: string,
  shape: StatsShape,
  settings: Record<string, unknown>,
): Promise<Checkpoint | null> {
  const path = checkpointPath(out);
  if (!existsSync(path)) return null;
  const { metadata, tensors } = await loadSafetensors(path);
  try {
    if (metadata.format !== FORMAT) {
      throw new Error(
        `${path}: not a features checkpoint (format ${JSON.stringify(metadata.format)})`,
      );
    }
    const saved = { ...JSON.parse(metadata.settings), shape: JSON.parse(metadata.shape) };
    const now: Record<string, unknown> = { ...settings, shape };
    for (const k of new Set([...Object.keys(saved), ...Object.keys(now)])) {
      const [a, b] = [JSON.stringify(saved[k]), JSON.stringify(now[k])];
      if (a !== b) {
        throw new Error(
          `${path}: the checkpoint was made with ${k} ${a}, this run has ${b}; run without --resume to start over`,
        );
      }
    }
    const arrays = Object.fromEntries(
      Object.entries(tensors).map(([k, t]) => [k, t.dataSync() as ArrayLike<number>]),
    );
    const stats = restoreStats(
      shape,
      JSON.parse(metadata.labels),
      Number(metadata.scanned),
      arrays,
    );
    return { stats, nextRow: Number(metadata.next_row) };
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
}

export async function removeCheckpoint(out: string): Promise<void> {
  await unlink(checkpointPath(out)).catch(() => {});
}
