/**
 * `sae inspect PATH`: what a file or folder holds — format, shapes, dtypes, rows and statistics
 * for activation data (from the store's manifest, or one streaming Welford pass); architecture,
 * sizes, tensors and decoder norms for dictionaries. Returns a plain record; tools.ts formatInspection
 * renders it as text.
 */
import { existsSync } from "node:fs";
import { norm } from "../../tensor/ops/reduce.ts";
import { dispose } from "../../tensor/scope.ts";
import { readManifest, verifyStore } from "../../data/arrow_store.ts";
import { detectDictionary, loadDictionary } from "./dictionary_formats.ts";
import { isTopkFamily, readsInputs } from "../arch/architecture.ts";
import { architecture } from "../arch/registry.ts";
import { detectActivations, openActivations, splitSpec } from "../../data/formats.ts";
import { rowSize } from "../../data/row_stream.ts";
import {
  type Moments,
  welfordFinish,
  welfordInit,
  welfordMerge,
  welfordOf,
} from "../../data/welford.ts";

export interface InspectOptions {
  /** Verify an Arrow store's sha256 checksums (reads every shard). */
  verify?: boolean;
  /** Rows to scan for statistics when the format stores none (default: all). */
  maxRows?: number;
}

function summarise(m: Moments) {
  const n = m.mean.length;
  const avg = (a: number[]) => a.reduce((x, y) => x + y, 0) / Math.max(1, n);
  return {
    count: m.count,
    mean_of_means: avg(m.mean),
    mean_abs_mean: avg(m.mean.map(Math.abs)),
    mean_variance: avg(m.variance),
    min_variance: Math.min(...m.variance),
    max_variance: Math.max(...m.variance),
    total_variance: m.variance.reduce((a, b) => a + b, 0),
    // E‖x‖² = Σ_d (var_d + mean_d²): what normalisation to mean‖x‖² = 1 divides by.
    mean_squared_norm: m.variance.reduce((a, v, j) => a + v + m.mean[j] ** 2, 0),
  };
}

export async function inspectPath(
  spec: string,
  o: InspectOptions = {},
): Promise<Record<string, unknown>> {
  const { path } = splitSpec(spec);
  const dict = spec.includes(",") ? null : detectDictionary(path);
  const act = spec.includes(",") ? "dictionary_learning-cache" : detectActivations(path);
  if (dict && !(act && dict === "dictionary_learning" && path.endsWith("/"))) {
    const s = await loadDictionary(path);
    const p = s.params as unknown as Record<
      string,
      import("../../tensor/tensor.ts").Tensor | undefined
    >;
    const n = await norm(s.params.W_dec, -1).data();
    const arch = architecture(s.cfg.arch);
    const sorted = Float64Array.from(n).sort();
    const out = {
      path,
      kind: "dictionary",
      format: s.format,
      architecture: s.cfg.arch,
      d_in: s.cfg.d_in,
      d_sae: s.cfg.d_sae,
      ...(s.cfg.d_out !== s.cfg.d_in ? { d_out: s.cfg.d_out } : {}),
      ...(isTopkFamily(arch) && !readsInputs(arch) ? { k: s.cfg.k } : {}),
      ...(s.threshold !== undefined ? { threshold: s.threshold } : {}),
      apply_b_dec_to_input: s.cfg.apply_b_dec_to_input,
      tensors: Object.fromEntries(
        Object.entries(p).filter(([, v]) => v).map((
          [k, v],
        ) => [k, `[${v!.shape.join(", ")}] ${v!.dtype}`]),
      ),
      decoder_norm: {
        min: sorted[0],
        median: sorted[sorted.length >> 1],
        max: sorted[sorted.length - 1],
      },
    };
    dispose(s.params);
    return out;
  }
  if (!act) {
    throw new Error(
      existsSync(path)
        ? `${path}: neither activation data nor a dictionary we recognise`
        : `${path}: no such file or folder`,
    );
  }
  const stream = await openActivations(spec, { verify: false });
  const base: Record<string, unknown> = {
    path: spec,
    kind: "activations",
    format: stream.format,
    rows: stream.rows ?? null,
    row_shape: stream.rowShape,
    dtype: stream.dtype,
  };
  if (act === "arrow-store") {
    const m = readManifest(path);
    Object.assign(base, {
      model: m.model,
      hook_point: m.hook_point,
      columns: m.columns,
      shards: m.shards.length,
      bytes: m.shards.reduce((a, s) => a + s.bytes, 0),
      ...(o.verify ? { checksums: `${verifyStore(path).shards} shards verified (sha256)` } : {}),
      statistics: summarise(m.stats),
    });
    return base;
  }
  // Other formats store no statistics: one streaming pass (bounded memory), or a prefix of it.
  const size = rowSize(stream);
  let st = welfordInit(size), rows = 0;
  const limit = o.maxRows ?? Infinity;
  const it = stream.open();
  try {
    for (let r = it.next(); !r.done && rows < limit; r = it.next()) {
      const take = Math.min(r.value.rows, limit - rows);
      st = welfordMerge(st, welfordOf(r.value.x, take, size));
      rows += take;
    }
  } finally {
    it.return?.(); // --max-rows may stop mid-pass: close the file
  }
  base.rows = stream.rows ?? rows;
  base.statistics = {
    ...summarise(welfordFinish(st)),
    ...(rows < (stream.rows ?? rows) ? { over_first_rows: rows } : {}),
  };
  return base;
}
