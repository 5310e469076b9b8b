/**
 * The SCAE suite's forward passes on a clean run's frozen quantities (frozen.ts), module by module
 * in model order. Every module's input is the residual the suite rebuilds, embedding + Σ upstream
 * reconstructions, centred and divided by the clean LayerNorm scale (attention: then through each
 * head's OV circuit and the clean pattern, plus the folded output bias); then top-k, ReLU, decode.
 *
 * - `chainForward` does exactly that through the residual: every upstream feature reaches every
 *   downstream one (C = all).
 * - `prunedForward` keeps only the connections of a table: downstream feature i's pre-activation is
 *   the embedding and bias terms plus, per upstream module, Σ_c (f_j/s)·V[i, c] over its C connected
 *   ids j = conn[i, c], V[i, c] = (W_enc^down)_i · c(W_dec^up)_j (attention: one per head, through
 *   W_OV,h, then mixed over positions by the pattern). The C virtual weights per feature are
 *   computed on the fly from gathered decoder rows (F_down·C·d), and the codes are gathered
 *   [N, F_down, C]; no [F_down, F_up] matrix is formed. Differentiable in every dictionary's
 *   parameters; a padded (−1) slot's weight is multiplied by 0, so unconnected pairs get no
 *   gradient.
 * Centring (LayerNorm's mean subtraction) is kept explicit so raw Hugging Face weights work; on
 * TransformerLens-processed weights, which the reference uses, it changes nothing.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { add, div, mul, relu, square, sub } from "../../tensor/ops/elementwise.ts";
import { topk } from "../../tensor/ops/index.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { mean, sum } from "../../tensor/ops/reduce.ts";
import { contiguous, expandDims, reshape, take, transpose } from "../../tensor/ops/shape.ts";
import { sddmm } from "../../tensor/ops/sparse.ts";
import type { SaeConfig } from "../config.ts";
import type { SaeParams } from "../params.ts";
import { sparseDecode, type TopKCode } from "../arch/topk_encode.ts";
import { toDense } from "../code.ts";
import type { Connections, ConnTable } from "./connections.ts";
import type { FrozenRun, HeadWeights } from "./frozen.ts";
import {
  type FanOut,
  fanOut,
  scatterContribution,
  scatterSupported,
  slotEntries,
} from "./scatter.ts";
import { type ScaeModule, type SuiteInfo, upstreamOf } from "./suite.ts";

/** Everything but the dictionaries' parameters (which the passes differentiate). */
export interface SuiteContext {
  info: SuiteInfo;
  cfgs: Record<string, SaeConfig>;
  frozen: FrozenRun;
  /** layer → its heads (attention modules only). */
  heads: Record<number, HeadWeights>;
}

export type SuiteParams = Record<string, SaeParams>;

export interface SuiteOutput {
  /** module → [N, F] pre-activations, top-k codes, [N, d] reconstructions. */
  pre: Record<string, Tensor>;
  codes: Record<string, TopKCode>;
  recon: Record<string, Tensor>;
}

/**
 * A connection table as gather indices (−1 → 0), a 0/1 mask [F_down, C, 1] and, for the scatter
 * form, the table inverted (absent: the pass gathers).
 */
export interface ConnIndex {
  idx: Tensor;
  mask: Tensor;
  C: number;
  fan?: FanOut;
}

export function connIndex(t: ConnTable): ConnIndex {
  const safe = Int32Array.from(t.ids, (v) => (v < 0 ? 0 : v));
  const m = Float32Array.from(t.ids, (v) => (v < 0 ? 0 : 1));
  return {
    idx: tensor(safe, { dtype: "i32", shape: [t.rows, t.C] }),
    mask: tensor(m, { shape: [t.rows, t.C, 1] }),
    C: t.C,
    fan: fanOut(t),
  };
}

/** Index form of every table (build once, reuse every step). */
export function connIndices(conns: Connections): Record<string, Record<string, ConnIndex>> {
  const out: Record<string, Record<string, ConnIndex>> = {};
  for (const [down, ups] of Object.entries(conns)) {
    out[down] = {};
    for (const [up, t] of Object.entries(ups)) if (t.C > 0) out[down][up] = connIndex(t);
  }
  return out;
}

const centre = (x: Tensor): Tensor => sub(x, mean(x, -1, { keepdims: true }));

/** Σ_h P_h · x_h over positions: x [H, N, F] per head → [N, F]. */
function mixHeads(pattern: Tensor, x: Tensor, B: number, T: number): Tensor {
  const [H, , F] = x.shape;
  const perHead = transpose(reshape(x, [H, B, T, F]), [1, 0, 2, 3]); // [B, H, T, F]
  return reshape(sum(matmul(pattern, perHead), 1), [B * T, F]);
}

/** Top-k of the pre-activations, ReLU, decode. */
function finish(p: SaeParams, cfg: SaeConfig, pre: Tensor, out: SuiteOutput, name: string): void {
  const [v, indices] = topk(pre, cfg.k);
  const code = { values: relu(v), indices };
  out.pre[name] = pre;
  out.codes[name] = code;
  out.recon[name] = sparseDecode(code, p.W_dec, p.b_dec);
}

/** pre = y·W_enc + b_enc, less W_enc·b_dec where the dictionary subtracts b_dec from its input. */
function encodePre(p: SaeParams, cfg: SaeConfig, y: Tensor): Tensor {
  const pre = add(matmul(y, p.W_enc), p.b_enc!);
  return cfg.apply_b_dec_to_input ? sub(pre, matmul(expandDims(p.b_dec, 0), p.W_enc)) : pre;
}

/** The attention output for normalised residual rows x [N, d]: Σ_h P_h·x·W_OV,h + b_O. */
function attnOut(x: Tensor, hw: HeadWeights, pattern: Tensor, B: number, T: number): Tensor {
  return add(mixHeads(pattern, matmul(expandDims(x, 0), hw.wOV), B, T), hw.bO);
}

/** The module's input from a residual [N, d] (before any attention). */
function moduleInput(ctx: SuiteContext, m: ScaeModule, resid: Tensor): Tensor {
  const x = div(centre(resid), ctx.frozen.scale[m.name]);
  if (m.kind === "mlp") return x;
  const { B, T } = ctx.frozen;
  return attnOut(x, ctx.heads[m.layer], ctx.frozen.pattern[m.layer], B, T);
}

/** C = all: each module reads embedding + Σ upstream reconstructions through the frozen LN/attention. */
export function chainForward(params: SuiteParams, ctx: SuiteContext): SuiteOutput {
  const out: SuiteOutput = { pre: {}, codes: {}, recon: {} };
  for (const m of ctx.info.modules) {
    let resid = ctx.frozen.embed;
    for (const u of upstreamOf(ctx.info, m.name)) resid = add(resid, out.recon[u.name]);
    const pre = encodePre(params[m.name], ctx.cfgs[m.name], moduleInput(ctx, m, resid));
    finish(params[m.name], ctx.cfgs[m.name], pre, out, m.name);
  }
  return out;
}

/**
 * The pruned pass: only the tables' connections carry upstream codes; the embedding, every upstream
 * b_dec and the module's own biases always reach it. A pair without a table contributes no codes.
 */
export function prunedForward(
  params: SuiteParams,
  ctx: SuiteContext,
  conns: Record<string, Record<string, ConnIndex>>,
): SuiteOutput {
  const out: SuiteOutput = { pre: {}, codes: {}, recon: {} };
  const { B, T } = ctx.frozen;
  for (const m of ctx.info.modules) {
    const p = params[m.name], cfg = ctx.cfgs[m.name];
    const ups = upstreamOf(ctx.info, m.name);
    const s = ctx.frozen.scale[m.name];
    let base = ctx.frozen.embed;
    for (const u of ups) base = add(base, params[u.name].b_dec);
    let pre = encodePre(p, cfg, moduleInput(ctx, m, base));
    const tables = conns[m.name] ?? {};
    const hw = m.kind === "attn" ? ctx.heads[m.layer] : null;
    // Per-head encoder directions pulled back through OV, [F, d, H] (attention), or W_encᵀ [F, d, 1].
    const U = hw
      ? transpose(matmul(hw.wOV, p.W_enc), [2, 1, 0])
      : expandDims(transpose(p.W_enc), 2);
    let acc: Tensor | null = null; // [H, N, F] (MLP: H = 1)
    for (const u of ups) {
      const c = tables[u.name];
      if (!c) continue;
      const g = virtualContribution(out.codes[u.name], s, params[u.name].W_dec, U, c);
      acc = acc ? add(acc, g) : g;
    }
    if (acc) {
      pre = add(
        pre,
        hw ? mixHeads(ctx.frozen.pattern[m.layer], acc, B, T) : reshape(acc, pre.shape),
      );
    }
    finish(p, cfg, pre, out, m.name);
  }
  return out;
}

/**
 * Σ_c (f/s)[n, conn[i, c]]·V[i, c, h] with V[i, c, h] = c(W_dec)[conn[i, c]]·U[i, :, h]:
 * code [N, k] of F_up features, s [N, 1], W_dec [F_up, d], U [F_down, d, H] → [H, N, F_down].
 * Scatter form where `scatterRule` picks it, else the gather form (codes gathered [F_down, N, C]).
 */
function virtualContribution(
  code: TopKCode,
  s: Tensor,
  W_dec: Tensor,
  U: Tensor,
  c: ConnIndex,
): Tensor {
  const [Fd, d, H] = U.shape;
  const vals = div(code.values, s);
  if (scatterRule(c, vals, W_dec)) {
    // V for the connected slots only: one sddmm of the directions [F_down·H, d] with decoder rows.
    const { rows, cols } = slotEntries(c.fan!, H, W_dec.backend);
    const dirs = reshape(contiguous(transpose(U, [0, 2, 1])), [Fd * H, d]);
    const Vc = reshape(sddmm(dirs, centre(W_dec), rows, cols), [c.fan!.slots.length, H]);
    return scatterContribution(vals, code.indices, Vc, c.fan!);
  }
  const V = mul(matmul(take(centre(W_dec), c.idx, 0), U), c.mask); // [F_down, C, H]
  const f = toDense({ kind: "rows", values: vals, indices: code.indices }, W_dec.shape[0]);
  const gathered = transpose(take(f, c.idx, 1), [1, 0, 2]); // [F_down, N, C]
  return transpose(matmul(gathered, V), [2, 1, 0]);
}

/**
 * Scatter wherever the backend has its kernels (host memory, f32/f64), else gather (the device
 * backends). Scatter costs N·k·fan-out·H against the gather's N·F_down·C·H, i.e. k/F_up of it (the
 * mean fan-out is F_down·C/F_up), in scalar loops rather than a batched matmul; measured faster at
 * every k up to F_up (docs/scae.md), so k does not enter the rule.
 */
export function scatterRule(c: ConnIndex, vals: Tensor, W_dec: Tensor): boolean {
  return c.fan !== undefined && scatterSupported(vals, W_dec);
}

/** FVU = Σ‖y − ŷ‖² / Σ‖y − ȳ‖² over the rows. */
export function fvu(y: Tensor, yhat: Tensor): Tensor {
  return div(sum(square(sub(y, yhat))), sum(square(sub(y, mean(y, 0, { keepdims: true })))));
}

/** The residual the suite rebuilds: embedding + every module's reconstruction, [N, d]. */
export function suiteResidual(out: SuiteOutput, frozen: FrozenRun): Tensor {
  let r = frozen.embed;
  for (const x of Object.values(out.recon)) r = add(r, x);
  return r;
}
