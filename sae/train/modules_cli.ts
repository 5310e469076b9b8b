/**
 * `sae train --hooks A,B,C`: one dictionary per hook, split across the job's ranks (module
 * parallel), with activations harvested from a live model (`--model M --tokens ids.npy`: one
 * forward per batch on each rank, stopping at its last hook) or read from one store per hook
 * (`--data 'acts/{hook}'`). The job folder holds modules.json (which rank trained which hook)
 * and one run folder per hook, each what `sae train` writes for one dictionary.
 */
import process from "node:process";
import type { Communicator } from "../../tensor/distributed/communicator.ts";
import type { DataSource } from "../../data/sources.ts";
import { activationData } from "../../data/formats.ts";
import { ensureDir, writeJsonAtomic } from "../../data/atomic.ts";
import { loadNpy } from "../../data/npy.ts";
import { loadModel } from "../../data/lm/model.ts";
import { harvestData } from "../../data/lm/harvest.ts";
import { type ArchName, resolveConfig } from "../config.ts";
import { resolveTrainConfig, type TrainConfigInput } from "./config.ts";
import { architecture } from "../arch/registry.ts";
import { isTopkFamily } from "../arch/architecture.ts";
import type { Batch } from "../arch/architecture.ts";
import { evaluate } from "../eval/metrics.ts";
import { isSet, single } from "../threshold.ts";
import { assignModules, moduleDir, type ModuleRun, trainModules } from "./module_parallel.ts";

export interface ModulesCommand {
  hooks: string[];
  /** A model folder or repo id, with `tokens` (an int32 .npy [N, T]); or `data` with {hook}. */
  model?: string;
  tokens?: string;
  data?: string;
  arch: ArchName;
  dSae?: number;
  expansion?: number;
  k?: number;
  l1?: number;
  train: TrainConfigInput;
  out: string;
  resume: boolean;
  quiet: boolean;
}

/** Rows of `n` held-out batches far past the training batches. */
function* heldOut(data: DataSource, size: number, n: number): Generator<Batch> {
  for (let i = 0; i < n; i++) yield data.batch(1_000_000 + i, size);
}

/**
 * This rank's sources: harvested from the model (sharing its forward passes) or one store per
 * hook. `fail` raises a usage error.
 */
async function sourcesFor(
  c: ModulesCommand,
  hooks: string[],
  seed: number,
  fail: (m: string) => never,
): Promise<{ sources: Record<string, DataSource>; describe: (h: string) => unknown }> {
  if (c.model) {
    if (!c.tokens) fail("--model with --hooks needs --tokens ids.npy (int32 token ids [N, T])");
    if (c.data) fail("give --model and --tokens, or --data with {hook}, not both");
    const model = await loadModel(c.model);
    const tokens = await loadNpy(c.tokens!);
    if (tokens.dtype !== "i32" || tokens.ndim !== 2) {
      fail(
        `--tokens ${c.tokens}: expected int32 token ids [N, T], got ${tokens.dtype} [${tokens.shape}]`,
      );
    }
    const h = harvestData(model, tokens, hooks, c.tokens);
    return {
      sources: h.sources,
      describe: (hook) => ({ kind: "model", model: c.model, tokens: c.tokens, hook }),
    };
  }
  if (!c.data || !c.data.includes("{hook}")) {
    fail(
      "--hooks needs --model M --tokens ids.npy, or --data with {hook} in the path (one store per hook)",
    );
  }
  const sources: Record<string, DataSource> = {};
  for (const h of hooks) {
    const path = c.data!.replaceAll("{hook}", h);
    sources[h] = (await activationData(path, { seed }).catch((e) => {
      fail(`--data ${path}: ${(e as Error).message}`);
    }))!.data;
  }
  return {
    sources,
    describe: (hook) => ({ kind: "store", path: c.data!.replaceAll("{hook}", hook), hook }),
  };
}

export async function trainModulesCommand(
  c: ModulesCommand,
  comm: Communicator,
  fail: (m: string) => never,
): Promise<void> {
  const a = architecture(c.arch);
  if (a.input === "layers" || a.needsTargets) {
    fail(
      `--hooks trains one dictionary per hook's activations; --arch ${c.arch} needs other inputs`,
    );
  }
  if (c.dSae !== undefined && c.expansion !== undefined) {
    fail("give --d-sae or --expansion, not both");
  }
  let plan: string[][];
  try {
    plan = assignModules(c.hooks, comm.size);
  } catch (e) {
    fail((e as Error).message);
  }
  const mine = plan![comm.rank];
  const seed = c.train.seed ?? 0;
  const { sources, describe } = await sourcesFor(c, mine, seed, fail);
  const modules: ModuleRun[] = mine.map((hook) => {
    const data = sources[hook];
    const k = c.k ?? (isTopkFamily(a) ? 32 : undefined);
    const cfg = resolveConfig({
      arch: c.arch,
      d_in: data.width,
      d_sae: c.dSae ?? Math.round((c.expansion ?? 8) * data.width),
      ...(k !== undefined ? { k } : {}),
      ...(c.l1 !== undefined ? { l1_coefficient: c.l1 } : {}),
    });
    return { hook, cfg, train: resolveTrainConfig(cfg, c.train), data };
  });
  if (comm.rank === 0) {
    await ensureDir(c.out);
    await writeJsonAtomic(`${c.out}/modules.json`, {
      hooks: c.hooks,
      ranks: plan!,
      ...(c.model ? { model: c.model, tokens: c.tokens } : { data: c.data }),
    });
  }
  for (const m of modules) {
    await ensureDir(moduleDir(c.out, m.hook));
    await writeJsonAtomic(`${moduleDir(c.out, m.hook)}/data.json`, describe(m.hook));
    if (!c.quiet) {
      process.stderr.write(
        `rank ${comm.rank}: training ${c.arch} d_in=${m.cfg.d_in} d_sae=${m.cfg.d_sae} on ${m.data.describe()} for ${m.train.steps} steps of ${m.train.batch_size} → ${
          moduleDir(c.out, m.hook)
        }\n`,
      );
    }
  }
  const results = await trainModules({
    modules,
    out: c.out,
    comm,
    resume: c.resume,
    progress: false,
  });
  for (const m of modules) {
    const r = results.get(m.hook)!;
    const metrics = await evaluate(
      r.params,
      m.cfg,
      heldOut(m.data, m.train.batch_size, 4),
      isSet(r.state.threshold) ? { threshold: single(r.state.threshold, "sae train") } : {},
    );
    await writeJsonAtomic(`${moduleDir(c.out, m.hook)}/eval.json`, {
      ...metrics,
      feature_density: undefined,
    });
    if (!c.quiet) {
      console.log(
        `${m.hook} (rank ${comm.rank}): FVU ${metrics.fvu.toFixed(4)}, L0 ${metrics.l0.toFixed(1)}`,
      );
    }
  }
  comm.barrier();
}
