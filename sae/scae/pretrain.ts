/**
 * Pretraining a suite's dictionaries with the ordinary trainer (train/module_parallel.ts), side by
 * side on one model's activations: every module's batch g comes from one shared forward pass over
 * the same token rows (data/lm/harvest.ts), `attn_l` a TopK SAE on its output and `mlp_l` a TopK
 * transcoder fed (ln2-normalised input, MLP output) pairs. Each module's run folder is the suite's
 * module folder, so the trained folders plus suite.json are the suite.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import type { DataSource } from "../../data/sources.ts";
import type { LanguageModel } from "../../data/lm/model.ts";
import { harvestData } from "../../data/lm/harvest.ts";
import { resolveConfig } from "../config.ts";
import { resolveTrainConfig, type TrainConfigInput } from "../train/config.ts";
import type { ModuleRun } from "../train/module_parallel.ts";
import { residualStyle } from "./frozen.ts";
import { type ScaeModule, type SuiteInfo, suiteModules } from "./suite.ts";

export interface PretrainOptions {
  /** The model as named on the command line (recorded in suite.json and each cfg.json). */
  modelName: string;
  /** What the tokens were read from (cfg.json's dataset_path). */
  dataName: string;
  expansion: number;
  k: number;
  train: TrainConfigInput;
}

/**
 * A gate that keeps the side-by-side runs within `lead` batches of the slowest, so the batches
 * they share stay in the harvest's cache (one forward each). The slowest run never waits.
 */
export function lockstep(
  names: string[],
  lead = 2,
): (name: string, index: number) => Promise<void> {
  const at = new Map(names.map((n) => [n, -1]));
  let waiting: (() => void)[] = [];
  const slowest = () => Math.min(...at.values());
  return async (name, index) => {
    at.set(name, index);
    const wake = waiting;
    waiting = [];
    for (const w of wake) w();
    while (index - slowest() >= lead) await new Promise<void>((r) => waiting.push(r));
  };
}

/** One module's source: inputs (and, for a transcoder, targets) from the shared harvest. */
function moduleSource(
  m: ScaeModule,
  sources: Record<string, DataSource>,
  gate: (name: string, index: number) => Promise<void>,
): DataSource {
  const xs = sources[m.hookIn], ys = sources[m.hookOut];
  return {
    prepare: (i) => gate(m.name, i),
    batch: (i, size) =>
      m.kind === "attn" ? xs.batch(i, size) : { x: xs.batch(i, size).x, y: ys.batch(i, size).x },
    describe: () => m.kind === "attn" ? xs.describe() : `${xs.describe()} → ${m.hookOut}`,
    width: xs.width,
    ...(m.kind === "mlp" ? { targetWidth: ys.width } : {}),
  };
}

/**
 * The suite's description (C null until connected) and one trainer run per module over `tokens`
 * (i32 [N, T]); `forwards` counts the model passes the runs shared.
 */
export function pretrainRuns(
  model: LanguageModel,
  tokens: Tensor,
  o: PretrainOptions,
): { info: SuiteInfo; runs: ModuleRun[]; forwards: () => number } {
  const modules = suiteModules(model.cfg.nLayer);
  const info: SuiteInfo = {
    model: o.modelName,
    residual: residualStyle(model),
    modules,
    k: o.k,
    C: null,
  };
  const hooks = [...new Set(modules.flatMap((m) => [m.hookIn, m.hookOut]))];
  const harvest = harvestData(model, tokens, hooks, o.dataName);
  const gate = lockstep(modules.map((m) => m.name));
  const runs = modules.map((m): ModuleRun => {
    const data = moduleSource(m, harvest.sources, gate);
    const cfg = resolveConfig({
      arch: m.kind === "attn" ? "topk" : "transcoder",
      d_in: data.width,
      d_sae: Math.round(o.expansion * data.width),
      ...(data.targetWidth ? { d_out: data.targetWidth } : {}),
      k: o.k,
      // SAELens's names: `sae features SUITE/mlp_1` and `sae eval --model` find the hooks.
      extra: {
        model_name: o.modelName,
        hook_name: m.hookIn,
        ...(m.kind === "mlp" ? { hook_name_out: m.hookOut } : {}),
        context_size: tokens.shape[1],
        dataset_path: o.dataName,
      },
    });
    return { hook: m.name, cfg, train: resolveTrainConfig(cfg, o.train), data };
  });
  return { info, runs, forwards: harvest.forwards };
}
