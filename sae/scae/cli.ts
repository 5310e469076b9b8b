/**
 * `sae scae train|connect|finetune|eval SUITE`: an SCAE suite's pretraining (pretrain.ts, the
 * ordinary trainer), connection estimate (connect.ts), finetuning through the pruned pass
 * (finetune.ts) and evaluation (evaluate.ts), each on a model and its token rows (--data: text
 * through the model's tokenizer, or int32 ids .npy, as `sae eval --model` reads them).
 */
import process from "node:process";
import { join } from "node:path";
import { readFile } from "node:fs/promises";
import type { Tensor } from "../../tensor/tensor.ts";
import { contiguous, sliceAxis } from "../../tensor/ops/shape.ts";
import { singleProcess } from "../../tensor/distributed/communicator.ts";
import { ensureDir, writeJsonAtomic } from "../../data/atomic.ts";
import type { LanguageModel } from "../../data/lm/model.ts";
import { TEXT_FLAGS, TEXT_FLAGS_HELP } from "../../data/text/open_rows.ts";
import {
  evalModels,
  evalTokens,
  type Fail,
  type Flags,
  integer,
  value,
} from "../eval/eval_tokens.ts";
import { tokenBatches } from "../eval/downstream.ts";
import { trainModules } from "../train/module_parallel.ts";
import {
  type Connections,
  CONNECTIONS_FILE,
  loadConnections,
  saveConnections,
  saveSuiteConnections,
} from "./connections.ts";
import { accumulate, emptyStats, selectConnections } from "./connect.ts";
import { type HeadWeights, headWeights } from "./frozen.ts";
import { pretrainRuns } from "./pretrain.ts";
import {
  FINETUNE_LOSSES,
  type FinetuneConfig,
  type FinetuneLoss,
  finetuneSetup,
  runFinetune,
} from "./finetune.ts";
import { type EvalC, evaluateSuite, formatSuiteEvaluation } from "./evaluate.ts";
import {
  loadSuite,
  readSuiteInfo,
  saveSuite,
  type ScaeSuite,
  SUITE_FILE,
  suiteJson,
  upstreamOf,
} from "./suite.ts";

const DATA_FLAGS = ["model", "data", "tokens", "skip-tokens", ...TEXT_FLAGS, "quiet"];

export const SCAE_HELP = `sae scae: sparsely connected autoencoder suites (docs/scae.md)

  sae scae train SUITE --model M --data TEXT   pretrain attn_l (TopK SAE on blocks.l.hook_attn_out)
      and mlp_l (TopK transcoder blocks.l.ln2.hook_normalized → blocks.l.hook_mlp_out) for every
      layer, one model forward per batch feeding all of them; writes SUITE/suite.json and SUITE/<module>/
      --expansion R (default 4)  --k N (32)  --steps N (1000)  --batch N tokens per step (2048,
      whole rows of --context)  --lr X  --seed N  --resume
  sae scae connect SUITE --c C                 each downstream feature's top C upstream features by
      mean |contribution| over --tokens (ranked jointly over upstream modules): writes
      SUITE/connections.safetensors and C into suite.json   --model-batch N rows per forward (8)
  sae scae finetune SUITE --out DIR --loss fvu|ce|fvu+ce   finetune every dictionary through the
      pruned pass; writes the finetuned suite to DIR (with SUITE's connections)
      --c C|all (default suite.json's C)  --auxk (α 1/32, dead after --dead-tokens N, default
      1000000)  --steps N (300)  --batch N tokens per step (2048)  --lr X (1e-4)
      --checkpoint-every N (50; DIR/checkpoint)  --resume (continues bit-identically)
  sae scae eval SUITE --c 0,4,16,64,all        per-module FVU and L0, CE, ce_diff (vs the clean
      model) and CE loss recovered (vs zero-ablation) for the unpruned suite (each module on its
      clean input) and the pruned pass at each C (all: every upstream feature); --json
      --model-batch N rows per forward (8)

  common: --model M (default: suite.json's model)  --data TEXT|ids.npy  --tokens N (train: steps ×
  batch; others 32768)  --skip-tokens N (leave out the first N tokens: evaluate on text the
  training did not read)  --quiet
${TEXT_FLAGS_HELP}`;

function checkKnown(flags: Flags, known: string[], cmd: string, fail: Fail): void {
  for (const f of Object.keys(flags)) {
    if (!known.includes(f)) fail(`sae scae ${cmd}: unknown option --${f} (see sae scae --help)`);
  }
}

/** The model and its token rows [N, T] from the flags (--tokens after --skip-tokens). */
async function modelTokens(
  flags: Flags,
  fail: Fail,
  defaults: { model?: string; tokens: number },
): Promise<{ model: LanguageModel; name: string; tokens: Tensor; data: string }> {
  const f: Flags = {};
  for (const k of ["data", ...TEXT_FLAGS]) if (flags[k] !== undefined) f[k] = flags[k];
  const name = value(flags, "model", fail) ?? defaults.model ??
    fail("sae scae: --model M is needed");
  f.model = name;
  const data = value(flags, "data", fail) ?? fail("sae scae: --data TEXT|ids.npy is needed");
  const skip = integer(flags, "skip-tokens", 0, fail) ?? 0;
  const want = integer(flags, "tokens", 1, fail) ?? defaults.tokens;
  f.tokens = String(skip + want);
  const { models, dirs } = await evalModels(f, fail);
  const { tokens, context } = await evalTokens(f, models[0], dirs[0], fail);
  const from = Math.ceil(skip / context);
  if (from >= tokens.shape[0]) {
    fail(`--skip-tokens ${skip} leaves none of the ${tokens.shape[0] * context} tokens of ${data}`);
  }
  const rows = from === 0 ? tokens : contiguous(sliceAxis(tokens, 0, from, tokens.shape[0]));
  return { model: models[0], name, tokens: rows, data };
}

/** Token rows per step from --batch (tokens, whole rows of the context). */
function rowsPerStep(flags: Flags, T: number, fail: Fail): number {
  const batch = integer(flags, "batch", 1, fail) ?? 2048;
  if (batch % T !== 0) fail(`--batch ${batch} must be whole rows of the ${T}-token context`);
  return batch / T;
}

function number(flags: Flags, name: string, fail: Fail): number | undefined {
  const v = value(flags, name, fail);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    fail(`--${name} must be a number >= 0, got ${JSON.stringify(v)}`);
  }
  return n;
}

async function loadSuiteOrFail(dir: string, fail: Fail): Promise<ScaeSuite> {
  return await loadSuite(dir).catch((e) => fail(`sae scae: ${(e as Error).message}`));
}

function headsOf(model: LanguageModel, suite: ScaeSuite): Record<number, HeadWeights> {
  const heads: Record<number, HeadWeights> = {};
  for (const m of suite.modules) {
    if (m.kind === "attn") heads[m.layer] = headWeights(model, m.layer);
  }
  return heads;
}

/** C must fit every (downstream, upstream) table: at most the smallest upstream module's features. */
function checkC(suite: ScaeSuite, C: number, flag: string, fail: Fail): void {
  for (const down of suite.modules) {
    for (const up of upstreamOf(suite, down.name)) {
      const F = suite.dicts[up.name].cfg.d_sae;
      if (C > F) {
        fail(
          `${flag} ${C} exceeds ${up.name}'s ${F} features (upstream of ${down.name}); each table is [F_down, C] over one upstream module (every feature: --c all)`,
        );
      }
    }
  }
}

async function train(dir: string, flags: Flags, fail: Fail): Promise<void> {
  checkKnown(
    flags,
    [...DATA_FLAGS, "expansion", "k", "steps", "batch", "lr", "seed", "resume"],
    "train",
    fail,
  );
  const steps = integer(flags, "steps", 1, fail) ?? 1000;
  const batch = integer(flags, "batch", 1, fail) ?? 2048;
  const { model, name, tokens, data } = await modelTokens(flags, fail, {
    tokens: (steps + 1) * batch,
  });
  const T = tokens.shape[1];
  rowsPerStep(flags, T, fail);
  const lr = number(flags, "lr", fail);
  const { info, runs, forwards } = pretrainRuns(model, tokens, {
    modelName: name,
    dataName: data,
    expansion: number(flags, "expansion", fail) ?? 4,
    k: integer(flags, "k", 1, fail) ?? 32,
    train: {
      seed: integer(flags, "seed", 0, fail) ?? 0,
      steps,
      batch_size: batch,
      ...(lr !== undefined ? { lr } : {}),
    },
  });
  const quiet = flags.quiet === true;
  if (!quiet) {
    process.stderr.write(
      `scae train: ${
        runs.map((r) => `${r.hook} ${r.cfg.arch} ${r.cfg.d_in}→${r.cfg.d_sae}`).join(", ")
      } k=${info.k}, ${steps} steps of ${batch} tokens from ${
        tokens.shape[0]
      } rows × ${T} → ${dir}\n`,
    );
  }
  await ensureDir(dir);
  const started = performance.now();
  const results = await trainModules({
    modules: runs,
    out: dir,
    comm: singleProcess("sae scae train"),
    resume: flags.resume === true,
    progress: false,
  });
  await writeJsonAtomic(join(dir, SUITE_FILE), suiteJson(info));
  for (const r of runs) {
    const last = results.get(r.hook)!.last;
    console.log(
      `${r.hook}: ${
        last ? `FVU ${last.fvu.toFixed(4)}, L0 ${last.l0.toFixed(1)} (last step)` : "no steps run"
      }`,
    );
  }
  console.log(
    `${dir}: ${runs.length} modules, ${forwards()} model forwards, ${
      ((performance.now() - started) / 1000).toFixed(1)
    } s`,
  );
}

async function connect(dir: string, flags: Flags, fail: Fail): Promise<void> {
  checkKnown(flags, [...DATA_FLAGS, "c", "model-batch"], "connect", fail);
  const suite = await loadSuiteOrFail(dir, fail);
  const C = integer(flags, "c", 1, fail) ?? fail("sae scae connect: --c C is needed");
  checkC(suite, C, "--c", fail);
  const { model, tokens } = await modelTokens(flags, fail, { model: suite.model, tokens: 32768 });
  const started = performance.now();
  const stats = emptyStats();
  for (const tb of tokenBatches(tokens, integer(flags, "model-batch", 1, fail) ?? 8)) {
    await accumulate(stats, model, suite, tb);
  }
  const conns = await selectConnections(stats, suite, headsOf(model, suite), C);
  await saveSuiteConnections(dir, suite, conns);
  let kept = 0, features = 0;
  for (const ups of Object.values(conns)) {
    features += Object.values(ups)[0]?.rows ?? 0;
    for (const t of Object.values(ups)) for (const id of t.ids) if (id >= 0) kept++;
  }
  console.log(
    `${dir}/${CONNECTIONS_FILE}: C ${C} from ${stats.tokens} tokens, ${kept} connections (${
      (kept / Math.max(1, features)).toFixed(2)
    } per downstream feature), ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
}

async function suiteConnections(
  dir: string,
  suite: ScaeSuite,
  fail: Fail,
): Promise<Connections | null> {
  const path = join(dir, CONNECTIONS_FILE);
  const has = await readFile(path).then(() => true, () => false);
  if (!has) return null;
  return await loadConnections(path, suite, (m) => suite.dicts[m].cfg.d_sae).catch((e) =>
    fail(`sae scae: ${(e as Error).message}`)
  );
}

/** The widest C the stored tables give (joint over a row's upstream modules). */
function storedC(conns: Connections): number {
  let c = 0;
  for (const ups of Object.values(conns)) for (const t of Object.values(ups)) c = Math.max(c, t.C);
  return c;
}

function parseC(v: string, flag: string, fail: Fail): EvalC {
  if (v === "all") return "all";
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) fail(`${flag}: ${JSON.stringify(v)} is not a count or "all"`);
  return n;
}

async function finetune(dir: string, flags: Flags, fail: Fail): Promise<void> {
  checkKnown(
    flags,
    [
      ...DATA_FLAGS,
      "out",
      "loss",
      "auxk",
      "dead-tokens",
      "c",
      "steps",
      "batch",
      "lr",
      "checkpoint-every",
      "resume",
      "stop-after",
    ],
    "finetune",
    fail,
  );
  const out = value(flags, "out", fail) ?? fail("sae scae finetune: --out DIR is needed");
  const loss = (value(flags, "loss", fail) ?? "fvu") as FinetuneLoss;
  if (!FINETUNE_LOSSES.includes(loss)) {
    fail(`--loss must be one of ${FINETUNE_LOSSES.join(", ")}, got ${JSON.stringify(loss)}`);
  }
  const suite = await loadSuiteOrFail(dir, fail);
  const cFlag = value(flags, "c", fail);
  const C: EvalC = cFlag !== undefined ? parseC(cFlag, "--c", fail) : suite.C ??
    fail(`sae scae finetune: ${dir} has no connections; run sae scae connect or pass --c all`);
  const conns = await suiteConnections(dir, suite, fail);
  if (C !== "all") {
    checkC(suite, C, "--c", fail);
    if (!conns) {
      fail(
        `sae scae finetune: ${dir}/${CONNECTIONS_FILE} not found; run sae scae connect --c ${C}`,
      );
    }
    if (C > storedC(conns!)) {
      fail(
        `--c ${C} exceeds the ${
          storedC(conns!)
        } connections stored in ${dir}/${CONNECTIONS_FILE}; connect with a larger --c`,
      );
    }
  }
  const steps = integer(flags, "steps", 1, fail) ?? 300;
  const batch = integer(flags, "batch", 1, fail) ?? 2048;
  const { model, tokens } = await modelTokens(flags, fail, {
    model: suite.model,
    tokens: steps * batch,
  });
  const cfg: FinetuneConfig = {
    loss,
    C,
    steps,
    rows: rowsPerStep(flags, tokens.shape[1], fail),
    lr: number(flags, "lr", fail) ?? 1e-4,
    gradClip: 1,
    auxkAlpha: flags.auxk === true ? 1 / 32 : 0,
    deadTokens: integer(flags, "dead-tokens", 1, fail) ?? 1_000_000,
  };
  if (flags.auxk !== undefined && flags.auxk !== true) fail("--auxk takes no value");
  const setup = finetuneSetup(model, suite, conns, cfg);
  const identity = { suite: dir, cfg, tokens: tokens.shape, data: flags.data };
  const started = performance.now();
  const state = await runFinetune({
    setup,
    tokens,
    out,
    resume: flags.resume === true,
    checkpointEvery: integer(flags, "checkpoint-every", 1, fail) ?? 50,
    ...(flags["stop-after"] !== undefined
      ? { stopAfter: integer(flags, "stop-after", 1, fail) }
      : {}),
    identity,
    progress: flags.quiet !== true,
  });
  if (state.step < steps) {
    console.log(`${out}: stopped at step ${state.step} of ${steps} (--resume continues)`);
    return;
  }
  const dicts: ScaeSuite["dicts"] = {};
  for (const m of suite.modules) {
    const was = suite.dicts[m.name];
    dicts[m.name] = { cfg: was.cfg, params: { ...was.params, ...state.params[m.name] } };
  }
  await saveSuite(out, { ...suite, C: C === "all" ? suite.C : C, dicts });
  if (conns) await saveConnections(join(out, CONNECTIONS_FILE), conns);
  await writeJsonAtomic(join(out, "finetune.json"), { from: dir, ...cfg, tokens: tokens.shape });
  console.log(
    `${out}: finetuned (${loss}, C ${C}) for ${steps} steps, ${
      ((performance.now() - started) / 1000).toFixed(1)
    } s`,
  );
}

async function evalCmd(dir: string, flags: Flags, fail: Fail): Promise<void> {
  checkKnown(flags, [...DATA_FLAGS, "c", "json", "model-batch"], "eval", fail);
  const suite = await loadSuiteOrFail(dir, fail);
  const conns = await suiteConnections(dir, suite, fail);
  const given = value(flags, "c", fail);
  let cs = (given ?? "0,4,16,64,all").split(",").map((v) => parseC(v.trim(), "--c", fail));
  const widest = conns ? storedC(conns) : 0;
  const tooWide = cs.filter((c) => c !== "all" && c > 0 && c > widest);
  if (tooWide.length) {
    // The default list shows what the stored tables give; an asked C they cannot give is an error.
    if (given !== undefined) {
      for (const c of tooWide) checkC(suite, c as number, "--c", fail);
      fail(
        conns
          ? `--c ${
            tooWide.join(",")
          }: ${dir}/${CONNECTIONS_FILE} holds ${widest} connections per feature; connect with --c ${
            Math.max(...tooWide as number[])
          }`
          : `--c ${
            tooWide.join(",")
          }: ${dir} has no ${CONNECTIONS_FILE}; run sae scae connect (or --c 0,all)`,
      );
    }
    cs = cs.filter((c) => !tooWide.includes(c));
    if (flags.quiet !== true) {
      process.stderr.write(
        `sae scae eval: leaving out C ${
          tooWide.join(",")
        } (${dir} holds ${widest} connections per feature)\n`,
      );
    }
  }
  const { model, tokens } = await modelTokens(flags, fail, { model: suite.model, tokens: 32768 });
  const e = await evaluateSuite(
    model,
    suite,
    conns ?? {},
    tokens,
    cs,
    integer(flags, "model-batch", 1, fail) ?? 8,
  );
  const names = suite.modules.map((m) => m.name);
  console.log(flags.json ? JSON.stringify({ suite: dir, ...e }) : formatSuiteEvaluation(e, names));
}

/** `sae scae SUB SUITE …`. */
export async function scaeCommand(positional: string[], flags: Flags, fail: Fail): Promise<void> {
  const [sub, dir, extra] = positional;
  if (!sub || flags.help) {
    console.log(SCAE_HELP);
    if (!sub && !flags.help) fail("sae scae: give train, connect, finetune or eval");
    return;
  }
  const run = { train, connect, finetune, eval: evalCmd }[sub];
  if (!run) {
    fail(`sae scae: unknown subcommand ${JSON.stringify(sub)} (train, connect, finetune, eval)`);
  }
  if (!dir) fail(`sae scae ${sub}: missing the suite folder (sae scae ${sub} SUITE)`);
  if (extra !== undefined) fail(`sae scae ${sub}: unexpected argument ${JSON.stringify(extra)}`);
  if (sub !== "train") {
    await readSuiteInfo(dir).catch((e) => fail(`sae scae ${sub}: ${(e as Error).message}`));
  }
  await run!(dir, flags, fail);
}
