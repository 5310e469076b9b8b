/**
 * The direct path from a hook point to the logits, as a linear map: a vector written at the hook
 * reaches the residual stream through the matrices after it (an MLP's hook_post through W_out, an
 * attention's hook_z through W_O; residual-stream hooks directly), then the final norm and the
 * unembedding. The final norm is not linear; the map keeps what is linear in it and drops the rest:
 *   - LayerNorm's centring (x − mean x) is kept: it is a projection, exact for any vector;
 *   - its division by the position's scale √(var + eps) is dropped: one positive number per
 *     position, it changes no ranking of tokens (TransformerLens's fold_ln and SAE-Vis do the same);
 *   - its weight γ (RMSNorm's w, Gemma's 1 + w) is folded in elementwise; its bias is dropped, as
 *     it does not depend on the vector. The same holds for Gemma-2's post-norms after W_out and
 *     W_O, and its final logit soft-cap (monotone) is ignored.
 * Logit effects (sae/eval/logit_effects.ts) are this map applied to decoder rows, less their mean
 * over the vocabulary (TransformerLens's centred unembedding), so they equal SAE-Vis's numbers for
 * a dictionary on the processed model.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add } from "../../tensor/ops/elementwise.ts";
import { mT } from "../../tensor/ops/shape.ts";
import { widen16 } from "./common.ts";
import type { LanguageModel } from "./model.ts";

export interface DirectLogitMap {
  /**
   * Matrices [in, out] applied in turn to take a hook-space vector into the residual stream, each
   * optionally followed by an elementwise weight (Gemma-2's post-norms); empty for a hook in it.
   */
  toResidual: { w: Tensor; gamma?: Tensor }[];
  /** How the vector gets there, for the record ("direct", "W_out of block 0", …). */
  through: string;
  /** The final norm's weight [d], folded in. */
  gamma: Tensor;
  /** The final norm subtracts the mean over d (LayerNorm; not RMSNorm). */
  center: boolean;
  /** [V, d] the unembedding. */
  unembed: Tensor;
}

/** Hooks whose vector lies in the residual stream (or is the final norm's normalised input). */
const RESIDUAL =
  /^(hook_embed|hook_pos_embed|blocks\.\d+\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out)|ln_final\.hook_normalized)$/;

/**
 * The direct logit map of `hook` in `model`. A hook that does not reach the residual stream
 * linearly (queries, keys, norms' scales, an MLP's pre-activation) is a RangeError that says so.
 */
export function directLogitMap(model: LanguageModel, hook: string): DirectLogitMap {
  const final = finalNorm(model);
  if (RESIDUAL.test(hook)) return { toResidual: [], through: "direct", ...final };
  const m = /^blocks\.(\d+)\.(mlp\.hook_post|attn\.hook_z)$/.exec(hook);
  const l = m ? Number(m[1]) : -1;
  if (!m || l >= model.cfg.nLayer) {
    throw new RangeError(
      `direct logits: ${hook} does not reach the residual stream linearly (residual-stream hooks, hook_attn_out, hook_mlp_out, mlp.hook_post and attn.hook_z do)`,
    );
  }
  const mlp = m[2] === "mlp.hook_post";
  const through = `${mlp ? "W_out" : "W_O"} of block ${l}`;
  // GPT-2's Conv1D weights are stored [in, out]; the other families' nn.Linear ones [out, in].
  switch (model.family) {
    case "gpt2": {
      const b = model.params.blocks[l];
      return { toResidual: [{ w: widen16(mlp ? b.wOut : b.wO) }], through, ...final };
    }
    case "gpt_neox": {
      const b = model.params.blocks[l];
      return { toResidual: [{ w: mT(widen16(mlp ? b.wOut : b.wO)) }], through, ...final };
    }
    case "llama":
    case "qwen2": {
      const b = model.params.blocks[l];
      return { toResidual: [{ w: mT(widen16(mlp ? b.wDown : b.wO)) }], through, ...final };
    }
    case "gemma2": {
      const b = model.params.blocks[l];
      const post = add(widen16(mlp ? b.ln2Post : b.ln1Post), 1);
      return {
        toResidual: [{ w: mT(widen16(mlp ? b.wDown : b.wO)), gamma: post }],
        through: `${through}, its post-norm's weight`,
        ...final,
      };
    }
  }
}

function finalNorm(model: LanguageModel): Pick<DirectLogitMap, "gamma" | "center" | "unembed"> {
  switch (model.family) {
    case "gpt2": {
      const p = model.params;
      return { gamma: widen16(p.lnF.w), center: true, unembed: widen16(p.head ?? p.wte) };
    }
    case "gpt_neox": {
      const p = model.params;
      return { gamma: widen16(p.lnF.w), center: true, unembed: widen16(p.embedOut) };
    }
    case "llama":
    case "qwen2":
      return {
        gamma: widen16(model.params.lnF),
        center: false,
        unembed: widen16(model.params.head),
      };
    case "gemma2": {
      const p = model.params;
      return { gamma: add(widen16(p.lnF), 1), center: false, unembed: widen16(p.head) };
    }
  }
}
