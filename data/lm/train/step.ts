/**
 * One training step of a GPT-2 as a function of (state, batch): loss and gradients through the
 * model's own forward pass, clipping at a global gradient norm, and AdamW (β 0.9/0.95, weight
 * decay on matrices and embeddings only) at the learning rate of a warmup + cosine schedule. The
 * only I/O is reading back the loss and the gradient norm.
 */
import { valueAndGrad } from "../../../autodiff/grad.ts";
import {
  type AdamState,
  adamw,
  applyStep,
  globalNorm,
  type GradientTransformation,
} from "../../../autodiff/optim.ts";
import { warmupCosineSchedule } from "../../../autodiff/schedule.ts";
import { treeMap } from "../../../autodiff/tree.ts";
import { add, div, minimum } from "../../../tensor/ops/elementwise.ts";
import { sliceAxis } from "../../../tensor/ops/shape.ts";
import { disposeReplaced, tidy } from "../../../tensor/scope.ts";
import type { Tensor } from "../../../tensor/tensor.ts";
import type { Gpt2Config } from "../config.ts";
import { forward } from "../gpt2.ts";
import type { Gpt2Params } from "../load.ts";
import { splitWindows } from "./batches.ts";
import { lmLoss } from "./loss.ts";

/** The optimiser's settings. */
export interface TrainHyper {
  /** Peak learning rate, reached at the end of warmup. */
  lr: number;
  /** The floor the cosine decays to at `steps`. */
  minLr: number;
  warmup: number;
  /** Total steps: the cosine's length. */
  steps: number;
  weightDecay: number;
  /** Global gradient-norm ceiling; 0 turns clipping off. */
  clip: number;
  b1?: number;
  b2?: number;
  eps?: number;
}

export interface LmTrainState {
  /** Steps taken so far (the next step's index). */
  step: number;
  params: Gpt2Params;
  opt: AdamState;
}

/** The learning rate of step `step` (0-based): linear warmup from 0, then cosine to minLr. */
export function lrAt(h: TrainHyper, step: number): number {
  return warmupCosineSchedule({
    peak: h.lr,
    warmupSteps: h.warmup,
    totalSteps: h.steps,
    end: h.minLr,
  })(step);
}

/** nanoGPT's split: tensors of two or more dimensions decay, biases and LayerNorm do not. */
export const decaysMatrices = (_path: string, p: Tensor): boolean => p.ndim >= 2;

export function lmOptimizer(h: TrainHyper): GradientTransformation<AdamState> {
  return adamw({
    lr: (s) => lrAt(h, s),
    b1: h.b1 ?? 0.9,
    b2: h.b2 ?? 0.95,
    eps: h.eps ?? 1e-8,
    weightDecay: h.weightDecay,
    decayMask: decaysMatrices,
  });
}

export function initTrainState(params: Gpt2Params, h: TrainHyper): LmTrainState {
  return { step: 0, params, opt: lmOptimizer(h).init(params) };
}

export interface StepResult {
  state: LmTrainState;
  /** The batch's mean loss before the update. */
  loss: number;
  /** The global gradient norm before clipping. */
  gradNorm: number;
  lr: number;
}

/**
 * One step on windows [B, T + 1] (row-major i32), optionally as `micro` micro-batches of B/micro
 * rows whose gradients are averaged (less memory, the same step up to summation order). The old
 * state's tensors that the new one does not hold are released.
 */
export async function trainStep(
  state: LmTrainState,
  windows: Int32Array,
  cfg: Gpt2Config,
  h: TrainHyper,
  o: { micro?: number } = {},
): Promise<StepResult> {
  const T = cfg.nPositions, micro = o.micro ?? 1;
  const { inputs, targets } = splitWindows(windows, T);
  const B = inputs.shape[0];
  if (!Number.isInteger(micro) || micro < 1 || B % micro !== 0) {
    throw new RangeError(`trainStep: batch ${B} does not split into ${micro} micro-batches`);
  }
  const opt = lmOptimizer(h);
  const lossOf = (p: Gpt2Params, x: Tensor, y: Tensor) => lmLoss(forward(p, x, cfg), y);
  const out = tidy(() => {
    let loss: Tensor | null = null, grads: Gpt2Params | null = null;
    const rows = B / micro;
    for (let i = 0; i < micro; i++) {
      const x = micro === 1 ? inputs : sliceAxis(inputs, 0, i * rows, (i + 1) * rows);
      const y = micro === 1 ? targets : sliceAxis(targets, 0, i * rows, (i + 1) * rows);
      const [l, g] = valueAndGrad(lossOf)(state.params, x, y) as [Tensor, Gpt2Params];
      loss = loss ? add(loss, l) : l;
      grads = grads ? treeMap((a: Tensor, b: Tensor) => add(a, b), grads, g) : g;
    }
    if (micro > 1) {
      loss = div(loss!, micro);
      grads = treeMap((a: Tensor) => div(a, micro), grads!);
    }
    const norm = globalNorm(grads);
    const scale = h.clip > 0 ? minimum(div(h.clip, norm), 1) : undefined;
    const [params, next] = applyStep(opt, grads!, state.opt, state.params, { gradScale: scale });
    return { params, opt: next, loss: loss!, norm };
  });
  const next: LmTrainState = { step: state.step + 1, params: out.params, opt: out.opt };
  const [loss, gradNorm] = [await out.loss.item(), await out.norm.item()];
  out.loss.dispose(), out.norm.dispose(), inputs.dispose(), targets.dispose();
  disposeReplaced({ params: state.params, opt: state.opt }, next);
  return { state: next, loss, gradNorm, lr: lrAt(h, state.step) };
}
