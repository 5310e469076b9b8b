/**
 * `sae convert IN OUT`: activations of any supported format → an Arrow store (OUT a folder) or
 * an .npy file; dictionaries (dictionary_learning ae.pt, sparsify, SAELens) → a SAELens folder.
 * Activations stream through in bounded chunks (an .npy output is assembled in memory).
 */
import { dispose } from "../../tensor/scope.ts";
import { saveSae } from "./saelens.ts";
import { createStoreWriter, type Manifest, type StoreDType } from "../../data/arrow_store.ts";
import { detectDictionary, loadDictionary } from "./dictionary_formats.ts";
import { detectActivations, openActivations, splitSpec } from "../../data/formats.ts";
import { saveNpy } from "../../data/npy.ts";
import { rowSize } from "../../data/row_stream.ts";
import { adoptHostArray } from "../../data/safetensors.ts";

export interface ConvertOptions {
  /** Store dtype (default: the input's f32/f16/bf16, else f32). */
  dtype?: StoreDType;
  rowsPerShard?: number;
  model?: string;
  hookPoint?: string;
  /** Also write token ids when the input has them (Arrow store and SAELens inputs). */
  tokenIds?: boolean;
}

export type ConvertResult =
  | { kind: "store"; out: string; manifest: Manifest }
  | { kind: "npy"; out: string; rows: number; shape: number[] }
  | { kind: "dictionary"; out: string; format: string; architecture: string };

export async function convertPath(
  input: string,
  out: string,
  o: ConvertOptions = {},
): Promise<ConvertResult> {
  const { path } = splitSpec(input);
  const isActs = input.includes(",") || detectActivations(path) !== null;
  const dict = input.includes(",") ? null : detectDictionary(path);
  if (dict && !isActs) {
    const s = await loadDictionary(path);
    try {
      await saveSae(out, s);
    } finally {
      dispose(s.params);
    }
    return { kind: "dictionary", out, format: s.format, architecture: s.cfg.arch };
  }
  const withTokens = o.tokenIds === true;
  const stream = await openActivations(input, { tokenIds: withTokens });
  const size = rowSize(stream);
  if (out.endsWith(".npy")) {
    const parts: Float32Array[] = [];
    let rows = 0;
    for (let it = stream.open(), r = it.next(); !r.done; r = it.next()) {
      parts.push(r.value.x.slice(0, r.value.rows * size));
      rows += r.value.rows;
    }
    const all = new Float32Array(rows * size);
    let at = 0;
    for (const p of parts) (all.set(p, at), (at += p.length));
    const t = adoptHostArray(all, "f32", [rows, ...stream.rowShape]);
    await saveNpy(out, t);
    t.dispose();
    return { kind: "npy", out, rows, shape: [rows, ...stream.rowShape] };
  }
  const dtype = o.dtype ??
    (["f32", "f16", "bf16"].includes(stream.dtype) ? stream.dtype as StoreDType : "f32");
  const w = createStoreWriter(out, {
    rowShape: stream.rowShape,
    dtype,
    model: o.model,
    hookPoint: o.hookPoint,
    rowsPerShard: o.rowsPerShard,
    columns: withTokens ? ["token_id"] : [],
  });
  for (let it = stream.open(), r = it.next(); !r.done; r = it.next()) {
    const c = r.value;
    if (withTokens && !c.tokenIds) throw new Error(`convert: ${input} has no token ids to write`);
    await w.append(c.x.subarray(0, c.rows * size), withTokens ? { token_id: c.tokenIds } : {});
  }
  return { kind: "store", out, manifest: await w.finish() };
}
