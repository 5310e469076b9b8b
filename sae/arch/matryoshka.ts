/**
 * Matryoshka BatchTopK SAE (dictionary_learning's MatryoshkaBatchTopKTrainer): a BatchTopK code
 * whose features form nested groups; every prefix of groups must reconstruct x on its own.
 * loss = Σ_m w_m·‖x − x̂_m‖² + α·AuxK, x̂_m decoding only features below the m-th boundary.
 * Weights default to uniform 1/G (cfg.matryoshka_weights).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, cast, lt, mul } from "../../tensor/ops/elementwise.ts";
import { type Architecture, saeShapes, targetOrInput } from "./architecture.ts";
import { type Code, decodeWith } from "../code.ts";
import { reconstruction } from "./losses.ts";
import { batchTopkSae } from "./batchtopk.ts";
import { batchTopkSelectOf } from "./topk_encode.ts";
import { topkFamilyLoss } from "./topk.ts";
import { initParams } from "../params.ts";

/** Doubling group sizes (F/2^m … F/4, F/2 reversed: small groups first) as in the Matryoshka papers' defaults. */
function defaultGroups(F: number): number[] {
  const out: number[] = [];
  let size = Math.max(1, Math.floor(F / 16)), used = 0;
  while (used + size < F) {
    out.push(size);
    used += size;
    size *= 2;
  }
  out.push(F - used);
  return out;
}

export const matryoshkaSae: Architecture = {
  sparsity: "batchtopk",
  thresholdUse: "learned",
  input: "rows",
  needsTargets: false,
  nestedGroups: true,
  ghostGrads: false,
  saelensName: "jumprelu",
  defaults: { reference: "dictionary_learning's trainer", matryoshka_groups: defaultGroups },
  paramShapes: (cfg) => saeShapes(cfg),
  target: targetOrInput,
  check(cfg, fail) {
    cfg.matryoshka_groups.forEach((g, i) => {
      if (typeof g !== "number" || !Number.isInteger(g) || g <= 0) {
        fail(
          `sae config: matryoshka_groups[${i}] must be a positive integer, got ${
            JSON.stringify(g)
          }`,
        );
      }
    });
    if (cfg.matryoshka_groups.reduce((a, b) => a + b, 0) !== cfg.d_sae) {
      fail(
        `sae config: matryoshka_groups ${
          JSON.stringify(cfg.matryoshka_groups)
        } must sum to d_sae = ${cfg.d_sae}`,
      );
    }
  },
  init: initParams,
  encode: batchTopkSae.encode,
  encodeInference: batchTopkSae.encodeInference,
  decode: (p, code) => decodeWith(code, p.W_dec, p.b_dec),
  loss(p, { x, y }, cfg, ctx) {
    return topkFamilyLoss(
      p,
      x,
      y ?? x,
      cfg,
      ctx,
      batchTopkSelectOf(cfg.k * x.shape[0], ctx.batchShare),
      (code, target) => {
        const coo = (code as Extract<Code, { kind: "coo" }>).coo;
        let total: Tensor | null = null, xhat: Tensor | null = null, end = 0;
        cfg.matryoshka_groups.forEach((g, m) => {
          end += g;
          const keep = cast(lt(coo.cols, end), coo.values.dtype);
          const prefix: Code = {
            kind: "coo",
            coo: { ...coo, values: mul(coo.values, keep) },
            batch: code.kind === "coo" ? code.batch : 0,
          };
          xhat = decodeWith(prefix, p.W_dec, p.b_dec);
          const term = mul(reconstruction(target, xhat), cfg.matryoshka_weights[m]);
          total = total ? add(total, term) : term;
        });
        return { recon: total!, xhat: xhat! };
      },
    );
  },
};
