/**
 * Choosing an SCAE suite's connections: over a dataset, each downstream feature i's mean
 * contribution from each upstream feature j, the top C by magnitude kept jointly across all
 * upstream modules (the reference's rule: rank |mean contribution|, drop zeros).
 *
 * The contribution at query token q is Σ_h Σ_k P_h[q, k]·(f_j[k]/s[k])·V_h[i, j] (an MLP module:
 * one "head", P = identity), with f_j the upstream code on its clean input, s the downstream's
 * clean LayerNorm scale and V_h the virtual weight of pruned.ts. Its mean over tokens factors:
 * Σ_h V_h[i, j]·G_h[j] / N with G_h[j] = Σ_k (Σ_q P_h[q, k])·f_j[k]/s[k], so streaming keeps only
 * [H, F_up] sums per (downstream, upstream) pair, and no per-batch [F_down, F_up] array exists.
 * The scores are then formed for a block of downstream rows at a time ([rows, ΣF_up] per head).
 * For MLP modules the codes are ≥ 0 and s > 0, so this equals the mean |contribution| exactly.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor, zeros } from "../../tensor/ops/create.ts";
import { abs, add, div, mul, sub } from "../../tensor/ops/elementwise.ts";
import { scatterAdd, topk } from "../../tensor/ops/index.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { mean, sum } from "../../tensor/ops/reduce.ts";
import { concat, expandDims, reshape, sliceAxis, transpose } from "../../tensor/ops/shape.ts";
import { tidy } from "../../tensor/scope.ts";
import { topkEncode } from "../arch/topk_encode.ts";
import type { LanguageModel, Tokens } from "../../data/lm/model.ts";
import type { Connections } from "./connections.ts";
import { frozenRun, type HeadWeights } from "./frozen.ts";
import { type ScaeSuite, upstreamOf } from "./suite.ts";

/** Running sums: pair "{down}<-{up}" → Float64Array [H·F_up] (H = 1 for MLP modules). */
export interface ConnectStats {
  tokens: number;
  sums: Record<string, Float64Array>;
}

export function emptyStats(): ConnectStats {
  return { tokens: 0, sums: {} };
}

/** Add one batch of tokens to the sums. */
export async function accumulate(
  stats: ConnectStats,
  model: LanguageModel,
  suite: ScaeSuite,
  tokens: Tokens,
): Promise<void> {
  const fr = frozenRun(model, tokens, suite);
  const N = fr.B * fr.T;
  const codes: Record<string, { values: Tensor; indices: Tensor }> = {};
  for (const m of suite.modules) {
    const { params: p, cfg } = suite.dicts[m.name];
    codes[m.name] = topkEncode(
      fr.inputs[m.name],
      p.W_enc,
      p.b_enc!,
      cfg.apply_b_dec_to_input ? p.b_dec : null,
      cfg.k,
    );
  }
  for (const down of suite.modules) {
    const s = fr.scale[down.name]; // [N, 1]
    // Per key token and head, the weight Σ_q P_h[q, k] / s[k]: [N, H] (MLP: 1/s, H = 1).
    const w = tidy(() =>
      down.kind === "attn"
        ? div(reshape(transpose(sum(fr.pattern[down.layer], 2), [0, 2, 1]), [N, -1]), s)
        : div(1, s)
    );
    const H = w.shape[1];
    for (const up of upstreamOf(suite, down.name)) {
      const F = suite.dicts[up.name].cfg.d_sae;
      const { values, indices } = codes[up.name]; // [N, k]
      const part = tidy(() => {
        // Flat index h·F + j for every (token, head, kept feature): [N, H, k].
        const heads = reshape(
          tensor(Array.from({ length: H }, (_, h) => h * F), { dtype: "i32" }),
          [1, H, 1],
        );
        const idx = reshape(add(expandDims(indices, 1), heads), [-1]);
        const val = reshape(mul(expandDims(values, 1), expandDims(w, 2)), [-1]);
        return scatterAdd(zeros([H * F]), idx, val, 0);
      });
      const d = await part.data();
      part.dispose();
      const key = `${down.name}<-${up.name}`;
      const acc = (stats.sums[key] ??= new Float64Array(H * F));
      for (let i = 0; i < d.length; i++) acc[i] += d[i];
    }
    w.dispose();
  }
  stats.tokens += N;
}

/**
 * The top `C` connections of every downstream feature from the sums, scored by the signed mean
 * contribution (ranked by its magnitude; zeros never kept). Rows are scored `block` at a time.
 */
export async function selectConnections(
  stats: ConnectStats,
  suite: ScaeSuite,
  heads: Record<number, HeadWeights>,
  C: number,
  block = 256,
): Promise<Connections> {
  const out: Connections = {};
  for (const down of suite.modules) {
    const ups = upstreamOf(suite, down.name);
    if (ups.length === 0) continue;
    const { params: pd, cfg } = suite.dicts[down.name];
    const Fd = cfg.d_sae;
    const widths = ups.map((u) => suite.dicts[u.name].cfg.d_sae);
    out[down.name] = {};
    const tables = ups.map((u, ui) => {
      const t = {
        rows: Fd,
        C,
        ids: new Int32Array(Fd * C).fill(-1),
        scores: new Float32Array(Fd * C).fill(NaN),
      };
      out[down.name][u.name] = t;
      return { t, F: widths[ui], fill: new Int32Array(Fd) };
    });
    const hw = down.kind === "attn" ? heads[down.layer] : null;
    for (let r0 = 0; r0 < Fd; r0 += block) {
      const r1 = Math.min(Fd, r0 + block);
      // [rows, ΣF_up] signed mean contributions.
      const scores = tidy(() => {
        const Wenc = sliceAxis(pd.W_enc, 1, r0, r1); // [d, rows]
        const parts = ups.map((u, ui) => {
          const Wd = suite.dicts[u.name].params.W_dec;
          const Wc = sub(Wd, mean(Wd, -1, { keepdims: true })); // [F_up, d]
          const sums = stats.sums[`${down.name}<-${u.name}`];
          const H = hw ? hw.wOV.shape[0] : 1;
          const G = tensor(Float32Array.from(sums, (v) => v / stats.tokens), {
            shape: [H, widths[ui], 1],
          });
          // V_h [H, F_up, rows], weighted by G_h and summed over heads → [rows, F_up].
          const V = hw
            ? matmul(matmul(expandDims(Wc, 0), hw.wOV), Wenc)
            : expandDims(matmul(Wc, Wenc), 0);
          return transpose(sum(mul(V, G), 0));
        });
        return parts.length === 1 ? parts[0] : concat(parts, 1);
      });
      const total = scores.shape[1];
      const kk = Math.min(C, total);
      const [, idxT] = topk(tidy(() => abs(scores)), kk);
      const [sv, iv] = [await scores.data(), await idxT.data()];
      scores.dispose();
      idxT.dispose();
      for (let r = 0; r < r1 - r0; r++) {
        for (let c = 0; c < kk; c++) {
          const flat = iv[r * kk + c];
          const score = sv[r * total + flat];
          if (score === 0) continue;
          let ui = 0, j = flat;
          while (j >= widths[ui]) j -= widths[ui++];
          const { t, fill } = tables[ui];
          const row = r0 + r;
          t.ids[row * C + fill[row]] = j;
          t.scores[row * C + fill[row]] = score;
          fill[row]++;
        }
      }
    }
  }
  return out;
}
