/**
 * What the model loses when a dictionary is spliced in: cross-entropy and KL against the clean
 * model and the zero-ablation baseline, as SAELens's run_evals computes them, with
 * dictionary_learning's frac_recovered beside them. Streams over batches of token ids [B, T]; each
 * batch is reduced on the backend to a few sums, read back and merged in f64, so memory is bounded
 * by one batch's logits (the clean run's log-probabilities and probabilities, plus one other run's).
 *
 * Per batch, three passes on the same tokens: clean; spliced (the activation replaced by its
 * reconstruction where the input token is not special, kept where it is); zero-ablated (zeros at
 * every position). With lp = log_softmax(logits):
 *   CE at position t < T−1:  −lp[t, token[t+1]]
 *   KL at position t:        Σ_v exp(lp_clean[t, v])·(lp_clean[t, v] − lp_new[t, v])
 * Positions whose input token is special (BOS/EOS/pad ids given) are dropped; each figure is the
 * mean over the kept positions of all batches (SAELens concatenates then averages), and
 *   ce_loss_score = (ce_zero − ce_spliced)/(ce_zero − ce_clean)
 *   kl_div_score  = (kl_zero − kl_spliced)/kl_zero
 * dictionary_learning's frac_recovered = (L_spliced − L_zero)/(L_clean − L_zero) is the same ratio
 * computed differently: per batch (its evaluate() reads one batch; here the batches' values are
 * averaged), each L the mean CE over positions whose TARGET is not its pad id (CrossEntropyLoss's
 * ignore_index; nothing dropped without one), and the reconstruction spliced at every position
 * (special tokens included), which costs a fourth pass on batches holding a special token.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import {
  cast,
  eq,
  exp,
  logicalNot,
  logicalOr,
  mul,
  ne,
  neg,
  sub,
} from "../../tensor/ops/elementwise.ts";
import { takeAlongAxis } from "../../tensor/ops/index.ts";
import { logSoftmax, sum } from "../../tensor/ops/reduce.ts";
import { expandDims, sliceAxis, squeeze, stack } from "../../tensor/ops/shape.ts";
import { dispose, keep, tidy } from "../../tensor/scope.ts";
import { forward, type LanguageModel, runWithHooks } from "../../data/lm/model.ts";
import type { Splice } from "./splice.ts";

export interface DownstreamOptions {
  /** Token ids whose positions are excluded (SAELens's ignore_tokens: BOS, EOS, pad). */
  specialIds?: readonly number[];
  /** dictionary_learning's ignore_index on targets (its tokenizer's pad id); none by default. */
  padId?: number | null;
  /**
   * Compute dictionary_learning's frac_recovered (default true). It needs a fourth forward pass
   * on every batch that holds a special token; without it frac_recovered is NaN.
   */
  fracRecovered?: boolean;
}

export interface DownstreamMetrics {
  /** Mean next-token CE of the clean model over kept positions. */
  ce_clean: number;
  ce_spliced: number;
  ce_zero: number;
  /** (ce_zero − ce_spliced)/(ce_zero − ce_clean). */
  ce_loss_score: number;
  /** Mean KL(clean ‖ spliced) over kept positions. */
  kl_spliced: number;
  kl_zero: number;
  /** (kl_zero − kl_spliced)/kl_zero. */
  kl_div_score: number;
  /** dictionary_learning's per-batch (L_spliced − L_zero)/(L_clean − L_zero), averaged over batches. */
  frac_recovered: number;
  /** Positions the CE means average over (T − 1 per row, less special inputs). */
  ce_positions: number;
  /** Positions the KL means average over (T per row, less special inputs). */
  kl_positions: number;
  /** Token rows and batches evaluated. */
  rows: number;
  batches: number;
}

/** log_softmax over the vocabulary, in f32 whatever the logits' dtype. */
const logProbs = (logits: Tensor): Tensor => logSoftmax(cast(logits, "f32"), -1);

/** Per-position CE [B, T−1], and KL against the clean run [B, T] when given, from log-probabilities. */
function runLosses(
  lp: Tensor,
  targets: Tensor,
  clean: { lp: Tensor; p: Tensor } | null,
): { ce: Tensor; kl: Tensor | null } {
  const T = lp.shape[1];
  const ce = neg(
    squeeze(takeAlongAxis(sliceAxis(lp, 1, 0, T - 1), expandDims(targets, -1), -1), -1),
  );
  const kl = clean ? sum(mul(clean.p, sub(clean.lp, lp)), -1) : null;
  return { ce, kl };
}

/** Where the input token is not special: bool [B, T] (all true when no ids are given). */
export function keptPositions(tokens: Tensor, specialIds: readonly number[]): Tensor {
  let special: Tensor | null = null;
  for (const id of specialIds) {
    const hit = eq(tokens, id);
    special = special ? logicalOr(special, hit) : hit;
  }
  return special ? logicalNot(special) : ne(tokens, -1);
}

/** Σ over masked entries, and the count, as f64 host numbers. */
function maskedSum(x: Tensor, mask: Tensor): Tensor {
  return stack([sum(mul(x, cast(mask, "f32"))), sum(cast(mask, "f32"))]);
}

/**
 * CE and KL with the dictionary spliced in, over `batches` of token ids (i32 [B, T], T ≥ 2).
 */
export async function downstreamLoss(
  model: LanguageModel,
  batches: Iterable<Tensor> | AsyncIterable<Tensor>,
  splice: Splice,
  opts: DownstreamOptions = {},
): Promise<DownstreamMetrics> {
  const specialIds = opts.specialIds ?? [];
  const padId = opts.padId ?? null;
  const withFrac = opts.fracRecovered ?? true;
  // Σ CE (clean, spliced, zero), count; Σ KL (spliced, zero), count.
  let ceC = 0, ceS = 0, ceZ = 0, nCe = 0, klS = 0, klZ = 0, nKl = 0;
  let fracSum = 0, rows = 0, nBatches = 0;
  for await (const raw of batches) {
    const tokens = raw.dtype === "i32" ? raw : cast(raw, "i32");
    if (tokens.ndim !== 2 || tokens.shape[1] < 2) {
      throw new RangeError(
        `downstreamLoss: token batches must be [B, T] with T ≥ 2, got [${tokens.shape}]`,
      );
    }
    const T = tokens.shape[1];
    const { kept, targets, ceKept, dlKept, anySpecial } = tidy(() => {
      const kept = keptPositions(tokens, specialIds);
      const targets = sliceAxis(tokens, 1, 1, T);
      const ceKept = sliceAxis(kept, 1, 0, T - 1);
      const dlKept = padId === null ? ne(targets, -1) : ne(targets, padId);
      const anySpecial = sum(cast(logicalNot(kept), "f32"));
      return keep({ kept, targets, ceKept, dlKept, anySpecial });
    });
    const hasSpecial = (await anySpecial.data())[0] > 0;
    // The clean run's log-probabilities and probabilities stay for the KL of the others.
    const clean = tidy(() => {
      const lp = logProbs(forward(model, tokens));
      return keep({ lp, p: exp(lp) });
    });
    const reduce = (lp: () => Tensor, withKl: boolean) =>
      tidy(() => {
        const { ce, kl } = runLosses(lp(), targets, withKl ? clean : null);
        const parts = [maskedSum(ce, ceKept), maskedSum(ce, dlKept)];
        if (kl) parts.push(maskedSum(kl, kept));
        return keep(stack(parts));
      });
    const red = [
      reduce(() => clean.lp, false),
      reduce(
        () => logProbs(runWithHooks(model, tokens, splice.spliced(tokens, { splicedAt: kept }))),
        true,
      ),
      reduce(() => logProbs(runWithHooks(model, tokens, splice.zeroAblation())), true),
    ];
    // dictionary_learning splices at every position: a run of its own only when that differs.
    if (withFrac) {
      red.push(
        hasSpecial
          ? reduce(() => logProbs(runWithHooks(model, tokens, splice.spliced(tokens))), false)
          : red[1],
      );
    }
    const [c, s, z, dl = s] = await Promise.all(red.map((r) => r.data()));
    ceC += c[0], ceS += s[0], ceZ += z[0], nCe += c[1];
    klS += s[4], klZ += z[4], nKl += s[5];
    const mean = (v: ArrayLike<number>) => v[2] / v[3];
    const lC = mean(c), lS = mean(dl), lZ = mean(z);
    fracSum += (lS - lZ) / (lC - lZ);
    rows += tokens.shape[0];
    nBatches++;
    dispose([...new Set(red), clean, kept, targets, ceKept, dlKept, anySpecial]);
    if (tokens !== raw) tokens.dispose();
  }
  if (nBatches === 0) throw new RangeError("downstreamLoss: no token batches");
  const ce_clean = ceC / nCe, ce_spliced = ceS / nCe, ce_zero = ceZ / nCe;
  const kl_spliced = klS / nKl, kl_zero = klZ / nKl;
  return {
    ce_clean,
    ce_spliced,
    ce_zero,
    ce_loss_score: (ce_zero - ce_spliced) / (ce_zero - ce_clean),
    kl_spliced,
    kl_zero,
    kl_div_score: (kl_zero - kl_spliced) / kl_zero,
    frac_recovered: withFrac ? fracSum / nBatches : NaN,
    ce_positions: nCe,
    kl_positions: nKl,
    rows,
    batches: nBatches,
  };
}

/** Token rows [N, T] as batches of `batch` rows (the last may be shorter). */
export function* tokenBatches(tokens: Tensor, batch: number): Generator<Tensor> {
  const N = tokens.shape[0];
  for (let i = 0; i < N; i += batch) yield sliceAxis(tokens, 0, i, Math.min(N, i + batch));
}
/** The downstream figures as the table's continuation. */
export function formatDownstream(d: DownstreamMetrics, hooks: readonly string[]): string {
  const f = (v: number) => (Number.isInteger(v) ? String(v) : v.toPrecision(6));
  const rows: [string, number][] = [
    ["ce_clean", d.ce_clean],
    ["ce_spliced", d.ce_spliced],
    ["ce_zero", d.ce_zero],
    ["ce_loss_score", d.ce_loss_score],
    ["kl_spliced", d.kl_spliced],
    ["kl_zero", d.kl_zero],
    ["kl_div_score", d.kl_div_score],
    ["frac_recovered (dictionary_learning)", d.frac_recovered],
    ["ce_positions", d.ce_positions],
    ["kl_positions", d.kl_positions],
  ];
  return [`spliced at ${hooks.join(", ")}:`, ...rows.map(([k, v]) => `  ${k.padEnd(38)} ${f(v)}`)]
    .join("\n");
}
