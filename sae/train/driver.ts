/**
 * The training driver: data, logging (metrics.jsonl), checkpoints, progress, the final save.
 * Everything that computes lives in step.ts; this file only moves things around.
 */
import process from "node:process";
import { appendFile } from "node:fs/promises";
import * as random from "../../tensor/random.ts";
import { dispose, disposeReplaced } from "../../tensor/scope.ts";
import { ensureDir } from "../../data/atomic.ts";
import type { SaeConfig } from "../config.ts";
import type { TrainConfig } from "./config.ts";
import {
  foldedThreshold,
  foldScale,
  initTrainState,
  stateTensors,
  type StepMetrics,
  type TrainState,
  trainStep,
} from "./step.ts";
import type { DataSource } from "../../data/sources.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { saveSae } from "../io/saelens.ts";
import { checkResumedDfc } from "../crosscoder/io.ts";
import type { SaeParams } from "../params.ts";
import { writeReportQuietly } from "../eval/report.ts";
import { architecture, usesThreshold } from "../arch/registry.ts";
import { snakeKeys } from "../io/file_keys.ts";

export interface RunOptions {
  cfg: SaeConfig;
  train: TrainConfig;
  data: DataSource;
  /** Run folder: metrics.jsonl, checkpoint/, and the final dictionary (cfg.json + weights). */
  out?: string;
  /** Continue from out/checkpoint if it exists. */
  resume?: boolean;
  logEvery?: number;
  checkpointEvery?: number;
  /** Live progress on stderr (a bar on a terminal, a line per 10% otherwise), or a callback. */
  progress?:
    | boolean
    | ((m: StepMetrics, info: { tokensPerSecond: number; etaSeconds: number }) => void);
  /** Stop after this step (the run can be resumed later); for tests and preemptible jobs. */
  stopAfter?: number;
}

export interface RunResult {
  state: TrainState;
  /** The dictionary in raw-activation units (normalisation folded in). */
  params: SaeParams;
  last: StepMetrics | null;
}

const isTty = () => Boolean((process.stderr as { isTTY?: boolean }).isTTY);

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${s.toFixed(0)}s`;
}

function progressLine(m: StepMetrics, steps: number, tps: number, eta: number): string {
  const w = 20, done = Math.round((w * (m.step + 1)) / steps);
  return `step ${m.step + 1}/${steps} [${"#".repeat(done)}${".".repeat(w - done)}] ${
    (tps / 1000).toFixed(1)
  }k tok/s ` +
    `loss ${m.loss.toPrecision(4)} L0 ${m.l0.toFixed(1)} FVU ${m.fvu.toFixed(3)} dead ${
      (100 * m.deadFraction).toFixed(1)
    }% ETA ${fmtTime(eta)}`;
}

export async function runTraining(o: RunOptions): Promise<RunResult> {
  const { cfg, train: t, data } = o;
  const logEvery = o.logEvery ?? 10;
  const ckptEvery = o.checkpointEvery ?? Math.max(100, Math.ceil(t.steps / 10));
  const ckptDir = o.out ? `${o.out}/checkpoint` : undefined;
  if (o.out) await ensureDir(o.out);
  let state: TrainState;
  let nextBatch: number;
  const resumed = o.resume && ckptDir ? await loadCheckpoint(ckptDir).catch(() => null) : null;
  if (o.resume && ckptDir && !resumed) {
    throw new Error(`resume: no readable checkpoint in ${ckptDir}`);
  }
  if (resumed) {
    if (
      JSON.stringify(resumed.cfg) !== JSON.stringify(cfg) ||
      JSON.stringify(resumed.train) !== JSON.stringify(t)
    ) {
      throw new Error(
        `resume: ${ckptDir} was written with a different configuration; start a new run folder or pass the same options`,
      );
    }
    state = resumed.state;
    await checkResumedDfc(state.params, state.opt, cfg, ckptDir!);
    nextBatch = resumed.data.nextBatch;
  } else {
    const first = [data.batch(0, t.batch_size)];
    state = await initTrainState(random.key(t.seed), cfg, t, first);
    dispose(first);
    nextBatch = 1;
  }
  // A multi-layer SAE reads each layer of an example as a row of its own.
  const layerRows = data.layers && architecture(cfg.arch).input === "layers";
  const tokensPerStep = t.batch_size * (layerRows ? data.layers! : 1);
  const started = performance.now(), startStep = state.step;
  let last: StepMetrics | null = null;
  let lastPrinted = -1;
  const end = Math.min(t.steps, o.stopAfter ?? t.steps);
  while (state.step < end) {
    const batch = data.batch(nextBatch++, t.batch_size);
    const { state: next, metrics } = await trainStep(state, batch, cfg, t);
    disposeReplaced([stateTensors(state), batch], stateTensors(next));
    state = next;
    last = metrics;
    const elapsed = (performance.now() - started) / 1000;
    const tps = ((state.step - startStep) * tokensPerStep) / elapsed;
    const eta = ((t.steps - state.step) * tokensPerStep) / tps;
    if (o.out && (metrics.step % logEvery === 0 || state.step === t.steps)) {
      await appendFile(
        `${o.out}/metrics.jsonl`,
        JSON.stringify(snakeKeys({ ...metrics, tokensPerS: tps })) + "\n",
      );
    }
    if (typeof o.progress === "function") {
      o.progress(metrics, { tokensPerSecond: tps, etaSeconds: eta });
    } else if (o.progress) {
      const pct = Math.floor((10 * state.step) / t.steps);
      if (isTty()) process.stderr.write(`\r${progressLine(metrics, t.steps, tps, eta)}`);
      else if (pct !== lastPrinted) {
        process.stderr.write(progressLine(metrics, t.steps, tps, eta) + "\n");
      }
      lastPrinted = pct;
    }
    if (ckptDir && (state.step % ckptEvery === 0 || state.step === end)) {
      await saveCheckpoint(ckptDir, { state, cfg, train: t, data: { nextBatch } });
      await writeReportQuietly(o.out!);
    }
  }
  if (o.progress === true && isTty()) process.stderr.write("\n");
  const params = foldScale(state.params, state.scale, state.scaleOut);
  if (o.out && state.step === t.steps) {
    await saveSae(o.out, {
      params,
      cfg,
      ...(usesThreshold(cfg) ? { threshold: foldedThreshold(state, cfg) } : {}),
    });
    await writeReportQuietly(o.out);
  }
  return { state, params, last };
}
