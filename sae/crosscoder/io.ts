/**
 * Crosscoders on disk: the SAELens-style folder (cfg.json + sae_weights.safetensors) with per-input
 * tensors W_enc [L, d_in, d_sae], W_dec [L, d_sae, d_in], b_enc [d_sae], b_dec [L, d_in]; our full
 * config (n_inputs, code_norm, dfc_shares, …) under "sparsecoder". A DFC also writes its partition
 * as a top-level "partition": {"features": F, "exclusive": [[0, n_0], [n_0, n_0 + n_1], …],
 * "shared": [Σn, F]}. Loading checks that partition against the config and the weights against the
 * partition, and reports any disagreement rather than repairing it.
 */
import type { SaeConfig } from "../config.ts";
import type { SaeParams } from "../params.ts";
import {
  checkPartition,
  PartitionError,
  partitionsEqual,
  verifyPartitionIntegrity,
} from "./partition.ts";
import { dfcPartition } from "../arch/registry.ts";

/** Extra top-level cfg.json fields of a crosscoder (the DFC partition). */
export function crosscoderJson(cfg: SaeConfig): Record<string, unknown> {
  const p = dfcPartition(cfg);
  return p ? { n_inputs: cfg.n_inputs, partition: p } : { n_inputs: cfg.n_inputs };
}

/** Validate a loaded DFC: the stored partition is well formed, matches dfc_shares, and forbidden weights are exactly zero. */
export async function checkLoadedCrosscoder(
  raw: Record<string, unknown>,
  cfg: SaeConfig,
  params: SaeParams,
  cfgPath: string,
  wPath: string,
  fail: (msg: string) => never,
): Promise<void> {
  const expected = dfcPartition(cfg);
  if (!expected) return;
  if (raw.partition === undefined) fail(`${cfgPath}: a dfc dictionary needs a "partition" field`);
  try {
    checkPartition(raw.partition, cfg.d_sae, cfg.n_inputs, `${cfgPath}: partition`);
  } catch (e) {
    if (e instanceof PartitionError) fail(e.message);
    throw e;
  }
  const stored = raw.partition as typeof expected;
  if (!partitionsEqual(stored, expected)) {
    fail(
      `${cfgPath}: partition ${
        JSON.stringify({ exclusive: stored.exclusive, shared: stored.shared })
      } does not match dfc_shares ${JSON.stringify(cfg.dfc_shares)} (expected ${
        JSON.stringify({ exclusive: expected.exclusive, shared: expected.shared })
      })`,
    );
  }
  const r = await verifyPartitionIntegrity(params, expected);
  if (!r.ok) {
    const bad = r.inputs.filter((i) => !(i.encoderMax === 0 && i.decoderMax === 0)).map((i) =>
      `input ${i.input}: max |W_enc| ${i.encoderMax}, max |W_dec| ${i.decoderMax}`
    );
    fail(
      `${wPath}: weights break the partition in ${cfgPath}: forbidden entries are not zero (${
        bad.join("; ")
      })`,
    );
  }
}

/** A resumed DFC training state must keep its partition in the weights and in every Adam moment; report the first break. */
export async function checkResumedDfc(
  params: SaeParams,
  opt: unknown,
  cfg: SaeConfig,
  where: string,
): Promise<void> {
  const p = dfcPartition(cfg);
  if (!p) return;
  const records: [string, SaeParams][] = [["params", params]];
  const visit = (o: unknown, at: string): void => {
    if (Array.isArray(o)) o.forEach((x, i) => visit(x, `${at}[${i}]`));
    else if (o && typeof o === "object" && "mu" in o && "nu" in o) {
      const s = o as { mu: SaeParams; nu: SaeParams };
      records.push([`${at}.mu`, s.mu], [`${at}.nu`, s.nu]);
    }
  };
  visit(opt, "opt");
  for (const [name, r] of records) {
    const rep = await verifyPartitionIntegrity(r, p);
    if (!rep.ok) {
      throw new PartitionError(
        `${where}: ${name} breaks the DFC partition (max |forbidden entry| ${rep.max}); refusing to resume`,
      );
    }
  }
}
