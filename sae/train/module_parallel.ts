/**
 * Module parallel: several dictionaries, one per hook point, trained in one run with each rank
 * owning whole dictionaries. No gradient is exchanged: each dictionary's training is exactly the
 * run it would be alone in one process (same data order, same seed), so the split is only about
 * where the work runs. Ranks get contiguous runs of the hooks in the given (model) order, so a
 * rank harvesting from a live model stops its forward pass at its own last hook; a rank's
 * dictionaries train side by side, taking their batches from sources that share one forward
 * pass per batch (data/lm/harvest.ts) or from one store each.
 */
import type { Communicator } from "../../tensor/distributed/communicator.ts";
import type { DataSource } from "../../data/sources.ts";
import type { SaeConfig } from "../config.ts";
import type { TrainConfig } from "./config.ts";
import { type RunOptions, type RunResult, runTraining } from "./driver.ts";

/** The hooks each rank trains: contiguous runs in the given order, sizes differing by at most 1. */
export function assignModules(hooks: readonly string[], ranks: number): string[][] {
  if (new Set(hooks).size !== hooks.length) {
    throw new RangeError(`module parallel: a hook is named twice in ${hooks.join(", ")}`);
  }
  if (ranks > hooks.length) {
    throw new RangeError(
      `module parallel: ${ranks} ranks for ${hooks.length} dictionaries; each rank trains whole dictionaries, so use at most ${hooks.length} ranks`,
    );
  }
  return Array.from(
    { length: ranks },
    (_, r) =>
      hooks.slice(
        Math.floor((r * hooks.length) / ranks),
        Math.floor(((r + 1) * hooks.length) / ranks),
      ),
  );
}

/** The run folder of one hook's dictionary inside the job's folder. */
export function moduleDir(out: string, hook: string): string {
  if (!/^[\w.-]+$/.test(hook) || hook === "." || hook === "..") {
    throw new RangeError(
      `module parallel: hook name ${JSON.stringify(hook)} cannot be a folder name`,
    );
  }
  return `${out}/${hook}`;
}

export interface ModuleRun {
  hook: string;
  cfg: SaeConfig;
  train: TrainConfig;
  data: DataSource;
}

export interface ModuleParallelOptions {
  /** This rank's dictionaries (assignModules(…)[comm.rank]). */
  modules: readonly ModuleRun[];
  /** The job folder: one sub-folder per hook (moduleDir). */
  out: string;
  comm: Communicator;
  resume?: boolean;
  progress?: RunOptions["progress"];
  logEvery?: number;
  checkpointEvery?: number;
  stopAfter?: number;
}

/**
 * Train this rank's dictionaries side by side (each a whole single-process run into its own
 * folder), then wait for the other ranks. Their steps interleave at each step's await, so
 * sources sharing a forward pass see batch g asked for by each dictionary in turn.
 */
export async function trainModules(o: ModuleParallelOptions): Promise<Map<string, RunResult>> {
  const results = await Promise.all(o.modules.map((m) =>
    runTraining({
      cfg: m.cfg,
      train: m.train,
      data: m.data,
      out: moduleDir(o.out, m.hook),
      resume: o.resume,
      progress: o.progress,
      logEvery: o.logEvery,
      checkpointEvery: o.checkpointEvery,
      stopAfter: o.stopAfter,
    }).then((r) => [m.hook, r] as const)
  ));
  o.comm.barrier();
  return new Map(results);
}
