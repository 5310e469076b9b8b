/**
 * Neuron resampling (dictionary_learning): features dead for long enough are re-pointed at
 * inputs the dictionary reconstructs badly, drawn without replacement with probability ∝ ‖x − x̂‖.
 * Encoder column = sample × (mean alive encoder norm) × 0.2, decoder row = the unit sample,
 * b_enc = 0, and their Adam moments are zeroed so stale statistics do not steer them.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import * as random from "../../tensor/random.ts";
import { ones, tensor, zeros } from "../../tensor/ops/create.ts";
import {
  add,
  cast,
  div,
  ge,
  gt,
  log,
  maximum,
  mul,
  sub,
  where,
} from "../../tensor/ops/elementwise.ts";
import { norm, sum } from "../../tensor/ops/reduce.ts";
import { scatterAdd, topk } from "../../tensor/ops/index.ts";
import { broadcastTo, reshape, take, transpose } from "../../tensor/ops/shape.ts";
import { disposeReplaced, tidy } from "../../tensor/scope.ts";
import type { AdamState } from "../../autodiff/optim.ts";
import type { SaeParams } from "../params.ts";
import type { TrainState } from "./step.ts";

interface Replacement {
  /** bool [F]: features being resampled. */
  cols: Tensor;
  /** New encoder [d, F], decoder [F, d] and b_enc values at those features (zero elsewhere). */
  enc: Tensor;
  dec: Tensor;
}

function replaceParams(p: SaeParams, r: Replacement): SaeParams {
  const colMask = reshape(r.cols, [1, -1]), rowMask = reshape(r.cols, [-1, 1]);
  return {
    ...p,
    W_enc: add(where(colMask, 0, p.W_enc), r.enc),
    W_dec: add(where(rowMask, 0, p.W_dec), r.dec),
    ...(p.b_enc ? { b_enc: where(r.cols, 0, p.b_enc) } : {}),
  };
}

/** Zero the moments of resampled entries in every Adam state inside `opt` (it may be a chain). */
function zeroMoments(opt: unknown, cols: Tensor): unknown {
  if (Array.isArray(opt)) return opt.map((o) => zeroMoments(o, cols));
  if (opt && typeof opt === "object" && "mu" in opt && "nu" in opt) {
    const s = opt as AdamState;
    const fix = (m: SaeParams) => ({
      ...m,
      W_enc: where(reshape(cols, [1, -1]), 0, m.W_enc),
      W_dec: where(reshape(cols, [-1, 1]), 0, m.W_dec),
      ...(m.b_enc ? { b_enc: where(cols, 0, m.b_enc) } : {}),
    });
    return { ...s, mu: fix(s.mu as SaeParams), nu: fix(s.nu as SaeParams) };
  }
  return opt;
}

/** Resample features silent for at least `deadTokens` tokens; returns the new state and how many. */
export async function resampleDead(
  state: TrainState,
  x: Tensor,
  xhat: Tensor,
  deadTokens: number,
  batch: number,
): Promise<{ state: TrainState; count: number }> {
  // Under tidy: outside it the comparison's scalar operand would stay allocated after every resample.
  const deadMask = tidy(() => ge(state.sinceFired, deadTokens));
  const deadFlags = await deadMask.data();
  deadMask.dispose();
  const deadIdx = [...deadFlags.keys()].filter((i) => deadFlags[i]);
  const n = Math.min(deadIdx.length, batch);
  if (n === 0) return { state, count: 0 };
  const [kSample, kNext] = random.split(state.key);
  const next = tidy(() => {
    const F = state.sinceFired.size;
    const [, rows] = topk(
      add(
        log(maximum(norm(sub(x, xhat), -1), 1e-30)),
        random.gumbel(kSample, [x.shape[0]], { dtype: x.dtype }),
      ),
      n,
    );
    const samples = take(x, rows, 0);
    const idx = tensor(new Int32Array(deadIdx.slice(0, n)));
    const cols = gt(scatterAdd(zeros([F]), idx, ones([n]), 0), 0);
    const W_enc = state.params.W_enc;
    const colNorms = norm(W_enc, 0);
    const alive = cast(cols, "f32");
    const aliveNorm = div(sum(mul(colNorms, sub(1, alive))), maximum(sub(F, sum(alive)), 1));
    const encCols = transpose(mul(samples, mul(aliveNorm, 0.2)));
    const d = W_enc.shape[0];
    const enc = scatterAdd(
      zeros(W_enc.shape),
      broadcastTo(reshape(idx, [1, n]), [d, n]),
      encCols,
      1,
    );
    const unit = div(samples, norm(samples, -1, { keepdims: true }));
    const dec = scatterAdd(
      zeros(state.params.W_dec.shape),
      broadcastTo(reshape(idx, [n, 1]), [n, unit.shape[1]]),
      unit,
      0,
    );
    const r: Replacement = { cols, enc, dec };
    return {
      params: replaceParams(state.params, r),
      opt: zeroMoments(state.opt, cols),
      sinceFired: where(cols, 0, state.sinceFired),
    };
  });
  disposeReplaced([state.params, state.opt, state.sinceFired], [
    next.params,
    next.opt,
    next.sinceFired,
  ]);
  return { state: { ...state, ...next, key: kNext, numDead: deadIdx.length - n }, count: n };
}
