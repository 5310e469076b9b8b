/**
 * The `sae` command's own subcommands: train, eval, info, and the data commands convert and
 * inspect. The entry is the top-level cli.ts, which adds the server's `serve`. Bad arguments print
 * a message and exit with code 2.
 */
import process from "node:process";
import { readFile } from "node:fs/promises";
import type { Tensor } from "../tensor/tensor.ts";
import { getBackend } from "../tensor/registry.ts";
import { selectBackend } from "../tensor/webgpu/mod.ts";
import { norm } from "../tensor/ops/reduce.ts";
import { foldedThreshold } from "./train/step.ts";
import { type ArchName, ConfigError, resolveConfig } from "./config.ts";
import { resolveTrainConfig, type TrainConfigInput } from "./train/config.ts";
import { runTraining } from "./train/driver.ts";
import { type DataSource, syntheticData } from "../data/sources.ts";
import { loadSae } from "./io/saelens.ts";
import { evaluate, formatMetricsTable } from "./eval/metrics.ts";
import { isTopkFamily } from "./arch/architecture.ts";
import type { Batch } from "./arch/architecture.ts";
import { featureRecovery, makeSynthetic, type SyntheticConfig } from "../data/synthetic.ts";
import { activationData } from "../data/formats.ts";
import { ensureDir, typedArraysAsLists, writeJsonAtomic } from "../data/atomic.ts";
import { dataCommand } from "./io/commands.ts";
import { lmCommand, LmUsageError } from "../data/lm/commands.ts";
import { harvestCommand } from "../data/lm/harvest_cli.ts";
import { HarvestError } from "../data/lm/harvest_store.ts";
import { LmConfigError } from "../data/lm/config.ts";
import { LmLoadError } from "../data/lm/load.ts";
import { tokenizeCommand } from "../data/text/commands.ts";
import {
  CROSSCODER_FLAGS,
  CROSSCODER_HELP,
  crosscoderFlags,
  crosscoderInfo,
  crosscoderReport,
  pairedConfig,
  pairedSource,
} from "./crosscoder/cli.ts";
import type { PairedConfig } from "../data/synthetic.ts";
import { writeRunExtras } from "./eval/report.ts";
import { isSet, single } from "./threshold.ts";
import { MODEL_EVAL_FLAGS, MODEL_EVAL_HELP, modelEval, splicedReport } from "./eval/model_cli.ts";
import { FEATURES_HELP, featuresCommand } from "./eval/features_cli.ts";
import { DIFF_HELP, diffCommand } from "./crosscoder/diff_cli.ts";
import type { Communicator } from "../tensor/distributed/communicator.ts";
import { architecture, ARCHS, isCrosscoderArch } from "./arch/registry.ts";
import { finalizeDistributed, initDistributed, launchedRanks } from "../tensor/distributed/job.ts";
import { JobError, launchRanks } from "../tensor/distributed/launch.ts";
import { type ModulesCommand, trainModulesCommand } from "./train/modules_cli.ts";
import { LIVE_DEFAULTS, liveData } from "./train/live_cli.ts";
import { TEXT_FLAGS, textRowsOptions } from "../data/text/open_rows.ts";
import { applyMatmulPrecision, type PrecisionChoice } from "./train/precision.ts";
import { SCAE_HELP, scaeCommand } from "./scae/cli.ts";

class UsageError extends Error {}

export type Flags = Record<string, string | true>;

function parseArgs(argv: string[]): { positional: string[]; flags: Flags } {
  const positional: string[] = [], flags: Flags = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    if (eq > 0) flags[a.slice(2, eq)] = a.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) flags[a.slice(2)] = argv[++i];
    else flags[a.slice(2)] = true;
  }
  return { positional, flags };
}

function num(
  flags: Flags,
  name: string,
  opts: { int?: boolean; min?: number } = {},
): number | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (
    v === true || !Number.isFinite(n) || (opts.int && !Number.isInteger(n)) ||
    (opts.min !== undefined && n < opts.min)
  ) {
    throw new UsageError(
      `--${name} must be ${opts.int ? "an integer" : "a number"}${
        opts.min !== undefined ? ` >= ${opts.min}` : ""
      }, got ${JSON.stringify(v)}`,
    );
  }
  return n;
}

function str(flags: Flags, name: string): string | undefined {
  const v = flags[name];
  if (v === true) throw new UsageError(`--${name} needs a value`);
  return v;
}

function checkKnown(flags: Flags, known: string[], cmd: string): void {
  for (const f of Object.keys(flags)) {
    if (!known.includes(f)) {
      throw new UsageError(`sae ${cmd}: unknown option --${f} (see sae ${cmd} --help)`);
    }
  }
}

const TRAIN_HELP = `sae train: train a dictionary

  --arch NAME        ${ARCHS.join(" | ")} (default topk)
  --d-sae N          dictionary size, or --expansion R (d_sae = R·d_in; default 8)
  --k N              active features (TopK family; default 32, 8 on the synthetic default data)
  --l1 X             sparsity coefficient λ (ReLU, Gated, JumpReLU)
  --lr X             learning rate (default per architecture, dictionary_learning's)
  --steps N          training steps (default 1000)
  --batch N          batch size in rows (default 2048)
  --data PATH        activations: an Arrow store, a SAELens or dictionary_learning cache (DIR1,DIR2
                     for [N, L, d]), .npy or .safetensors ([N, d] or [N, L, d]); see sae convert --help.
                     Stores and caches stream through a shuffle buffer. Default (or
                     --data synthetic): synthetic superposition with known features
  --targets PATH     .npy/.safetensors of targets [N, d_out] (transcoders)
  --synthetic-d N, --synthetic-features N, --synthetic-active X   the synthetic data's width, true features, mean active
  --seed N           seed for initialisation and data order (default 0)
  --out DIR          run folder (default runs/<arch>-<seed>)
  --resume           continue from DIR/checkpoint
  --checkpoint-every N   steps between checkpoints (default a tenth of the run, at least 100)
  --ranks N          data parallel on N ranks: relaunches this command under mpirun -np N (every
                     rank trains on batch/N rows of each batch; rank 0 writes). Under mpirun or
                     srun, the ranks are the launcher's and this flag may be left out
  --hooks A,B,…      module parallel: one dictionary per hook point, whole dictionaries split across
                     the ranks (--ranks N: contiguous runs of hooks per rank); activations from
                     --model M (folder or repo id) --tokens ids.npy (int32 [N, T]; --batch rows =
                     batch/T sequences, one forward per batch per rank, stopped at its last hook),
                     or --data 'acts/{hook}' (one store per hook). Writes DIR/modules.json and
                     DIR/<hook>/, each a run folder as below
  --model M --hook H --data TEXT   activations straight from a live model (folder or repo id)
                     through an activation buffer, no store: H,H2,… reads rows [L, d] (MLSAE,
                     crosscoders); --model A,B --hook H --arch crosscoder|batchtopk-crosscoder|dfc
                     runs both models (one tokenizer) on the same tokens: rows [models, d], a
                     crosscoder across models (CE/KL per model at the end; then sae diff DIR);
                     --target-hook H gives a transcoder its targets. --data: text
                     (.txt, .jsonl(.zst), Parquet) tokenised by the model's tokenizer.json, or int32
                     ids (.npy); --context, --packing, --prepend-bos, --field, --separator, --format
                     as in sae harvest --help. --buffer-contexts N rows held (default 16 batches'
                     worth; refilled when half is read, served shuffled), --model-batch N rows per
                     forward (default 8), --exclude-special leaves out BOS/EOS/padding positions.
                     --resume continues exactly (the buffer is replayed on token ids, not recomputed).
                     At the end the dictionary is spliced into the model on the first --eval-tokens
                     (default 16384; 0: none) of --data: CE and KL recovered, into eval.json;
                     --features K then runs sae features over --data and prints K features
  --backend NAME     cpu | webgpu | auto (webgpu on a hardware adapter, else cpu; default: $SPARSECODER_BACKEND or cpu)
  --matmul-precision P   f32 (default) | bf16 (CPU: bf16 inputs and f32 sums through OpenBLAS's sbgemm
                     or AMX tiles, where the CPU has them, else f32 with the reason; CUDA: cuBLAS) | tf32 (CUDA)
  --quiet            no progress bar

Writes DIR/cfg.json + DIR/sae_weights.safetensors (SAELens layout), DIR/metrics.jsonl,
DIR/checkpoint/, DIR/data.json, DIR/eval.json, DIR/report.html (curves and density histogram,
readable offline), DIR/feature_density.npy and DIR/sample_inputs.npy (for sae serve's dashboard),
and prints the evaluation.
${CROSSCODER_HELP}`;

const EVAL_HELP = `sae eval DIR: evaluate a saved dictionary

  --data PATH        activations to evaluate on, any format --data of train reads (default: held-out batches of the run's synthetic data)
  --targets PATH     .npy/.safetensors targets for transcoders
  --batches N        number of batches (default 8)   --batch N   rows per batch (default 2048)
  --json             print JSON instead of a table
${MODEL_EVAL_HELP}`;

const INFO_HELP =
  `sae info DIR: summarise a saved dictionary (architecture, sizes, decoder norms, threshold, saved metrics)`;

const MAIN_HELP = `usage: sae <command> [options]

commands:
  train    train a dictionary (default data: synthetic superposition)
  eval     evaluate a saved dictionary
  info     summarise a saved dictionary
  convert  convert activations to an Arrow store / .npy, or a dictionary to a SAELens folder
  inspect  print the format, shapes, dtypes, rows and statistics of activations or a dictionary
  lm       language models: lm info (family, sizes, hooks), lm run (activations on token ids),
           lm train (a small GPT-2 with this library's autodiff), lm corpus (the registry
           corpus), lm tokenizer (train a byte-level BPE tokenizer on a corpus)
  tokenize a model's token ids and pieces for a text
  features statistics of a dictionary's features on a corpus: top contexts, histograms,
           interval samples, densities per layer and domain, logit effects (resumable)
  diff     model diffing: which features of a crosscoder across a base and a finetuned model
           fire on the finetuning domain's text
  harvest  a model's activations on a corpus into an Arrow store (resumable)
  scae     sparsely connected autoencoder suites: scae train | connect | finetune | eval
  serve    serve a dictionary over HTTP, with a dashboard

sae <command> --help for options.`;

/** `sae train`'s options for activations from a live model (besides --model and --data). */
const LIVE_FLAGS = [
  "hook",
  "target-hook",
  ...TEXT_FLAGS,
  "buffer-contexts",
  "model-batch",
  "exclude-special",
  "eval-tokens",
  "features",
];

async function dataFrom(
  flags: Flags,
  syn: SyntheticConfig | null,
  seed: number,
): Promise<
  { data: DataSource; describe: unknown; truth?: Tensor; extra?: Record<string, unknown> }
> {
  const path = str(flags, "data");
  const model = str(flags, "model");
  for (const f of LIVE_FLAGS) {
    if (flags[f] !== undefined && !model) throw new UsageError(`--${f} needs --model`);
  }
  if (model) {
    const hooks = (str(flags, "hook") ?? "").split(",").map((h) => h.trim()).filter((h) => h);
    if (!hooks.length) {
      throw new UsageError(
        "--model needs --hook NAME (A,B,… for rows [L, d]), or --hooks for one dictionary per hook",
      );
    }
    if (!path) throw new UsageError("--model needs --data (the text the model reads)");
    const models = model.split(",").map((m) => m.trim()).filter((m) => m);
    if (models.length > 1) checkSeveralModels(flags, models, hooks);
    if (flags.targets !== undefined || flags.tokens !== undefined) {
      throw new UsageError(
        `--${
          flags.targets !== undefined ? "targets" : "tokens"
        } does not apply with --model --hook (a transcoder's targets: --target-hook)`,
      );
    }
    return await liveData({
      models,
      hooks,
      targetHook: str(flags, "target-hook"),
      data: path,
      text: textRowsOptions(flags, usage, LIVE_DEFAULTS.context),
      bufferContexts: num(flags, "buffer-contexts", { int: true, min: 1 }),
      modelBatch: num(flags, "model-batch", { int: true, min: 1 }) ?? LIVE_DEFAULTS.modelBatch,
      excludeSpecial: flags["exclude-special"] === true,
      seed,
      batch: num(flags, "batch", { int: true, min: 1 }) ?? 2048,
    }, usage);
  }
  if (path) {
    // Any supported format: Arrow store, SAELens / dictionary_learning caches, .npy, .safetensors (data/formats.ts).
    const { data, describe } = await activationData(path, { targets: str(flags, "targets"), seed })
      .catch((e) => {
        throw new UsageError(`--data: ${(e as Error).message}`);
      });
    return { data, describe };
  }
  if (syn && "models" in syn) {
    return {
      data: pairedSource(syn as PairedConfig),
      describe: { kind: "synthetic", config: syn },
    };
  }
  const src = makeSynthetic(syn!);
  const truth = src.features.ndim === 2 ? src.features : undefined;
  return {
    data: syntheticData(src),
    describe: { kind: "synthetic", config: src.config },
    ...(truth ? { truth } : {}),
  };
}

/** `--model A,B`: a crosscoder across the models at one hook; other combinations are refused. */
function checkSeveralModels(flags: Flags, models: string[], hooks: string[]): void {
  const arch = str(flags, "arch") ?? "topk";
  const several = `--model ${models.join(",")}`;
  if (!isCrosscoderArch(arch)) {
    throw new UsageError(
      `${several}: several models train a crosscoder across them (--arch crosscoder | batchtopk-crosscoder | dfc), not a ${arch}`,
    );
  }
  if (hooks.length > 1) {
    throw new UsageError(
      `${several} --hook ${
        hooks.join(",")
      }: several models are read at one hook each (rows [models, d]); give one --hook`,
    );
  }
  if (flags["target-hook"] !== undefined) {
    throw new UsageError(`--target-hook does not apply with ${several}`);
  }
}

async function train(flags: Flags): Promise<void> {
  // `--data synthetic` names the default: the synthetic superposition with known features.
  if (flags.data === "synthetic") delete flags.data;
  checkKnown(flags, [
    "arch",
    "d-sae",
    "expansion",
    "k",
    "l1",
    "lr",
    "steps",
    "batch",
    "data",
    "targets",
    "synthetic-d",
    "synthetic-features",
    "synthetic-active",
    "seed",
    "out",
    "resume",
    "checkpoint-every",
    "backend",
    "matmul-precision",
    "quiet",
    "ranks",
    "hooks",
    "model",
    "tokens",
    ...LIVE_FLAGS,
    ...CROSSCODER_FLAGS,
  ], "train");
  const ranks = num(flags, "ranks", { int: true, min: 1 });
  const launched = launchedRanks();
  if (ranks !== undefined && ranks > 1 && !launched) {
    await launchRanks(ranks, ["train", ...argvWithout(flags, "ranks")]);
    return;
  }
  if (ranks !== undefined && launched && launched.size !== ranks) {
    throw new UsageError(
      `--ranks ${ranks}, but the launcher started ${launched.size} (${launched.by}); leave --ranks out under mpirun or srun`,
    );
  }
  const comm = initDistributed();
  try {
    if (flags.hooks !== undefined) await trainModulesCommand(modulesCommand(flags), comm, usage);
    else await trainOn(flags, comm);
  } catch (e) {
    if (comm.size === 1 || e instanceof UsageError || e instanceof ConfigError) throw e;
    // Every rank must stop, not wait in the next collective for this one.
    comm.abort(1, `sae train: rank ${comm.rank} of ${comm.size}: ${(e as Error).message}`);
  }
  finalizeDistributed();
}

const usage = (m: string): never => {
  throw new UsageError(m);
};

/** `sae train --hooks …`'s options (module parallel). */
function modulesCommand(flags: Flags): ModulesCommand {
  for (
    const f of ["targets", "resume-from", "checkpoint-every", ...LIVE_FLAGS, ...CROSSCODER_FLAGS]
  ) {
    if (flags[f] !== undefined) throw new UsageError(`--${f} does not apply with --hooks`);
  }
  if (str(flags, "model")?.includes(",")) {
    throw new UsageError("--hooks reads one model: several models (--model A,B) need --hook H");
  }
  const hooks = (str(flags, "hooks") ?? "").split(",").map((h) => h.trim()).filter((h) => h);
  if (!hooks.length) {
    throw new UsageError(
      "--hooks needs hook names, e.g. blocks.0.hook_resid_post,blocks.1.hook_resid_post",
    );
  }
  const arch = (str(flags, "arch") ?? "topk") as ArchName;
  if (!ARCHS.includes(arch)) {
    throw new UsageError(`--arch must be one of ${ARCHS.join(", ")}, got ${JSON.stringify(arch)}`);
  }
  const seed = num(flags, "seed", { int: true, min: 0 }) ?? 0;
  const train: TrainConfigInput = { seed };
  const steps = num(flags, "steps", { int: true, min: 1 }),
    batch = num(flags, "batch", { int: true, min: 1 });
  const lr = num(flags, "lr", { min: 0 });
  if (steps !== undefined) train.steps = steps;
  if (batch !== undefined) train.batch_size = batch;
  if (lr !== undefined) train.lr = lr;
  return {
    hooks,
    model: str(flags, "model"),
    tokens: str(flags, "tokens"),
    data: str(flags, "data"),
    arch,
    dSae: num(flags, "d-sae", { int: true, min: 1 }),
    expansion: num(flags, "expansion", { min: 0 }),
    k: num(flags, "k", { int: true, min: 1 }),
    l1: num(flags, "l1", { min: 0 }),
    train,
    out: str(flags, "out") ?? `runs/modules-${seed}`,
    resume: flags.resume === true,
    quiet: flags.quiet === true,
  };
}

/** The command line that gives `flags` again, less `drop`. */
function argvWithout(flags: Flags, drop: string): string[] {
  return Object.entries(flags).flatMap(([k, v]) =>
    k === drop ? [] : v === true ? [`--${k}`] : [`--${k}`, v]
  );
}

async function trainOn(flags: Flags, comm: Communicator): Promise<void> {
  const writer = comm.rank === 0;
  const arch = (str(flags, "arch") ?? "topk") as ArchName;
  if (!ARCHS.includes(arch)) {
    throw new UsageError(`--arch must be one of ${ARCHS.join(", ")}, got ${JSON.stringify(arch)}`);
  }
  const backend = str(flags, "backend");
  if (backend) await chooseBackend(backend);
  const asked = str(flags, "matmul-precision");
  let precision: PrecisionChoice | null = null;
  try {
    if (asked) precision = applyMatmulPrecision(asked, getBackend().name);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const seed = num(flags, "seed", { int: true, min: 0 }) ?? 0;
  const synD = num(flags, "synthetic-d", { int: true, min: 1 }) ?? 64;
  const syn: SyntheticConfig = {
    d: synD,
    nFeatures: num(flags, "synthetic-features", { int: true, min: 1 }) ?? synD * 4,
    meanActive: num(flags, "synthetic-active", { min: 0 }) ?? 5,
    seed,
    ...(architecture(arch).input === "layers" ? { layers: 4 } : {}),
  };
  const cross = isCrosscoderArch(arch)
    ? crosscoderFlags(flags, undefined, (m) => {
      throw new UsageError(m);
    })
    : null;
  const exclusive = num(flags, "synthetic-exclusive", { int: true, min: 0 });
  const { data, describe, truth, extra } = await dataFrom(
    flags,
    cross ? pairedConfig(syn, cross.n_inputs ?? 2, exclusive) as unknown as SyntheticConfig : syn,
    seed,
  );
  // A corpus read part-way holds files open: close it however training ends.
  try {
    if (cross && str(flags, "data")) {
      Object.assign(
        cross,
        crosscoderFlags(flags, data.layers ?? 1, (m) => {
          throw new UsageError(m);
        }),
      );
    }
    if (architecture(arch).needsTargets && !data.targetWidth && !str(flags, "data")) {
      throw new UsageError(
        `--arch ${arch} needs --data and --targets (input and output activations)`,
      );
    }
    const d_in = data.width;
    if (flags["d-sae"] !== undefined && flags.expansion !== undefined) {
      throw new UsageError("give --d-sae or --expansion, not both");
    }
    const d_sae = num(flags, "d-sae", { int: true, min: 1 }) ??
      Math.round((num(flags, "expansion", { min: 0 }) ?? 8) * d_in);
    // The synthetic default has ~5 active features per sample: k = 8 fits it; real data keeps 32.
    const topkFamily = isTopkFamily(architecture(arch));
    const k = num(flags, "k", { int: true, min: 1 }) ??
      (str(flags, "data") || !topkFamily ? undefined : 8);
    const l1 = num(flags, "l1", { min: 0 });
    const cfg = resolveConfig({
      arch,
      d_in,
      d_sae,
      ...(data.targetWidth ? { d_out: data.targetWidth } : {}),
      ...(k !== undefined ? { k } : {}),
      ...(l1 !== undefined ? { l1_coefficient: l1 } : {}),
      ...(cross ?? {}),
      ...(extra ? { extra } : {}),
    });
    const tin: TrainConfigInput = { seed };
    for (const [flag, field] of [["steps", "steps"], ["batch", "batch_size"]] as const) {
      const v = num(flags, flag, { int: true, min: 1 });
      if (v !== undefined) tin[field] = v;
    }
    const lr = num(flags, "lr", { min: 0 });
    if (lr !== undefined) tin.lr = lr;
    const tcfg = resolveTrainConfig(cfg, tin);
    if (tcfg.batch_size % comm.size !== 0) {
      throw new UsageError(
        `--batch ${tcfg.batch_size} must be divisible by the ${comm.size} ranks (each trains on batch/ranks rows)`,
      );
    }
    const out = str(flags, "out") ?? `runs/${arch}-${seed}`;
    const quiet = flags.quiet === true;
    if (!quiet && writer) {
      process.stderr.write(
        `training ${arch} d_in=${d_in} d_sae=${d_sae}${
          cfg.k ? ` k=${cfg.k}` : ""
        } for ${tcfg.steps} steps of ${tcfg.batch_size} on ${data.describe()} (${getBackend().info()}${
          comm.size > 1 ? `; ${comm.size} ranks × ${tcfg.batch_size / comm.size} rows` : ""
        }${
          precision
            ? `; matmul ${precision.running}${precision.via ? ` (${precision.via})` : ""}`
            : ""
        }) → ${out}\n`,
      );
    }
    // A fallback is a warning, shown even with --quiet.
    if (precision?.reason && writer) {
      console.error(
        `--matmul-precision ${precision.asked}: running ${precision.running} (${precision.reason})`,
      );
    }
    if (writer) {
      await ensureDir(out);
      await writeJsonAtomic(`${out}/data.json`, describe);
    }
    const res = await runTraining({
      cfg,
      train: tcfg,
      data,
      out,
      resume: flags.resume === true,
      checkpointEvery: num(flags, "checkpoint-every", { int: true, min: 1 }),
      progress: !quiet,
      comm,
    });
    // The other ranks are done: rank 0 evaluates and reports.
    if (!writer) return;
    if (cross) {
      const r = await crosscoderReport(
        res.params,
        cfg,
        heldOut(data, tcfg.batch_size, 4, 1_000_000),
        foldedThreshold(res.state, cfg),
      );
      const downstream = await liveDownstream(out, flags);
      await writeJsonAtomic(`${out}/eval.json`, { ...r.json, ...(downstream?.json ?? {}) });
      console.log(r.text);
      if (downstream) console.log(downstream.text);
      await liveFeatures(out, flags);
      return;
    }
    const m = await evaluate(
      res.params,
      cfg,
      heldOut(data, tcfg.batch_size, 4, 1_000_000),
      isSet(res.state.threshold) ? { threshold: single(res.state.threshold, "sae train") } : {},
    );
    const recovery = truth ? await recoveryOf(truth, res.params.W_dec) : null;
    const downstream = await liveDownstream(out, flags);
    await writeJsonAtomic(`${out}/eval.json`, {
      ...m,
      feature_density: undefined,
      ...(recovery ?? {}),
      ...(downstream?.json ?? {}),
      ...(precision ? { matmul_precision: precision } : {}),
    });
    await data.prepare?.(3_000_000, 32);
    await writeRunExtras(out, m, data.batch(3_000_000, 32));
    console.log(formatMetricsTable(m));
    if (recovery) console.log(recoveryLine(recovery));
    if (downstream) console.log(downstream.text);
    await liveFeatures(out, flags);
  } finally {
    await data.close?.();
  }
}

/**
 * A live run's CE and KL recovered: the saved dictionary spliced into the model (each model in
 * turn, for a crosscoder across models) on the first --eval-tokens of --data (the text the
 * dictionary trained on, as SAELens's evals read the training stream). Null when the run did not
 * read a live model or --eval-tokens is 0.
 */
async function liveDownstream(
  out: string,
  flags: Flags,
): Promise<{ json: Record<string, unknown>; text: string } | null> {
  const model = str(flags, "model");
  const tokens = num(flags, "eval-tokens", { int: true, min: 0 }) ?? 16384;
  if (!model || tokens === 0) return null;
  const pass = Object.fromEntries(
    ["model", "data", ...TEXT_FLAGS].filter((f) => flags[f] !== undefined).map((
      f,
    ) => [f, flags[f]]),
  );
  return await splicedReport(await loadSae(out), { ...pass, tokens: String(tokens) }, usage);
}

/**
 * `--features K` on a live run: the features pass of `sae features` over --data (its default
 * --tokens), DIR/features/ written and K features printed with their top contexts.
 */
async function liveFeatures(out: string, flags: Flags): Promise<void> {
  const show = num(flags, "features", { int: true, min: 0 }) ?? 0;
  if (!str(flags, "model") || show === 0) return;
  const pass = Object.fromEntries(
    ["model", "data", "quiet", ...TEXT_FLAGS].filter((f) => flags[f] !== undefined).map((
      f,
    ) => [f, flags[f]]),
  );
  console.log(`\n${show} features (sae features ${out} --show ${show}):`);
  await featuresCommand(out, { ...pass, show: String(show) }, usage);
}

/** --backend: a bad or unavailable name is a usage error (exit 2) naming the reason. */
async function chooseBackend(name: string): Promise<void> {
  await selectBackend(name, "--backend").catch((e) => {
    throw new UsageError((e as Error).message);
  });
}

/** Ground-truth recovery on synthetic data: true features matched by a decoder row with cosine > 0.9, and MMCS. */
async function recoveryOf(
  truth: Tensor,
  W_dec: Tensor,
): Promise<{ true_features_recovered: number; true_features: number; recovery_mmcs: number }> {
  const r = await featureRecovery(truth, W_dec, 0.9);
  return {
    true_features_recovered: r.recovered,
    true_features: truth.shape[0],
    recovery_mmcs: r.mmcs,
  };
}

function recoveryLine(
  r: { true_features_recovered: number; true_features: number; recovery_mmcs: number },
): string {
  return `true features recovered (cos > 0.9): ${r.true_features_recovered}/${r.true_features} (${
    (100 * r.true_features_recovered / r.true_features).toFixed(1)
  }%), MMCS ${r.recovery_mmcs.toFixed(4)}`;
}

/** Batches far past anything training reads (synthetic sources are infinite; arrays wrap around). */
async function* heldOut(
  data: DataSource,
  size: number,
  n: number,
  offset: number,
): AsyncGenerator<Batch> {
  for (let i = 0; i < n; i++) {
    await data.prepare?.(offset + i, size);
    yield data.batch(offset + i, size);
  }
}

async function evalCmd(dir: string | undefined, flags: Flags): Promise<void> {
  checkKnown(
    flags,
    ["data", "targets", "batches", "batch", "json", "backend", ...MODEL_EVAL_FLAGS],
    "eval",
  );
  if (!dir) throw new UsageError("sae eval: missing the dictionary folder (sae eval DIR)");
  const backend = str(flags, "backend");
  if (backend) await chooseBackend(backend);
  const saved = await loadSae(dir);
  const fail = (m: string): never => {
    throw new UsageError(m);
  };
  if (str(flags, "model")) {
    for (const f of ["targets", "batches"]) {
      if (flags[f] !== undefined) {
        fail(`sae eval: --${f} does not apply with --model (see --tokens)`);
      }
    }
    return await modelEval(saved, flags, fail);
  }
  for (const f of MODEL_EVAL_FLAGS) {
    if (flags[f] !== undefined) fail(`sae eval: --${f} needs --model`);
  }
  let syn: SyntheticConfig | null = null;
  if (!str(flags, "data")) {
    const describe = JSON.parse(
      await readFile(`${dir}/data.json`, "utf8").catch(() => {
        throw new UsageError(`sae eval: ${dir}/data.json not found; pass --data PATH`);
      }),
    );
    if (describe.kind === "model") {
      throw new UsageError(
        `sae eval: ${dir} was trained on ${describe.model} ${
          describe.hooks.join(",")
        } read live from ${describe.data}; pass --model M --data ids.npy (spliced into the model) or --data ACTIVATIONS`,
      );
    }
    if (describe.kind !== "synthetic") {
      throw new UsageError(`sae eval: ${dir} was trained on ${describe.path}; pass --data PATH`);
    }
    syn = describe.config;
  }
  const { data, truth } = await dataFrom(flags, syn, 0);
  const batches = num(flags, "batches", { int: true, min: 1 }) ?? 8;
  const size = num(flags, "batch", { int: true, min: 1 }) ?? 2048;
  const theta = saved.threshold;
  if (isCrosscoderArch(saved.cfg.arch)) {
    const r = await crosscoderReport(
      saved.params,
      saved.cfg,
      heldOut(data, size, batches, 2_000_000),
      theta,
    );
    console.log(flags.json ? JSON.stringify(r.json, typedArraysAsLists) : r.text);
    return;
  }
  const m = await evaluate(
    saved.params,
    saved.cfg,
    heldOut(data, size, batches, 2_000_000),
    isSet(theta) ? { threshold: single(theta, "sae eval") } : {},
  );
  const recovery = truth ? await recoveryOf(truth, saved.params.W_dec) : null;
  if (flags.json) {
    console.log(
      JSON.stringify({ ...m, feature_density: undefined, ...(recovery ?? {}) }, typedArraysAsLists),
    );
  } else {
    console.log(formatMetricsTable(m));
    if (recovery) console.log(recoveryLine(recovery));
  }
}

async function info(dir: string | undefined, flags: Flags): Promise<void> {
  checkKnown(flags, ["json"], "info");
  if (!dir) throw new UsageError("sae info: missing the dictionary folder (sae info DIR)");
  const { params, cfg, threshold, metrics } = await loadSae(dir);
  const norms = await norm(params.W_dec, -1).data();
  const sorted = Float64Array.from(norms).sort();
  const nParams = Object.values(params).reduce((n, x) => n + (x ? x.size : 0), 0);
  const evalJson = await readFile(`${dir}/eval.json`, "utf8").then(
    JSON.parse,
    () => metrics ?? null,
  );
  const summary = {
    folder: dir,
    architecture: cfg.arch,
    d_in: cfg.d_in,
    d_sae: cfg.d_sae,
    ...(cfg.d_out !== cfg.d_in ? { d_out: cfg.d_out } : {}),
    ...(cfg.k ? { k: cfg.k } : {}),
    ...(isCrosscoderArch(cfg.arch) ? crosscoderInfo(cfg) : {}),
    ...(threshold !== undefined ? { threshold } : {}),
    dtype: params.W_enc.dtype,
    parameters: nParams,
    decoder_norm: {
      min: sorted[0],
      median: sorted[Math.floor(sorted.length / 2)],
      max: sorted[sorted.length - 1],
    },
    apply_b_dec_to_input: cfg.apply_b_dec_to_input,
    evaluation: evalJson
      ? Object.fromEntries(Object.entries(evalJson).filter(([, v]) => typeof v === "number"))
      : null,
  };
  if (flags.json) console.log(JSON.stringify(summary));
  else {
    for (const [k, v] of Object.entries(summary)) {
      if (v && typeof v === "object") {
        console.log(
          `${k}:\n${
            Object.entries(v).map(([a, b]) =>
              `  ${a.padEnd(30)} ${typeof b === "number" ? Number(b.toPrecision(6)) : b}`
            ).join("\n")
          }`,
        );
      } else console.log(`${k.padEnd(32)} ${v}`);
    }
  }
}

/**
 * A command a higher layer adds (the top-level cli.ts adds `serve`): it runs with the parsed
 * arguments, prints its own help on --help, and reports usage errors as ConfigErrors.
 */
export type Command = (positional: string[], flags: Flags) => Promise<void>;

/** Run the `sae` command line; `commands` are those of layers above sae/ (exit code returned). */
export async function main(
  argv: string[],
  commands: Readonly<Record<string, Command>> = {},
): Promise<number> {
  const [cmd, ...rest] = argv;
  const { positional, flags } = parseArgs(rest);
  try {
    if (!cmd || cmd === "--help" || cmd === "help") {
      console.log(MAIN_HELP);
      return cmd ? 0 : 2;
    }
    if (cmd === "convert" || cmd === "inspect") return await dataCommand(cmd, positional, flags);
    if (cmd === "lm") {
      await lmCommand(positional, flags);
      return 0;
    }
    if (cmd === "harvest") {
      await harvestCommand(positional, flags);
      return 0;
    }
    if (cmd === "tokenize") return await tokenizeCommand(positional, flags);
    const above = commands[cmd];
    if (above) {
      await above(positional, flags);
      return 0;
    }
    const help = {
      train: TRAIN_HELP,
      eval: EVAL_HELP,
      info: INFO_HELP,
      features: FEATURES_HELP,
      diff: DIFF_HELP,
      scae: SCAE_HELP,
    }[cmd];
    if (!help) throw new UsageError(`unknown command ${JSON.stringify(cmd)}\n\n${MAIN_HELP}`);
    if (flags.help) {
      console.log(help);
      return 0;
    }
    if (cmd === "train") {
      if (positional.length) {
        throw new UsageError(`sae train: unexpected argument ${JSON.stringify(positional[0])}`);
      }
      await train(flags);
    } else if (cmd === "eval") await evalCmd(positional[0], flags);
    else if (cmd === "features") {
      await featuresCommand(positional[0], flags, (m) => {
        throw new UsageError(m);
      });
    } else if (cmd === "diff") await diffCommand(positional[0], flags, usage);
    else if (cmd === "scae") await scaeCommand(positional, flags, usage);
    else await info(positional[0], flags);
    return 0;
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof LmUsageError) {
      console.error(`sae: ${e.message}`);
      return 2;
    }
    // Ranks started by --ranks that failed: which was lost, and mpirun's status.
    if (e instanceof JobError) {
      console.error(`sae: ${e.message}`);
      return e.status;
    }
    // A model folder that cannot be read: the message names the file, tensor or field.
    if (e instanceof LmConfigError || e instanceof LmLoadError || e instanceof HarvestError) {
      console.error(`sae: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
