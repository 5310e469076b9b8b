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
import type { Communicator } from "../../tensor/distributed/communicator.ts";
import { broadcastFromRoot, checkSameOnEveryRank } from "./data_parallel.ts";

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
  /**
   * The job's ranks (initDistributed()); with several, training is data parallel: batch_size is
   * the global batch, each rank reads batch_size/size rows of it (rows of global batch g are
   * source batch g·size + rank of that size), gradients are averaged, and only rank 0 writes
   * (metrics, checkpoints, the dictionary). Every rank must run the same call.
   */
  comm?: Communicator;
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

/** A checkpoint's data position means nothing on other data: refuse, naming what differs. */
function checkSameData(was: unknown, now: Record<string, unknown> | undefined, dir: string): void {
  if (JSON.stringify(was ?? null) === JSON.stringify(now ?? null)) return;
  const a = (was ?? {}) as Record<string, unknown>, b = now ?? {};
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) =>
    JSON.stringify(a[k]) !== JSON.stringify(b[k])
  );
  const show = (v: unknown) => v === undefined ? "(none)" : JSON.stringify(v);
  throw new Error(
    `resume: ${dir} was trained on other data (${
      keys.map((k) => `${k}: ${show(a[k])} then, ${show(b[k])} now`).join("; ")
    }); resume with the same data options or start a new run folder`,
  );
}

export async function runTraining(o: RunOptions): Promise<RunResult> {
  const { cfg, train: t, data } = o;
  const dp = o.comm && o.comm.size > 1 ? o.comm : null;
  const ranks = dp?.size ?? 1, writer = !dp || dp.rank === 0;
  if (t.batch_size % ranks !== 0) {
    throw new Error(
      `data parallel: batch_size ${t.batch_size} is not divisible by the ${ranks} ranks (each rank trains on batch_size/ranks rows)`,
    );
  }
  const localBatch = async (g: number) => {
    const [index, size] = dp ? [g * ranks + dp.rank, t.batch_size / ranks] : [g, t.batch_size];
    await data.prepare?.(index, size);
    return data.batch(index, size);
  };
  const logEvery = o.logEvery ?? 10;
  const ckptEvery = o.checkpointEvery ?? Math.max(100, Math.ceil(t.steps / 10));
  const ckptDir = o.out ? `${o.out}/checkpoint` : undefined;
  if (o.out && writer) await ensureDir(o.out);
  let state: TrainState;
  let nextBatch: number;
  const resumed = o.resume && ckptDir ? await loadCheckpoint(ckptDir).catch(() => null) : null;
  if (o.resume && ckptDir && !resumed) {
    throw new Error(`resume: no readable checkpoint in ${ckptDir}`);
  }
  if (resumed) {
    // Data first: its options also reach cfg.json (model_name, hook_name, dataset_path).
    checkSameData(resumed.data.source, data.identity, ckptDir!);
    if (
      JSON.stringify(resumed.cfg) !== JSON.stringify(cfg) ||
      JSON.stringify(resumed.train) !== JSON.stringify(t)
    ) {
      throw new Error(
        `resume: ${ckptDir} was written with a different configuration; start a new run folder or pass the same options`,
      );
    }
    const was = typeof resumed.data.ranks === "number" ? resumed.data.ranks : 1;
    if (was !== ranks) {
      throw new Error(
        `resume: ${ckptDir} was written by a run on ${was} rank(s), this one has ${ranks}; resume with the same number (each rank's data position depends on it)`,
      );
    }
    state = resumed.state;
    await checkResumedDfc(state.params, state.opt, cfg, ckptDir!);
    nextBatch = resumed.data.nextBatch;
  } else {
    // Every rank initialises from the whole first global batch: the same scale, median and keys.
    await data.prepare?.(0, t.batch_size);
    const first = [data.batch(0, t.batch_size)];
    state = await initTrainState(random.key(t.seed), cfg, t, first);
    dispose(first);
    if (dp) {
      // Rank 0's initial parameters everywhere, whatever a rank's arithmetic did differently.
      const own = { params: state.params, opt: state.opt };
      state = { ...state, ...broadcastFromRoot(own, dp) };
      dispose(own);
    }
    nextBatch = 1;
  }
  // A multi-layer SAE reads each layer of an example as a row of its own.
  const layerRows = data.layers && architecture(cfg.arch).input === "layers";
  const tokensPerStep = t.batch_size * (layerRows ? data.layers! : 1); // global, all ranks
  const started = performance.now(), startStep = state.step;
  let last: StepMetrics | null = null;
  let lastPrinted = -1;
  const end = Math.min(t.steps, o.stopAfter ?? t.steps);
  while (state.step < end) {
    const batch = await localBatch(nextBatch++);
    const { state: next, metrics } = await trainStep(state, batch, cfg, t, dp);
    disposeReplaced([stateTensors(state), batch], stateTensors(next));
    state = next;
    last = metrics;
    const elapsed = (performance.now() - started) / 1000;
    const tps = ((state.step - startStep) * tokensPerStep) / elapsed;
    const eta = ((t.steps - state.step) * tokensPerStep) / tps;
    if (o.out && writer && (metrics.step % logEvery === 0 || state.step === t.steps)) {
      await appendFile(
        `${o.out}/metrics.jsonl`,
        JSON.stringify(snakeKeys({ ...metrics, tokensPerS: tps })) + "\n",
      );
    }
    if (typeof o.progress === "function") {
      o.progress(metrics, { tokensPerSecond: tps, etaSeconds: eta });
    } else if (o.progress && writer) {
      const pct = Math.floor((10 * state.step) / t.steps);
      if (isTty()) process.stderr.write(`\r${progressLine(metrics, t.steps, tps, eta)}`);
      else if (pct !== lastPrinted) {
        process.stderr.write(progressLine(metrics, t.steps, tps, eta) + "\n");
      }
      lastPrinted = pct;
    }
    if (ckptDir && (state.step % ckptEvery === 0 || state.step === end)) {
      // A checkpoint is rank 0's state: it stands for every rank only if they agree.
      if (dp) checkSameOnEveryRank(stateTensors(state), dp, `step ${state.step}: parameters`);
      if (writer) {
        const position = {
          nextBatch,
          ...(dp ? { ranks } : {}),
          ...(data.identity ? { source: data.identity } : {}),
        };
        await saveCheckpoint(ckptDir, { state, cfg, train: t, data: position });
        await writeReportQuietly(o.out!);
      }
    }
  }
  if (o.progress === true && writer && isTty()) process.stderr.write("\n");
  const params = foldScale(state.params, state.scale, state.scaleOut);
  if (o.out && writer && state.step === t.steps) {
    await saveSae(o.out, {
      params,
      cfg,
      ...(usesThreshold(cfg) ? { threshold: foldedThreshold(state, cfg) } : {}),
    });
    await writeReportQuietly(o.out);
  }
  return { state, params, last };
}
