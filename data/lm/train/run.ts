/**
 * The `sae lm train` driver: tokens (cached), a fresh or loaded model, the step loop with progress
 * lines, curves.jsonl, held-out evaluations and checkpoints, then the Hugging Face folder and its
 * MODEL_CARD.md. Everything numeric happens in step.ts; this file does I/O and bookkeeping only.
 */
import { existsSync } from "node:fs";
import { appendFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { ensureDir, writeFileAtomic, writeJsonAtomic } from "../../atomic.ts";
import { loadTokenizer } from "../../text/tokenizer.ts";
import type { Gpt2Config } from "../config.ts";
import type { Gpt2Params } from "../load.ts";
import { loadModel, modelInfo } from "../model.ts";
import { batchWindows } from "./batches.ts";
import { ngramLosses } from "./baselines.ts";
import { type DomainResult, modelCard } from "./card.ts";
import { loadLmCheckpoint, saveLmCheckpoint } from "./checkpoint.ts";
import { heldoutLoss } from "./eval.ts";
import { gpt2ConfigFor, initGpt2 } from "./init.ts";
import { type LmTrainOptions, LmTrainUsageError } from "./options.ts";
import { saveGpt2Folder } from "./save.ts";
import { initTrainState, type LmTrainState, type TrainHyper, trainStep } from "./step.ts";
import { corpusTokens, domainTokens } from "./tokens.ts";

/** One line of curves.jsonl. */
export interface CurvePoint {
  step: number;
  tokens: number;
  lr: number;
  loss: number;
  grad_norm: number;
  ms: number;
  heldout_loss?: number;
}

export interface LmTrainResult {
  steps: number;
  resumedFrom: number | null;
  finalLoss: number;
  heldoutLoss: number;
}

const hyperOf = (o: LmTrainOptions): TrainHyper => ({
  lr: o.lr,
  minLr: o.minLr,
  warmup: o.warmup,
  steps: o.steps,
  weightDecay: o.weightDecay,
  clip: o.clip,
});

function fmtTime(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`
    : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

/** Train as `o` says; `log` gets the progress lines. */
export async function lmTrain(
  o: LmTrainOptions,
  log: (line: string) => void = console.log,
): Promise<LmTrainResult> {
  await ensureDir(o.out);
  const tokenizer = await loadTokenizer(o.tokenizer);
  const cacheDir = join(o.out, "tokens");
  const common = { tokenizer, tokenizerDir: o.tokenizer, cacheDir };
  const train = await corpusTokens(o.data, { ...common, name: "train", domain: o.domain });
  const held = await corpusTokens(o.heldout, { ...common, name: "heldout", withDomains: true });
  log(
    `data: ${train.ids.length} training tokens (${train.documents} documents), ${held.ids.length} held-out`,
  );

  let cfg: Gpt2Config, fresh: () => Gpt2Params;
  if (o.initFrom) {
    const m = await loadModel(o.initFrom, { dtype: "f32" });
    if (m.family !== "gpt2") {
      throw new LmTrainUsageError(
        `sae lm train: --init-from ${o.initFrom} is ${m.family}, not gpt2`,
      );
    }
    cfg = m.cfg;
    if (o.context > cfg.nPositions) {
      throw new LmTrainUsageError(
        `sae lm train: --context ${o.context} exceeds ${o.initFrom}'s n_positions ${cfg.nPositions}`,
      );
    }
    fresh = () => m.params;
  } else {
    cfg = gpt2ConfigFor({
      layers: o.layers,
      dModel: o.dModel,
      heads: o.heads,
      context: o.context,
      vocabSize: tokenizer.vocabSize,
    });
    fresh = () => initGpt2(o.seed, cfg);
  }
  if (cfg.vocabSize < tokenizer.vocabSize) {
    throw new LmTrainUsageError(
      `sae lm train: the model's vocabulary ${cfg.vocabSize} is smaller than the tokenizer's ${tokenizer.vocabSize}`,
    );
  }
  // Training windows are o.context long; a loaded model may have room for more positions.
  const stepCfg: Gpt2Config = { ...cfg, nPositions: o.context };
  const hyper = hyperOf(o);
  const run = {
    shape: [cfg.nLayer, cfg.dModel, cfg.nHead, cfg.nPositions, cfg.vocabSize],
    hyper,
    seed: o.seed,
    batch: o.batch,
    context: o.context,
    micro: o.micro,
    initFrom: o.initFrom,
    train: train.identity,
  };

  const ckptDir = join(o.out, "checkpoint");
  let state: LmTrainState, elapsed = 0, resumedFrom: number | null = null;
  if (existsSync(join(ckptDir, "state.json"))) {
    if (!o.resume) {
      throw new LmTrainUsageError(
        `sae lm train: ${o.out} holds a checkpoint; pass --resume to continue it or choose another --out`,
      );
    }
    const c = await loadLmCheckpoint(ckptDir);
    for (const k of Object.keys(run) as (keyof typeof run)[]) {
      if (JSON.stringify(c.run[k]) !== JSON.stringify(run[k])) {
        throw new LmTrainUsageError(
          `sae lm train: --resume: ${k} differs from the checkpoint's (${
            JSON.stringify(c.run[k])
          } there, ${JSON.stringify(run[k])} now)`,
        );
      }
    }
    state = c.state, elapsed = c.elapsedMs, resumedFrom = state.step;
    log(`resumed from step ${state.step} (${ckptDir})`);
  } else {
    if (o.resume) log(`no checkpoint in ${ckptDir}: starting from step 0`);
    state = initTrainState(fresh(), hyper);
  }
  await writeJsonAtomic(join(o.out, "train.json"), { ...o, resume: false });

  // curves.jsonl keeps what the run had logged before the checkpoint it resumed from.
  const curvesPath = join(o.out, "curves.jsonl");
  const kept = resumedFrom !== null && existsSync(curvesPath)
    ? (await readFile(curvesPath, "utf8")).split("\n").filter((l) =>
      l !== "" && (JSON.parse(l) as CurvePoint).step <= resumedFrom!
    )
    : [];
  await writeFileAtomic(curvesPath, kept.map((l) => l + "\n").join(""));

  const evalOpts = { batch: o.batch, maxTokens: o.evalTokens };
  const tokensPerStep = o.batch * o.context;
  // A resumed run that is already complete still reports its last logged loss.
  let lastLoss = kept.length ? (JSON.parse(kept[kept.length - 1]) as CurvePoint).loss : NaN;
  let lastHeld = NaN, msSum = 0, msCount = 0;
  const spec = { seed: o.seed, batch: o.batch, context: o.context };
  while (state.step < o.steps) {
    const t0 = performance.now();
    const windows = batchWindows(train.ids, state.step, spec);
    const r = await trainStep(state, windows, stepCfg, hyper, { micro: o.micro });
    state = r.state;
    const ms = performance.now() - t0;
    elapsed += ms, msSum += ms, msCount++;
    lastLoss = r.loss;
    const point: CurvePoint = {
      step: state.step,
      tokens: state.step * tokensPerStep,
      lr: r.lr,
      loss: r.loss,
      grad_norm: r.gradNorm,
      ms: Math.round(ms * 100) / 100,
    };
    if (state.step % o.evalEvery === 0 || state.step === o.steps) {
      lastHeld = await heldoutLoss(state.params, stepCfg, held.ids, evalOpts);
      point.heldout_loss = lastHeld;
    }
    await appendFile(curvesPath, JSON.stringify(point) + "\n");
    if (state.step % o.logEvery === 0 || state.step === o.steps) {
      const perStep = msSum / msCount;
      log(
        `step ${state.step}/${o.steps} loss ${r.loss.toFixed(4)}${
          point.heldout_loss !== undefined ? ` heldout ${point.heldout_loss.toFixed(4)}` : ""
        } lr ${r.lr.toExponential(2)} |g| ${r.gradNorm.toFixed(3)} ${
          Math.round(tokensPerStep / (perStep / 1000))
        } tok/s ETA ${fmtTime((o.steps - state.step) * perStep)}`,
      );
      msSum = 0, msCount = 0;
    }
    if (state.step % o.checkpointEvery === 0 || state.step === o.steps) {
      await saveLmCheckpoint(ckptDir, { state, cfg, run, elapsedMs: elapsed });
    }
  }

  const tok = tokenizer;
  await saveGpt2Folder(o.out, state.params, cfg, {
    dtype: o.dtype,
    tokenizerDir: o.tokenizer,
    bosId: tok.bosId ?? tok.eosId,
    eosId: tok.eosId,
    metadata: { steps: String(o.steps), tokens: String(o.steps * tokensPerStep) },
  });
  if (Number.isNaN(lastHeld)) {
    lastHeld = await heldoutLoss(state.params, stepCfg, held.ids, evalOpts);
  }
  const domains: DomainResult[] = [];
  if (held.domains.length > 1 || (held.domains.length === 1 && held.domains[0] !== "")) {
    for (let d = 0; d < held.domains.length; d++) {
      const ids = domainTokens(held, d);
      if (ids.length < 2) continue;
      domains.push({
        domain: held.domains[d],
        tokens: ids.length,
        loss: await heldoutLoss(state.params, stepCfg, ids, evalOpts),
        baselines: ngramLosses(train.ids, ids, cfg.vocabSize),
      });
    }
  }
  await writeFileAtomic(
    join(o.out, "MODEL_CARD.md"),
    modelCard({
      options: o,
      cfg,
      nParams: modelInfo({ family: "gpt2", cfg, params: state.params }).nParams,
      tokensSeen: o.steps * tokensPerStep,
      trainTokens: train.ids.length,
      trainDocuments: train.documents,
      heldoutTokens: held.ids.length,
      elapsedMs: elapsed,
      finalLoss: lastLoss,
      heldoutLoss: lastHeld,
      baselines: ngramLosses(train.ids, held.ids, cfg.vocabSize),
      domains,
    }),
  );
  log(`wrote ${o.out}: model.safetensors (${o.dtype}), config.json, MODEL_CARD.md, curves.jsonl`);
  return { steps: state.step, resumedFrom, finalLoss: lastLoss, heldoutLoss: lastHeld };
}
