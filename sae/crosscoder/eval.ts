/**
 * Evaluation of crosscoders over batches of [B, L, d]: reconstruction over the flattened L·d vector
 * and per input, sparsity, and per-feature firing counts (which diffing.ts turns into views).
 * Definitions as in metrics.ts: FVU = Σ_d Var(x − x̂)_d / Σ_d Var(x_d) over all tokens.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { zeros } from "../../tensor/ops/create.ts";
import { cast, gt, square, sub } from "../../tensor/ops/elementwise.ts";
import { max, sum } from "../../tensor/ops/reduce.ts";
import { scatterAdd } from "../../tensor/ops/index.ts";
import { dispose, tidy } from "../../tensor/scope.ts";
import type { Batch } from "../arch/architecture.ts";
import { architecture } from "../arch/registry.ts";
import { asCoo, type Code, isPerInput, l0PerRow, toDense } from "../code.ts";
import type { Threshold } from "../threshold.ts";
import type { SaeConfig } from "../config.ts";
import type { SaeParams } from "../params.ts";
import { flatInput } from "./crosscoder.ts";

export interface CrosscoderMetrics {
  tokens: number;
  /** mean Σ_{l,d} (x − x̂)² per token. */
  mse: number;
  fvu: number;
  /** Per input l: mean Σ_d (x_l − x̂_l)² and FVU. */
  mse_per_input: number[];
  fvu_per_input: number[];
  /** Features per token (per-input codes: each input's count, averaged over inputs). */
  l0: number;
  frac_alive: number;
  dead_features: number;
  /** Tokens on which each feature fired, and its summed activation. */
  fired: Float64Array;
  activation: Float64Array;
}

/**
 * Per feature, the tokens it fired on and its summed activation. With per-input codes a feature
 * fires on a token when any input keeps it, and its activation there is f (the same value in
 * every input that keeps it).
 */
function firing(code: Code, F: number): [Tensor, Tensor] {
  if (isPerInput(code)) {
    const shared = max(toDense(code, F), 1); // [B, F]
    return [sum(cast(gt(shared, 0), "f32"), 0), sum(shared, 0)];
  }
  const coo = asCoo(code);
  if (coo) {
    return [
      scatterAdd(zeros([F]), coo.cols, cast(gt(coo.values, 0), "f32"), 0),
      scatterAdd(zeros([F]), coo.cols, coo.values, 0),
    ];
  }
  const f = (code as { f: Tensor }).f;
  return [sum(cast(gt(f, 0), "f32"), 0), sum(f, 0)];
}

/** Streaming evaluation; `threshold` selects the θ-based inference code of the BatchTopK family. */
export async function evaluateCrosscoder(
  p: SaeParams,
  cfg: SaeConfig,
  batches: Iterable<Batch> | AsyncIterable<Batch>,
  opts: { threshold?: Threshold } = {},
): Promise<CrosscoderMetrics> {
  const arch = architecture(cfg.arch);
  const L = cfg.n_inputs ?? 1, d = cfg.d_in, F = cfg.d_sae;
  const fired = new Float64Array(F), activation = new Float64Array(F);
  // Per input and dimension: Σx, Σx², Σr, Σr² (r = x − x̂), in f64 on the host.
  const s = {
    x: new Float64Array(L * d),
    x2: new Float64Array(L * d),
    r: new Float64Array(L * d),
    r2: new Float64Array(L * d),
  };
  let tokens = 0, l0 = 0;
  for await (const b of batches) {
    const B = b.x.shape[0];
    const out = tidy(() => {
      flatInput(b.x, cfg, "evaluateCrosscoder"); // shape check with a message naming [batch, L, d]
      const code = arch.encodeInference(p, b.x, cfg, opts.threshold);
      const xhat = arch.decode(p, code, cfg);
      const x = cast(b.x, "f32"), r = sub(x, xhat);
      const [f, a] = firing(code, F);
      return [
        sum(x, 0),
        sum(square(x), 0),
        sum(r, 0),
        sum(square(r), 0),
        f,
        a,
        sum(l0PerRow(code)),
      ];
    });
    const [sx, sx2, sr, sr2, f, a, l0b] = await Promise.all(out.map((t) => t.data()));
    dispose(out);
    for (let i = 0; i < L * d; i++) {
      s.x[i] += sx[i];
      s.x2[i] += sx2[i];
      s.r[i] += sr[i];
      s.r2[i] += sr2[i];
    }
    for (let i = 0; i < F; i++) {
      fired[i] += f[i];
      activation[i] += a[i];
    }
    l0 += l0b[0];
    tokens += B;
  }
  if (tokens === 0) throw new RangeError("evaluateCrosscoder: no batches (or only empty ones)");
  const mseL: number[] = [], fvuL: number[] = [];
  let errAll = 0, varX = 0, varR = 0;
  for (let l = 0; l < L; l++) {
    let e = 0, vx = 0, vr = 0;
    for (let j = l * d; j < (l + 1) * d; j++) {
      e += s.r2[j];
      vx += s.x2[j] - (s.x[j] * s.x[j]) / tokens;
      vr += s.r2[j] - (s.r[j] * s.r[j]) / tokens;
    }
    mseL.push(e / tokens);
    fvuL.push(vx > 0 ? vr / vx : NaN);
    errAll += e;
    varX += vx;
    varR += vr;
  }
  const alive = fired.reduce((n, c) => n + (c > 0 ? 1 : 0), 0);
  return {
    tokens,
    mse: errAll / tokens,
    fvu: varX > 0 ? varR / varX : NaN,
    mse_per_input: mseL,
    fvu_per_input: fvuL,
    l0: l0 / tokens,
    frac_alive: alive / F,
    dead_features: F - alive,
    fired,
    activation,
  };
}
