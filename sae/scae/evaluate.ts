/**
 * Evaluating an SCAE suite on token rows: per module FVU (Σ‖y − ŷ‖² / Σ‖y − ȳ‖² over every token)
 * and L0, and the suite's next-token CE (unembed(ln_final(embedding + Σ reconstructions))), for
 * - "unpruned": each module on its own clean input (no module reads another's reconstruction);
 * - each C: the pruned pass with the top C connections (C = "all": the chain through the residual).
 * CE is compared with the clean model (embedding + Σ clean outputs, which is the final residual)
 * as ce_diff, and with zero-ablation (the embedding alone) as the CE loss recovered,
 * (CE_zero − CE) / (CE_zero − CE_clean).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, cast, gt, square, sub } from "../../tensor/ops/elementwise.ts";
import { sum } from "../../tensor/ops/reduce.ts";
import type { LanguageModel } from "../../data/lm/model.ts";
import { tidy } from "../../tensor/scope.ts";
import { sparseDecode, topkEncode } from "../arch/topk_encode.ts";
import { tokenBatches } from "../eval/downstream.ts";
import { type Connections, truncateConnections } from "./connections.ts";
import { type FrozenRun, frozenRun, headWeights, suiteCe } from "./frozen.ts";
import {
  chainForward,
  connIndices,
  prunedForward,
  type SuiteContext,
  type SuiteOutput,
} from "./pruned.ts";
import type { ScaeSuite } from "./suite.ts";

export type EvalC = number | "all";

export interface ModuleFigures {
  fvu: number;
  l0: number;
}

export interface EvalRow {
  c: EvalC | "unpruned";
  ce: number;
  ce_diff: number;
  ce_loss_recovered: number;
  modules: Record<string, ModuleFigures>;
}

export interface SuiteEvaluation {
  tokens: number;
  ce_clean: number;
  ce_zero: number;
  rows: EvalRow[];
}

/** Running sums for one row: per module Σ sq. error, Σ y, Σ y², Σ active; Σ CE × positions. */
interface Sums {
  err: Record<string, number>;
  y: Record<string, Float64Array>;
  y2: Record<string, number>;
  active: Record<string, number>;
  ce: number;
}

const emptySums = (): Sums => ({ err: {}, y: {}, y2: {}, active: {}, ce: 0 });

const scalar = async (t: Tensor) => (await t.data())[0];

async function addBatch(s: Sums, suite: ScaeSuite, fr: FrozenRun, o: SuiteOutput, ce: number) {
  const positions = fr.B * (fr.T - 1);
  s.ce += ce * positions;
  for (const m of suite.modules) {
    const y = fr.targets[m.name];
    const [err, y2, ySum, act] = tidy(() => [
      sum(square(sub(y, o.recon[m.name]))),
      sum(square(y)),
      sum(y, 0),
      sum(cast(gt(o.codes[m.name].values, 0), "f32")),
    ]);
    s.err[m.name] = (s.err[m.name] ?? 0) + await scalar(err);
    s.y2[m.name] = (s.y2[m.name] ?? 0) + await scalar(y2);
    s.active[m.name] = (s.active[m.name] ?? 0) + await scalar(act);
    const acc = (s.y[m.name] ??= new Float64Array(y.shape[1]));
    const v = await ySum.data();
    for (let i = 0; i < v.length; i++) acc[i] += v[i];
  }
}

/** Each module on its own clean input: encode, top-k, decode. */
function unprunedPass(suite: ScaeSuite, fr: FrozenRun): SuiteOutput {
  const out: SuiteOutput = { pre: {}, codes: {}, recon: {} };
  for (const m of suite.modules) {
    const { params: p, cfg } = suite.dicts[m.name];
    const code = topkEncode(
      fr.inputs[m.name],
      p.W_enc,
      p.b_enc!,
      cfg.apply_b_dec_to_input ? p.b_dec : null,
      cfg.k,
    );
    out.codes[m.name] = code;
    out.recon[m.name] = sparseDecode(code, p.W_dec, p.b_dec);
  }
  return out;
}

/** The residual a pass rebuilds: embedding + every module's reconstruction. */
function residualOf(fr: FrozenRun, recon: Record<string, Tensor>): Tensor {
  let r = fr.embed;
  for (const x of Object.values(recon)) r = add(r, x);
  return r;
}

/**
 * The evaluation over `tokens` (i32 [N, T]) in batches of `batchRows` rows. Every numeric C must
 * be at most the width of `conns`' tables (cut from them by joint rank, truncateConnections).
 */
export async function evaluateSuite(
  model: LanguageModel,
  suite: ScaeSuite,
  conns: Connections | null,
  tokens: Tensor,
  cs: EvalC[],
  batchRows: number,
): Promise<SuiteEvaluation> {
  const heads: SuiteContext["heads"] = {};
  for (const m of suite.modules) {
    if (m.kind === "attn") heads[m.layer] = headWeights(model, m.layer);
  }
  const cfgs = Object.fromEntries(suite.modules.map((m) => [m.name, suite.dicts[m.name].cfg]));
  const params = Object.fromEntries(
    suite.modules.map((m) => [m.name, suite.dicts[m.name].params]),
  );
  const indices = cs.map((c) => c === "all" ? null : connIndices(truncateConnections(conns!, c)));
  const rows = [emptySums(), ...cs.map(emptySums)];
  let ceClean = 0, ceZero = 0, positions = 0, N = 0;
  for (const tb of tokenBatches(tokens, batchRows)) {
    const fr = frozenRun(model, tb, suite);
    const ctx: SuiteContext = { info: suite, cfgs, frozen: fr, heads };
    const p = fr.B * (fr.T - 1);
    positions += p;
    N += fr.B * fr.T;
    ceClean += p * await scalar(suiteCe(model, residualOf(fr, fr.targets), fr));
    ceZero += p * await scalar(suiteCe(model, fr.embed, fr));
    const passes = [
      () => unprunedPass(suite, fr),
      ...indices.map((ix) => () => ix ? prunedForward(params, ctx, ix) : chainForward(params, ctx)),
    ];
    for (let i = 0; i < passes.length; i++) {
      const o = passes[i]();
      await addBatch(
        rows[i],
        suite,
        fr,
        o,
        await scalar(suiteCe(model, residualOf(fr, o.recon), fr)),
      );
    }
  }
  ceClean /= positions;
  ceZero /= positions;
  const labels: EvalRow["c"][] = ["unpruned", ...cs];
  return {
    tokens: N,
    ce_clean: ceClean,
    ce_zero: ceZero,
    rows: rows.map((s, i) => {
      const ce = s.ce / positions;
      const modules: Record<string, ModuleFigures> = {};
      for (const m of suite.modules) {
        let mean2 = 0;
        for (const v of s.y[m.name]) mean2 += v * v;
        const total = s.y2[m.name] - mean2 / N;
        modules[m.name] = { fvu: s.err[m.name] / total, l0: s.active[m.name] / N };
      }
      return {
        c: labels[i],
        ce,
        ce_diff: ce - ceClean,
        ce_loss_recovered: (ceZero - ce) / (ceZero - ceClean),
        modules,
      };
    }),
  };
}

/** The evaluation as a table: one row per pass, CE columns, then FVU and L0 per module. */
export function formatSuiteEvaluation(e: SuiteEvaluation, names: string[]): string {
  const head = ["C", "CE", "ce_diff", "recovered", ...names.flatMap((n) => [`${n} FVU`, "L0"])];
  const body = e.rows.map((r) => [
    String(r.c),
    r.ce.toFixed(4),
    (r.ce_diff >= 0 ? "+" : "") + r.ce_diff.toFixed(4),
    r.ce_loss_recovered.toFixed(4),
    ...names.flatMap((n) => [r.modules[n].fvu.toFixed(4), r.modules[n].l0.toFixed(1)]),
  ]);
  const width = head.map((h, j) => Math.max(h.length, ...body.map((b) => b[j].length)));
  const line = (cells: string[]) =>
    cells.map((c, j) => (j === 0 ? c.padEnd(width[j]) : c.padStart(width[j]))).join("  ");
  return [
    `${e.tokens} tokens; CE clean ${e.ce_clean.toFixed(4)}, zero-ablation (embedding only) ${
      e.ce_zero.toFixed(4)
    }`,
    line(head),
    ...body.map(line),
  ].join("\n");
}
