/**
 * Finetuning an SCAE suite through its pruned pass (pruned.ts): every step runs the clean model on
 * one batch of token rows (frozen.ts), then the pruned pass (C = all: the chain through the
 * residual), and takes one Adam step on every dictionary's parameters against Σ per-module FVU,
 * the suite's next-token CE, or both, plus α·AuxK over each module's dead features when asked.
 *
 * Batch g is a fixed function of g (rows g·S … g·S + S − 1 of one fixed shuffle of the token
 * rows, wrapping round), and nothing else is random, so a checkpoint of (params, Adam state, dead
 * counters, step) continues bit-identically: see `runFinetune`'s resume.
 */
import process from "node:process";
import { appendFile } from "node:fs/promises";
import type { Tensor } from "../../tensor/tensor.ts";
import * as random from "../../tensor/random.ts";
import { tensor, zeros } from "../../tensor/ops/create.ts";
import {
  add,
  cast,
  div,
  ge,
  gt,
  mul,
  stopGradient,
  sub,
  where,
} from "../../tensor/ops/elementwise.ts";
import { scatterAdd, topk } from "../../tensor/ops/index.ts";
import { sum } from "../../tensor/ops/reduce.ts";
import { reshape } from "../../tensor/ops/shape.ts";
import { disposeReplaced, keep, tidy } from "../../tensor/scope.ts";
import { valueAndGrad } from "../../autodiff/grad.ts";
import {
  adam,
  applyStep,
  chain,
  clipByGlobalNorm,
  type GradientTransformation,
} from "../../autodiff/optim.ts";
import { ensureDir } from "../../data/atomic.ts";
import type { LanguageModel } from "../../data/lm/model.ts";
import { cooFromRows } from "../../tensor/ops/sparse.ts";
import { auxkLoss } from "../arch/losses.ts";
import { ConfigError } from "../config.ts";
import { readTreeFolder, writeTreeFolder } from "../train/checkpoint.ts";
import { type Connections, truncateConnections } from "./connections.ts";
import { frozenRun, headWeights, suiteCe } from "./frozen.ts";
import {
  chainForward,
  connIndices,
  fvu,
  prunedForward,
  type SuiteContext,
  type SuiteOutput,
  type SuiteParams,
  suiteResidual,
} from "./pruned.ts";
import type { ScaeSuite } from "./suite.ts";

export const FINETUNE_LOSSES = ["fvu", "ce", "fvu+ce"] as const;
export type FinetuneLoss = typeof FINETUNE_LOSSES[number];

export interface FinetuneConfig {
  loss: FinetuneLoss;
  /** Connections per downstream feature, or "all" (every upstream feature: the chain). */
  C: number | "all";
  steps: number;
  /** Token rows (sequences) per step. */
  rows: number;
  lr: number;
  gradClip: number;
  /** AuxK weight (0: none) and the tokens without firing after which a feature is dead. */
  auxkAlpha: number;
  deadTokens: number;
}

export interface FinetuneState {
  step: number;
  params: SuiteParams;
  opt: unknown;
  /** module → tokens since each feature last fired (f32 [F]). */
  sinceFired: Record<string, Tensor>;
}

export interface FinetuneMetrics {
  step: number;
  loss: number;
  fvu: Record<string, number>;
  l0: Record<string, number>;
  ce?: number;
  auxk?: number;
  dead: Record<string, number>;
}

/** What a step needs besides the state: the model, the suite's context and its connections. */
export interface FinetuneSetup {
  model: LanguageModel;
  suite: ScaeSuite;
  heads: SuiteContext["heads"];
  conns: ReturnType<typeof connIndices> | null;
  cfg: FinetuneConfig;
  opt: GradientTransformation<unknown>;
}

export function finetuneSetup(
  model: LanguageModel,
  suite: ScaeSuite,
  conns: Connections | null,
  cfg: FinetuneConfig,
): FinetuneSetup {
  const heads: SuiteContext["heads"] = {};
  for (const m of suite.modules) {
    if (m.kind === "attn") heads[m.layer] = headWeights(model, m.layer);
  }
  if (cfg.C !== "all" && !conns) {
    throw new ConfigError(`scae finetune: C ${cfg.C} needs the suite's connections (run connect)`);
  }
  const opt = chain(clipByGlobalNorm(cfg.gradClip), adam({ lr: cfg.lr })) as GradientTransformation<
    unknown
  >;
  return {
    model,
    suite,
    heads,
    conns: cfg.C === "all" ? null : connIndices(truncateConnections(conns!, cfg.C)),
    cfg,
    opt,
  };
}

export function initFinetuneState(s: FinetuneSetup): FinetuneState {
  const params: SuiteParams = {};
  const sinceFired: Record<string, Tensor> = {};
  for (const m of s.suite.modules) {
    const p = s.suite.dicts[m.name].params;
    params[m.name] = { W_enc: p.W_enc, W_dec: p.W_dec, b_enc: p.b_enc!, b_dec: p.b_dec };
    sinceFired[m.name] = zeros([s.suite.dicts[m.name].cfg.d_sae]);
  }
  return { step: 0, params, opt: s.opt.init(params), sinceFired };
}

/**
 * Batch g's token rows: rows order[g·S … g·S + S − 1] of `tokens` [N, T], wrapping round; `order`
 * is one fixed shuffle of the rows (a corpus read in order changes language and domain by
 * document, so consecutive rows would finetune on one domain at a time).
 */
export function batchRows(tokens: Tensor, g: number, S: number, order: Int32Array): Tensor {
  const [N, T] = tokens.shape;
  const ids = tokens.dataSync() as Int32Array, out = new Int32Array(S * T);
  for (let j = 0; j < S; j++) {
    const r = order[(g * S + j) % N];
    out.set(ids.subarray(r * T, (r + 1) * T), j * T);
  }
  return tensor(out, { shape: [S, T], dtype: "i32" });
}

/** The fixed row order of a finetuning run over N rows. */
export function rowOrder(N: number, seed = 0): Int32Array {
  return Int32Array.from(random.permutation(random.key(seed), N).dataSync());
}

/** The suite's pass at this setup's C on a frozen run. */
export function suitePass(s: FinetuneSetup, params: SuiteParams, ctx: SuiteContext): SuiteOutput {
  return s.conns ? prunedForward(params, ctx, s.conns) : chainForward(params, ctx);
}

/**
 * AuxK (dictionary_learning's form, arch/losses.ts): the top k_aux dead pre-activations, decoded
 * without bias, fit the module's residual (no gradient through it), normalised by its variance.
 */
function auxk(pre: Tensor, dead: Tensor, kAux: number, W_dec: Tensor, residual: Tensor): Tensor {
  const [v, idx] = topk(where(dead, pre, -Infinity), kAux);
  return auxkLoss(residual, cooFromRows(idx, where(gt(v, 0), v, 0)), W_dec);
}

/** One step on `rows` (i32 [S, T]). */
export async function finetuneStep(
  s: FinetuneSetup,
  state: FinetuneState,
  rows: Tensor,
): Promise<{ state: FinetuneState; metrics: FinetuneMetrics }> {
  const { suite, cfg } = s;
  const frozen = frozenRun(s.model, rows, suite);
  const N = frozen.B * frozen.T;
  const ctx: SuiteContext = {
    info: suite,
    cfgs: Object.fromEntries(suite.modules.map((m) => [m.name, suite.dicts[m.name].cfg])),
    frozen,
    heads: s.heads,
  };
  // Dead counts first (a read-back): they set each module's k_aux.
  const dead: Record<string, number> = {};
  for (const m of suite.modules) {
    const since = Float32Array.from(await state.sinceFired[m.name].data());
    dead[m.name] = since.reduce((n, t) => n + (t >= cfg.deadTokens ? 1 : 0), 0);
  }
  const wantFvu = cfg.loss !== "ce", wantCe = cfg.loss !== "fvu";
  const out = tidy(() => {
    const lossFn = (p: SuiteParams) => {
      const o = suitePass(s, p, ctx);
      const fvus = suite.modules.map((m) => fvu(frozen.targets[m.name], o.recon[m.name]));
      const terms: Tensor[] = wantFvu ? [...fvus] : [];
      const ce = wantCe ? suiteCe(s.model, suiteResidual(o, frozen), frozen) : null;
      if (ce) terms.push(ce);
      const aux: Tensor[] = [];
      if (cfg.auxkAlpha > 0) {
        for (const m of suite.modules) {
          const kAux = Math.min(Math.floor(suite.dicts[m.name].cfg.d_in / 2), dead[m.name]);
          if (kAux === 0) continue;
          const isDead = ge(state.sinceFired[m.name], cfg.deadTokens);
          const residual = stopGradient(sub(frozen.targets[m.name], o.recon[m.name]));
          aux.push(auxk(o.pre[m.name], isDead, kAux, p[m.name].W_dec, residual));
        }
        if (aux.length) terms.push(mul(aux.reduce((a, b) => add(a, b)), cfg.auxkAlpha));
      }
      const loss = terms.reduce((a, b) => add(a, b));
      return [loss, { fvus, ce, aux, codes: o.codes }] as const;
    };
    const [[loss, aux], grads] = valueAndGrad(lossFn, { hasAux: true })(state.params) as [
      [Tensor, { fvus: Tensor[]; ce: Tensor | null; aux: Tensor[]; codes: SuiteOutput["codes"] }],
      SuiteParams,
    ];
    const [params, opt] = applyStep(s.opt, grads, state.opt, state.params);
    const sinceFired: Record<string, Tensor> = {};
    const l0: Tensor[] = [];
    for (const m of suite.modules) {
      const { values, indices } = aux.codes[m.name];
      const on = cast(gt(values, 0), "f32");
      l0.push(div(sum(on), N));
      const F = suite.dicts[m.name].cfg.d_sae;
      const fired = gt(scatterAdd(zeros([F]), reshape(indices, [-1]), reshape(on, [-1]), 0), 0);
      sinceFired[m.name] = where(fired, 0, add(state.sinceFired[m.name], N));
    }
    const auxTotal = aux.aux.length ? aux.aux.reduce((a, b) => add(a, b)) : null;
    return keep({
      params,
      opt,
      sinceFired,
      scalars: { loss, fvus: aux.fvus, ce: aux.ce, l0, auxk: auxTotal },
    });
  });
  const num = async (t: Tensor) => (await t.data())[0];
  const names = suite.modules.map((m) => m.name);
  const metrics: FinetuneMetrics = {
    step: state.step,
    loss: await num(out.scalars.loss),
    fvu: {},
    l0: {},
    dead,
  };
  for (let i = 0; i < names.length; i++) {
    metrics.fvu[names[i]] = await num(out.scalars.fvus[i]);
    metrics.l0[names[i]] = await num(out.scalars.l0[i]);
  }
  if (out.scalars.ce) metrics.ce = await num(out.scalars.ce);
  if (out.scalars.auxk) metrics.auxk = await num(out.scalars.auxk);
  const next: FinetuneState = {
    step: state.step + 1,
    params: out.params,
    opt: out.opt,
    sinceFired: out.sinceFired,
  };
  disposeReplaced([state.params, state.opt, state.sinceFired, out.scalars], [
    next.params,
    next.opt,
    next.sinceFired,
  ]);
  return { state: next, metrics };
}

export interface FinetuneRun {
  setup: FinetuneSetup;
  tokens: Tensor;
  /** Folder for checkpoint/ and metrics.jsonl. */
  out: string;
  resume: boolean;
  checkpointEvery: number;
  /** Stop after this step (resumable); for tests and preemptible jobs. */
  stopAfter?: number;
  /** What the checkpoint must match on resume (the command's options, the source suite). */
  identity: Record<string, unknown>;
  progress: boolean;
}

const CHECKPOINT = "checkpoint";

/**
 * Steps from 0 (or from out/checkpoint on resume, which must have been written with the same
 * identity) to cfg.steps or stopAfter; a checkpoint every checkpointEvery steps and at the end.
 */
export async function runFinetune(r: FinetuneRun): Promise<FinetuneState> {
  const { setup: s } = r;
  const ckpt = `${r.out}/${CHECKPOINT}`;
  await ensureDir(r.out);
  let state: FinetuneState;
  if (r.resume) {
    const { tree, body } = await readTreeFolder<Omit<FinetuneState, "step">>(ckpt).catch((e) => {
      throw new ConfigError(`scae finetune --resume: no readable checkpoint: ${e.message}`);
    });
    if (JSON.stringify(body.identity) !== JSON.stringify(r.identity)) {
      throw new ConfigError(
        `scae finetune --resume: ${ckpt} was written with other options (${
          JSON.stringify(body.identity)
        }); pass the same options or start a new --out`,
      );
    }
    state = { ...tree, step: body.step as number };
  } else state = initFinetuneState(s);
  const end = Math.min(s.cfg.steps, r.stopAfter ?? s.cfg.steps);
  const started = performance.now(), first = state.step;
  let shown = -1;
  const order = rowOrder(r.tokens.shape[0]);
  while (state.step < end) {
    const rows = batchRows(r.tokens, state.step, s.cfg.rows, order);
    const res = await finetuneStep(s, state, rows);
    rows.dispose();
    state = res.state;
    await appendFile(`${r.out}/metrics.jsonl`, JSON.stringify(res.metrics) + "\n");
    if (r.progress) {
      const pct = Math.floor((10 * state.step) / s.cfg.steps);
      if (pct !== shown) {
        const secs = (performance.now() - started) / 1000;
        const m = res.metrics;
        process.stderr.write(
          `step ${state.step}/${s.cfg.steps} loss ${m.loss.toPrecision(4)} FVU ${
            Object.values(m.fvu).map((v) => v.toFixed(3)).join("/")
          }${m.ce !== undefined ? ` CE ${m.ce.toFixed(4)}` : ""} (${
            (secs / (state.step - first)).toFixed(2)
          } s/step)\n`,
        );
        shown = pct;
      }
    }
    if (state.step % r.checkpointEvery === 0 || state.step === end) {
      await writeTreeFolder(
        ckpt,
        { params: state.params, opt: state.opt, sinceFired: state.sinceFired },
        { step: state.step, identity: r.identity },
      );
    }
  }
  return state;
}
