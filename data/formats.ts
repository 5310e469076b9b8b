/**
 * One entry point for activation data on disk: recognise the format of a path and open it as a
 * RowStream (bounded-memory, restartable), or as a training DataSource.
 *
 *   folder with manifest.json              our Arrow store (arrow_store.ts)
 *   folder with state.json + *.arrow       a SAELens cache (HF datasets; saelens_cache.ts)
 *   file.arrow                             an Arrow IPC stream with an activation column
 *   folder with config.json + shard_0.memmap   a dictionary_learning cache (memmap_cache.ts)
 *   DIR1,DIR2,…                            caches read in lockstep → rows [L, d] (crosscoders)
 *   file.npy[#bf16]                        [N, d] or [N, L, d] (read whole; #bf16: '<u2' words are bf16)
 *   file.safetensors[#tensor]              one [N, d] / [N, L, d] tensor (read whole)
 * A "#name" suffix names the column (SAELens hook) or tensor to read.
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { cast } from "../tensor/ops/elementwise.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { arrayData, type DataSource, streamData } from "./sources.ts";
import { MANIFEST, storeStream } from "./arrow_store.ts";
import { isMemmapCache, memmapCacheStream } from "./memmap_cache.ts";
import { loadNpy } from "./npy.ts";
import { arrayRowStream, type RowStream } from "./row_stream.ts";
import { loadSafetensors } from "./safetensors.ts";
import { isSaelensCache, saelensCacheStream } from "./saelens_cache.ts";

export class DataFormatError extends Error {
  override name = "DataFormatError";
}

export type ActivationFormat =
  | "arrow-store"
  | "saelens-cache"
  | "arrow"
  | "dictionary_learning-cache"
  | "npy"
  | "safetensors";

/** Split "path#name" (a column or tensor name may follow the last '#'). */
export function splitSpec(spec: string): { path: string; name?: string } {
  const i = spec.lastIndexOf("#");
  return i > 0 && !existsSync(spec)
    ? { path: spec.slice(0, i), name: spec.slice(i + 1) }
    : { path: spec };
}

export function detectActivations(path: string): ActivationFormat | null {
  if (!existsSync(path)) return null;
  if (statSync(path).isDirectory()) {
    if (existsSync(join(path, MANIFEST))) return "arrow-store";
    if (isSaelensCache(path)) return "saelens-cache";
    if (isMemmapCache(path)) return "dictionary_learning-cache";
    return null;
  }
  if (path.endsWith(".arrow") || path.endsWith(".arrows")) return "arrow";
  if (path.endsWith(".npy")) return "npy";
  if (path.endsWith(".safetensors")) return "safetensors";
  return null;
}

const KNOWN =
  "an Arrow store (folder with manifest.json), a SAELens cache (folder with state.json + .arrow files), an .arrow stream, a dictionary_learning cache (folder with config.json + shard_0.memmap; several joined by commas), .npy or .safetensors";

export interface OpenOptions {
  /** Check Arrow store checksums while streaming (default true). */
  verify?: boolean;
  /** Read npy '<u2' as bf16 words. */
  bf16?: boolean;
  /** Return token ids with each chunk where the format stores them (Arrow store, SAELens, dictionary_learning tokens.pt). */
  tokenIds?: boolean;
  /** Return sequence ids / positions with each chunk (Arrow stores that have those columns). */
  sequenceIds?: boolean;
  positions?: boolean;
}

/** An in-memory tensor [N, d] / [N, L, d] of a whole-file format, as f32. */
export async function loadActivationArray(spec: string, opts: OpenOptions = {}): Promise<Tensor> {
  const { path, name } = splitSpec(spec);
  const fmt = detectActivations(path);
  let x: Tensor;
  if (fmt === "npy") {
    // NumPy has no bf16: "PATH.npy#bf16" reads '<u2' words as bf16 (as opts.bf16 does).
    if (name !== undefined && name !== "bf16") {
      throw new DataFormatError(
        `${spec}: an .npy holds one array; the only suffix is #bf16 (read '<u2' words as bf16)`,
      );
    }
    x = await loadNpy(path, { bf16: opts.bf16 || name === "bf16" });
  } else if (fmt === "safetensors") {
    const { tensors } = await loadSafetensors(path);
    const names = Object.keys(tensors);
    const pick = name ?? (names.length === 1 ? names[0] : undefined);
    if (!pick || !tensors[pick]) {
      for (const t of Object.values(tensors)) t.dispose();
      throw new DataFormatError(
        `${path}: ${name ? `no tensor ${JSON.stringify(name)}` : "several tensors"} (tensors: ${
          names.join(", ")
        }); name one as PATH#tensor`,
      );
    }
    for (const [k, t] of Object.entries(tensors)) if (k !== pick) t.dispose();
    x = tensors[pick];
  } else throw new DataFormatError(`${spec}: not an .npy or .safetensors file`);
  if (x.ndim !== 2 && x.ndim !== 3) {
    x.dispose();
    throw new DataFormatError(
      `${spec}: activations must be [N, d] or [N, L, d], got shape [${x.shape}]`,
    );
  }
  if (x.dtype === "f32") return x;
  if (x.dtype === "i32" || x.dtype === "bool") {
    x.dispose();
    throw new DataFormatError(`${spec}: activations must be floating point, got ${x.dtype}`);
  }
  const y = cast(x, "f32");
  x.dispose();
  return y;
}

/** Open any supported activation path as a stream of f32 row chunks. */
export async function openActivations(spec: string, opts: OpenOptions = {}): Promise<RowStream> {
  if (spec.includes(",")) {
    const dirs = spec.split(",").filter(Boolean);
    for (const d of dirs) {
      if (detectActivations(d) !== "dictionary_learning-cache") {
        throw new DataFormatError(
          `${d}: only dictionary_learning caches can be joined with commas (lockstep [L, d] rows)`,
        );
      }
    }
    return memmapCacheStream(dirs, { tokenIds: opts.tokenIds });
  }
  const { path, name } = splitSpec(spec);
  const fmt = detectActivations(path);
  switch (fmt) {
    case "arrow-store":
      return storeStream(path, {
        verify: opts.verify,
        tokenIds: opts.tokenIds,
        sequenceIds: opts.sequenceIds,
        positions: opts.positions,
      });
    case "saelens-cache":
    case "arrow":
      return saelensCacheStream(path, { column: name, tokenIds: opts.tokenIds });
    case "dictionary_learning-cache":
      return memmapCacheStream([path], { tokenIds: opts.tokenIds });
    case "npy":
    case "safetensors": {
      const x = await loadActivationArray(spec, opts);
      const data = await x.data() as Float32Array;
      const s = arrayRowStream(data, x.shape.slice(1), { dtype: "f32", format: fmt, path });
      x.dispose();
      return s;
    }
  }
  // A missing file with a known extension is just missing; anything else gets the list of formats.
  const knownExt = /\.(npy|safetensors|arrows?)$/.test(path);
  throw new DataFormatError(
    !existsSync(path) && (knownExt || !/\.\w+$/.test(path))
      ? `${path}: no such file or folder`
      : `${path}: not activation data we recognise; expected ${KNOWN}`,
  );
}

export interface ActivationDataOptions extends OpenOptions {
  seed?: number;
  /** Targets for transcoders (.npy / .safetensors, read whole, rows aligned with the inputs). */
  targets?: string;
  /** Shuffle buffer rows for streamed formats. */
  bufferRows?: number;
}

/**
 * A training DataSource for a path: whole-file formats become an in-memory array shuffled per
 * epoch (sae.arrayData); stores and caches stream through the shuffle buffer (sae.streamData).
 */
export async function activationData(
  spec: string,
  o: ActivationDataOptions = {},
): Promise<{ data: DataSource; describe: Record<string, unknown> }> {
  const { path } = splitSpec(spec);
  const fmt = spec.includes(",") ? "dictionary_learning-cache" : detectActivations(path);
  if (fmt === "npy" || fmt === "safetensors") {
    const x = await loadActivationArray(spec, o);
    const y = o.targets ? await loadActivationArray(o.targets, o) : undefined;
    return {
      data: arrayData(x, { y, seed: o.seed, name: spec }),
      describe: { kind: fmt, path: spec, targets: o.targets ?? null },
    };
  }
  if (o.targets) {
    throw new DataFormatError(
      `--targets needs inputs in an .npy or .safetensors file (read whole, rows aligned); ${spec} is a ${
        fmt ?? "stream"
      }`,
    );
  }
  const stream = await openActivations(spec, o);
  return {
    data: streamData(stream, { seed: o.seed, bufferRows: o.bufferRows, name: spec }),
    describe: {
      kind: stream.format,
      path: spec,
      rows: stream.rows ?? null,
      row_shape: stream.rowShape,
      dtype: stream.dtype,
    },
  };
}
