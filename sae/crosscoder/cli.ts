/**
 * The crosscoder side of the `sae` command (cli.ts calls these hooks): the extra train options,
 * paired synthetic data for --arch crosscoder|batchtopk-crosscoder|dfc without --data, and the
 * evaluation report (reconstruction per input, sparsity, model-diffing views, DFC partition use).
 */
import type { SaeConfig, SaeConfigInput } from "../config.ts";
import type { Batch } from "../arch/architecture.ts";
import type { SaeParams } from "../params.ts";
import { CODE_NORMS, type CodeNorm } from "./config.ts";
import { isSet, type Threshold } from "../threshold.ts";
import { evaluateCrosscoder } from "./eval.ts";
import { partitionSizes } from "./partition.ts";
import { exclusiveCounts, histogram, partitionUsage, relativeDecoderNorms } from "./diffing.ts";
import {
  makePairedSynthetic,
  type PairedConfig,
  type SyntheticConfig,
} from "../../data/synthetic.ts";
import { pairedData } from "./paired_source.ts";
import { snakeKeys } from "../io/file_keys.ts";
import type { DataSource } from "../../data/sources.ts";
import { dfcPartition } from "../arch/registry.ts";

export const CROSSCODER_FLAGS = ["inputs", "shares", "code-norm", "recon", "synthetic-exclusive"];

export const CROSSCODER_HELP = `
crosscoders (--arch crosscoder | batchtopk-crosscoder | dfc; --data of shape [N, L, d]):
  --inputs L         inputs (models or layers) of the synthetic paired data (default 2; from --data otherwise)
  --shares P,P,...   DFC exclusive share of each input (default 0.05 each): sizes floor(F·p)
  --code-norm NAME   ${CODE_NORMS.join(" | ")} (default crosscoder: Σ_l ‖W_dec[l,i]‖)
  --recon KIND       squared (default) | unsquared (mean ‖x − x̂‖, crosscoder_learning's)
  --synthetic-exclusive N   true features exclusive to each synthetic model (default nFeatures/20)`;

type Flags = Record<string, string | true>;

/** Crosscoder fields from the command line; `fail` throws the CLI's usage error. */
export function crosscoderFlags(
  flags: Flags,
  layers: number | undefined,
  fail: (msg: string) => never,
): Partial<SaeConfigInput> {
  const val = (name: string): string | undefined => {
    const v = flags[name];
    if (v === true) fail(`--${name} needs a value`);
    return v as string | undefined;
  };
  const out: Partial<SaeConfigInput> = {};
  const inputs = val("inputs");
  if (inputs !== undefined) {
    const n = Number(inputs);
    if (!Number.isInteger(n) || n < 1) {
      fail(`--inputs must be a positive integer, got ${JSON.stringify(inputs)}`);
    }
    if (layers !== undefined && layers !== n) {
      fail(`--inputs ${n} disagrees with the data's ${layers} inputs`);
    }
    out.n_inputs = n;
  } else if (layers !== undefined) out.n_inputs = layers;
  const shares = val("shares");
  if (shares !== undefined) {
    const s = shares.split(",").map(Number);
    if (s.some((p) => !Number.isFinite(p))) {
      fail(`--shares must be comma-separated numbers, got ${JSON.stringify(shares)}`);
    }
    out.dfc_shares = s;
    out.n_inputs ??= s.length;
  }
  const norm = val("code-norm");
  if (norm !== undefined) {
    if (!CODE_NORMS.includes(norm as CodeNorm)) {
      fail(`--code-norm must be one of ${CODE_NORMS.join(", ")}, got ${JSON.stringify(norm)}`);
    }
    out.code_norm = norm as CodeNorm;
  }
  const recon = val("recon");
  if (recon !== undefined) {
    if (recon !== "squared" && recon !== "unsquared") {
      fail(`--recon must be squared or unsquared, got ${JSON.stringify(recon)}`);
    }
    out.crosscoder_recon = recon;
  }
  return out;
}

/** The paired synthetic config for a crosscoder run (models = inputs, 5% of the features exclusive to each by default). */
export function pairedConfig(
  syn: SyntheticConfig,
  models: number,
  exclusive?: number,
): PairedConfig {
  const { layers: _l, layerDrift: _d, ...rest } = syn;
  return { ...rest, models, exclusive: exclusive ?? Math.max(1, Math.floor(syn.nFeatures / 20)) };
}

/** A data source from a saved data.json config: paired configs have "models". */
export function pairedSource(c: PairedConfig): DataSource {
  return pairedData(makePairedSynthetic(c));
}

/** Crosscoder fields for `sae info`: inputs, code norm, and a DFC's partition sizes. */
export function crosscoderInfo(cfg: SaeConfig): Record<string, unknown> {
  const part = dfcPartition(cfg);
  const sizes = part && partitionSizes(part);
  return {
    n_inputs: cfg.n_inputs,
    code_norm: cfg.code_norm,
    ...(sizes
      ? { partition: `exclusive ${sizes.exclusive.join(" + ")}, shared ${sizes.shared}` }
      : {}),
  };
}

/** Evaluation table plus model-diffing views; `json` is what eval.json / --json hold. */
export async function crosscoderReport(
  params: SaeParams,
  cfg: SaeConfig,
  batches: Iterable<Batch> | AsyncIterable<Batch>,
  threshold?: Threshold,
): Promise<{ json: Record<string, unknown>; text: string }> {
  const m = await evaluateCrosscoder(params, cfg, batches, isSet(threshold) ? { threshold } : {});
  const { fired: _f, activation: _a, ...scalars } = m;
  const json: Record<string, unknown> = { ...scalars };
  const lines = [
    `tokens ${m.tokens}   MSE ${m.mse.toPrecision(4)}   FVU ${m.fvu.toFixed(4)}   L0 ${
      m.l0.toFixed(2)
    }   alive ${(100 * m.frac_alive).toFixed(1)}% (${m.dead_features} dead)`,
    `per input: ${
      m.fvu_per_input.map((f, l) =>
        `input ${l} FVU ${f.toFixed(4)} MSE ${m.mse_per_input[l].toPrecision(4)}`
      ).join("; ")
    }`,
  ];
  if ((cfg.n_inputs ?? 1) >= 2) {
    const rel = await relativeDecoderNorms(params.W_dec);
    const counts = exclusiveCounts(rel);
    const h = histogram(rel, { bins: 10 });
    json.relative_norm = snakeKeys({ ...counts, histogram: h.counts });
    lines.push(`relative decoder norm ‖B‖/(‖A‖+‖B‖), 10 bins over [0, 1]: ${h.counts.join(" ")}`);
    lines.push(
      `effectively exclusive (r < 0.1 / r > 0.9): A ${counts.onlyA}, B ${counts.onlyB}; shared ${counts.shared}; no decoder ${counts.noDecoder}`,
    );
    const part = dfcPartition(cfg);
    if (part) {
      const usage = partitionUsage(part, m, rel);
      json.partition_usage = usage.map(snakeKeys);
      for (const u of usage) {
        lines.push(
          `  ${u.set.padEnd(12)} ${
            String(u.features).padStart(6)
          } features, ${u.alive} alive, mean frequency ${
            u.meanFrequency.toExponential(2)
          }, activation share ${(100 * u.activationShare).toFixed(1)}%, mean relative norm ${
            u.meanRelativeNorm.toFixed(3)
          }`,
        );
      }
    }
  }
  return { json, text: lines.join("\n") };
}
