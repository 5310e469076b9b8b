/**
 * What an SCAE suite's pruned pass takes from the clean model: from one clean run, the embedding
 * (`blocks.0.hook_resid_pre`), each module's LayerNorm scale (ln1 for attn_l, ln2 for mlp_l), each
 * layer's attention pattern, and each module's clean input and output; from the weights, each
 * head's OV circuit with ln1's weight folded in, and the attention output bias with ln1's bias and
 * the value biases folded in (exact, since every pattern row sums to 1). With these frozen, the
 * suite's pass is linear in the upstream codes up to each module's top-k.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, mul } from "../../tensor/ops/elementwise.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { sum } from "../../tensor/ops/reduce.ts";
import { expandDims, mT, reshape, sliceAxis, stack } from "../../tensor/ops/shape.ts";
import { crossEntropy } from "../../autodiff/fused_ops.ts";
import { type LanguageModel, runWithCache, type Tokens } from "../../data/lm/model.ts";
import { layerNorm, linear, makeHook, tokenTensor, widen16 } from "../../data/lm/common.ts";
import { ConfigError } from "../config.ts";
import type { ResidualStyle, SuiteInfo } from "./suite.ts";

export interface FrozenRun {
  B: number;
  T: number;
  tokens: Tensor;
  /** [N, d], N = B·T: the residual entering block 0 (embedding + positions). */
  embed: Tensor;
  /** module → [N, 1] LayerNorm scale its input is divided by. */
  scale: Record<string, Tensor>;
  /** layer → [B, H, T, T] attention pattern. */
  pattern: Record<number, Tensor>;
  /** module → [N, d] clean input (hook_in) and output (hook_out). */
  inputs: Record<string, Tensor>;
  targets: Record<string, Tensor>;
}

/** One layer's attention as the suite sees it: per-head OV [H, d, d] and the folded output bias. */
export interface HeadWeights {
  wOV: Tensor;
  bO: Tensor;
}

/** The residual style of a model family; other families are refused (their attention differs). */
export function residualStyle(model: LanguageModel): ResidualStyle {
  if (model.family === "gpt2") return "sequential";
  if (model.family === "gpt_neox") return model.cfg.parallelResidual ? "parallel" : "sequential";
  throw new ConfigError(`scae: suites run on gpt2 and gpt_neox models, not ${model.family}`);
}

/** The clean run's frozen quantities for every module of the suite. */
export function frozenRun(model: LanguageModel, tokens: Tokens, info: SuiteInfo): FrozenRun {
  const ids = tokenTensor(tokens, model.family, model.cfg.vocabSize, Infinity);
  const [B, T] = ids.shape, N = B * T;
  const names = new Set(["blocks.0.hook_resid_pre"]);
  for (const m of info.modules) {
    names.add(m.hookIn).add(m.hookOut);
    names.add(`blocks.${m.layer}.${m.kind === "attn" ? "ln1" : "ln2"}.hook_scale`);
    if (m.kind === "attn") names.add(`blocks.${m.layer}.attn.hook_pattern`);
  }
  const { cache } = runWithCache(model, ids, [...names], { stopEarly: true });
  const rows = (t: Tensor) => reshape(t, [N, t.shape[t.ndim - 1]]);
  const out: FrozenRun = {
    B,
    T,
    tokens: ids,
    embed: rows(cache["blocks.0.hook_resid_pre"]),
    scale: {},
    pattern: {},
    inputs: {},
    targets: {},
  };
  for (const m of info.modules) {
    out.scale[m.name] = reshape(
      cache[`blocks.${m.layer}.${m.kind === "attn" ? "ln1" : "ln2"}.hook_scale`],
      [N, 1],
    );
    if (m.kind === "attn") out.pattern[m.layer] = cache[`blocks.${m.layer}.attn.hook_pattern`];
    out.inputs[m.name] = rows(cache[m.hookIn]);
    out.targets[m.name] = rows(cache[m.hookOut]);
  }
  return out;
}

/** Layer `l`'s heads: W_OV,h = diag(ln1.w)·W_V,h·W_O,h and b_O + Σ_h (ln1.b·W_V,h + b_V,h)·W_O,h. */
export function headWeights(model: LanguageModel, l: number): HeadWeights {
  const { dModel: d, nHead: H } = model.cfg, hd = d / H;
  let WV: Tensor[], bV: Tensor[], WO: Tensor[], bO: Tensor, lw: Tensor, lb: Tensor;
  if (model.family === "gpt2") {
    const p = model.params.blocks[l];
    const wq = widen16(p.wQkv), wo = widen16(p.wO);
    const at = (h: number) => [2 * d + h * hd, 2 * d + (h + 1) * hd] as const;
    WV = range(H).map((h) => sliceAxis(wq, 1, ...at(h)));
    bV = range(H).map((h) => sliceAxis(widen16(p.bQkv), 0, ...at(h)));
    WO = range(H).map((h) => sliceAxis(wo, 0, h * hd, (h + 1) * hd));
    [bO, lw, lb] = [widen16(p.bO), widen16(p.ln1.w), widen16(p.ln1.b)];
  } else if (model.family === "gpt_neox") {
    const p = model.params.blocks[l];
    const wq = widen16(p.wQkv), wo = widen16(p.wO);
    const at = (h: number) => [h * 3 * hd + 2 * hd, (h + 1) * 3 * hd] as const;
    WV = range(H).map((h) => mT(sliceAxis(wq, 0, ...at(h))));
    bV = range(H).map((h) => sliceAxis(widen16(p.bQkv), 0, ...at(h)));
    WO = range(H).map((h) => mT(sliceAxis(wo, 1, h * hd, (h + 1) * hd)));
    [bO, lw, lb] = [widen16(p.bO), widen16(p.ln1.w), widen16(p.ln1.b)];
  } else {
    throw new ConfigError(`scae: suites run on gpt2 and gpt_neox models, not ${model.family}`);
  }
  const wOV = stack(range(H).map((h) => matmul(mul(WV[h], expandDims(lw, 1)), WO[h])));
  let b = bO;
  for (let h = 0; h < H; h++) {
    b = add(
      b,
      reshape(matmul(expandDims(add(matmul(expandDims(lb, 0), WV[h]), bV[h]), 0), WO[h]), [d]),
    );
  }
  return { wOV, bO: b };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * Next-token cross-entropy (mean over B·(T − 1) positions) of unembed(ln_final(resid)) for a
 * residual [N, d] built by the suite: the final LayerNorm is recomputed, not frozen.
 */
export function suiteCe(model: LanguageModel, resid: Tensor, frozen: FrozenRun): Tensor {
  const { B, T } = frozen, d = model.cfg.dModel;
  const hook = makeHook({});
  const x = reshape(resid, [B, T, d]);
  let logits: Tensor;
  if (model.family === "gpt2") {
    const p = model.params;
    const u = layerNorm(hook, "ln_final", x, p.lnF.w, p.lnF.b, model.cfg.layerNormEps);
    logits = linear(u, mT(widen16(p.head ?? p.wte)), p.headBias);
  } else if (model.family === "gpt_neox") {
    const p = model.params;
    const u = layerNorm(hook, "ln_final", x, p.lnF.w, p.lnF.b, model.cfg.layerNormEps);
    logits = linear(u, mT(widen16(p.embedOut)), p.headBias);
  } else {
    throw new ConfigError(`scae: suites run on gpt2 and gpt_neox models, not ${model.family}`);
  }
  const ce = crossEntropy(sliceAxis(logits, 1, 0, T - 1), sliceAxis(frozen.tokens, 1, 1, T));
  return mul(sum(ce), 1 / (B * (T - 1)));
}
