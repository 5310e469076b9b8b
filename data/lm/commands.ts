/**
 * `sae lm info M` and `sae lm run --model M --tokens ids.npy --hooks a,b --out acts.safetensors`:
 * what a model folder holds, and its activations on given token ids written as one tensor per hook
 * (named by the hook) plus `logits`; `sae lm tokenizer` trains a BPE tokenizer
 * (data/text/bpe_command.ts). sae/cli.ts dispatches here.
 */
import { tensor } from "../../tensor/ops/create.ts";
import { sliceAxis } from "../../tensor/ops/shape.ts";
import { tidy } from "../../tensor/scope.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { loadNpy } from "../npy.ts";
import { CORPUS_HELP, corpusCommand } from "../text/registry/command.ts";
import { BPE_HELP, bpeCommand } from "../text/bpe_command.ts";
import { BpeTrainError } from "../text/bpe_train.ts";
import { CorpusError } from "../text/corpus_error.ts";
import { saveSafetensors } from "../safetensors.ts";
import { TokenizerError } from "../text/tokenizer.ts";
import { LmConfigError } from "./config.ts";
import { hookNames, type LanguageModel, loadModel, modelInfo, runWithCache } from "./model.ts";
import { LmTrainUsageError, parseLmTrainOptions } from "./train/options.ts";
import { lmTrain } from "./train/run.ts";

type Flags = Record<string, string | true>;

/** Bad arguments: the CLI prints "sae: message" and exits with code 2. */
export class LmUsageError extends Error {
  override name = "LmUsageError";
}

export const LM_HELP = `sae lm: language models (Hugging Face folders: config.json + safetensors)

  sae lm info MODEL [--json] [--hooks]
      family, sizes, parameter count, weight dtypes; --hooks lists every hook point
  sae lm run --model MODEL --tokens IDS.npy --hooks H1,H2 --out OUT.safetensors
             [--batch 8] [--no-logits] [--stop-early]
      runs the model on int32 token ids [N, T] and writes each hook's activations (a tensor named
      by the hook) and the logits; --stop-early stops after the last asked hook (implies
      --no-logits). The output is held in memory until written: for a corpus, harvest to a store.
  sae lm train --data TRAIN.jsonl --heldout HELDOUT.jsonl --tokenizer DIR --out DIR
             [--config train.json] [--layers 1 --d-model 256 --heads 4 --context 128]
             [--batch 32 --micro 1 --steps 2000 --lr 1e-3 --min-lr 1e-4 --warmup 200]
             [--weight-decay 0.1 --clip 1 --seed 0 --eval-every 200 --eval-tokens 65536]
             [--checkpoint-every 200 --log-every 10 --dtype bf16|f32]
             [--init-from MODEL_DIR --domain D --resume]
      trains a GPT-2-layout model (nanoGPT's recipe: AdamW 0.9/0.95, decay on matrices, clip,
      warmup + cosine) on JSON lines {"text", "domain"?}; writes a Hugging Face folder
      (config.json, model.safetensors, tokenizer.json), curves.jsonl, MODEL_CARD.md and
      checkpoint/ (--resume continues it exactly). --config reads the same options from JSON
      ({"d-model": 256, …}); flags win. --init-from continues a saved model (its shape wins);
      --domain keeps only the training documents of that domain. See docs/lm-training.md.
${CORPUS_HELP}
${BPE_HELP}`;

function check(flags: Flags, known: string[], cmd: string): void {
  for (const f of Object.keys(flags)) {
    if (!known.includes(f)) {
      throw new LmUsageError(`sae lm ${cmd}: unknown option --${f} (see sae lm --help)`);
    }
  }
}

function value(flags: Flags, name: string, cmd: string): string {
  const v = flags[name];
  if (v === undefined || v === true) {
    throw new LmUsageError(`sae lm ${cmd}: --${name} needs a value`);
  }
  return v;
}

/** Run `sae lm SUB …`; prints to stdout. Usage errors throw LmUsageError. */
export async function lmCommand(positional: string[], flags: Flags): Promise<void> {
  const [sub, ...rest] = positional;
  if (flags.help || sub === undefined || sub === "help") {
    console.log(LM_HELP);
    if (sub === undefined && !flags.help) throw new LmUsageError("sae lm: which subcommand?");
    return;
  }
  if (sub === "info") {
    check(flags, ["json", "hooks"], "info");
    if (rest.length !== 1) throw new LmUsageError("sae lm info: give one model folder");
    const model = await loadModel(rest[0]);
    const info = { ...modelInfo(model), ...(flags.hooks ? { hooks: hookNames(model) } : {}) };
    console.log(flags.json ? JSON.stringify(info) : formatInfo(rest[0], info));
    return;
  }
  if (sub === "run") {
    check(flags, ["model", "tokens", "hooks", "out", "batch", "no-logits", "stop-early"], "run");
    if (rest.length) throw new LmUsageError(`sae lm run: unexpected argument ${rest[0]}`);
    const batch = Number(flags.batch ?? 8);
    if (!Number.isInteger(batch) || batch < 1) {
      throw new LmUsageError(`sae lm run: --batch must be a positive integer, got ${flags.batch}`);
    }
    const model = await loadModel(value(flags, "model", "run"));
    const tokens = await loadNpy(value(flags, "tokens", "run"));
    const names = value(flags, "hooks", "run").split(",").filter((s) => s !== "");
    const known = new Set(hookNames(model));
    for (const n of names) {
      if (!known.has(n)) {
        throw new LmUsageError(
          `sae lm run: ${model.family} has no hook point ${JSON.stringify(n)} (sae lm info ${
            value(flags, "model", "run")
          } --hooks lists them)`,
        );
      }
    }
    const stopEarly = flags["stop-early"] === true;
    const out = runInBatches(model, tokens, names, {
      batch,
      logits: !stopEarly && flags["no-logits"] !== true,
      stopEarly,
    });
    const path = value(flags, "out", "run");
    await saveSafetensors(path, out, { model: value(flags, "model", "run") });
    const shapes = Object.entries(out).map(([k, t]) => `${k} [${t.shape}]`).join(", ");
    console.log(`wrote ${path}: ${shapes}`);
    return;
  }
  if (sub === "corpus") {
    if (rest.length) throw new LmUsageError(`sae lm corpus: unexpected argument ${rest[0]}`);
    return corpusCommand(flags, (msg) => new LmUsageError(msg));
  }
  if (sub === "tokenizer") {
    try {
      await bpeCommand(rest, flags);
    } catch (e) {
      if (e instanceof BpeTrainError || e instanceof CorpusError) {
        throw new LmUsageError(`sae lm tokenizer: ${e.message}`);
      }
      throw e;
    }
    return;
  }
  if (sub === "train") {
    if (rest.length) throw new LmUsageError(`sae lm train: unexpected argument ${rest[0]}`);
    try {
      await lmTrain(parseLmTrainOptions(flags));
    } catch (e) {
      if (e instanceof LmTrainUsageError) throw new LmUsageError(e.message);
      // Bad data or tokenizer files: the message names the file (and line); exit status 1.
      if (e instanceof CorpusError || e instanceof TokenizerError) {
        throw new LmConfigError(e.message);
      }
      throw e;
    }
    return;
  }
  throw new LmUsageError(
    `sae lm: unknown subcommand ${JSON.stringify(sub)} (info, run, train, corpus, tokenizer)`,
  );
}

function formatInfo(source: string, info: ReturnType<typeof modelInfo>): string {
  const lines = [
    `${source}: ${info.family}`,
    `  layers ${info.nLayer}, d_model ${info.dModel}, heads ${info.nHead}, d_mlp ${info.dMlp}`,
    `  vocabulary ${info.vocabSize}, context ${info.maxPositions}`,
    `  parameters ${info.nParams.toLocaleString("en-US")} (${info.dtypes.join(", ")})`,
  ];
  return lines.join("\n");
}

/**
 * The model's activations at `names` (and logits) on token ids [N, T], batch by batch, each batch
 * in its own scope so only the kept outputs outlive it; results are f32 host tensors.
 */
export function runInBatches(
  model: LanguageModel,
  tokens: Tensor,
  names: readonly string[],
  opts: { batch: number; logits: boolean; stopEarly?: boolean },
): Record<string, Tensor> {
  if (tokens.ndim !== 2 || tokens.dtype !== "i32") {
    throw new LmUsageError(
      `sae lm run: tokens must be an int32 array [N, T], got ${tokens.dtype} [${tokens.shape}]`,
    );
  }
  if (names.length === 0 && !opts.logits) throw new LmUsageError("sae lm run: nothing to write");
  const N = tokens.shape[0];
  const parts: Record<string, { data: Float32Array[]; shape: number[] }> = {};
  const keys = [...names, ...(opts.logits ? ["logits"] : [])];
  for (let i = 0; i < N; i += opts.batch) {
    const rows = Math.min(opts.batch, N - i);
    tidy(() => {
      const ids = sliceAxis(tokens, 0, i, i + rows);
      const { logits, cache } = runWithCache(model, ids, names, { stopEarly: opts.stopEarly });
      for (const k of keys) {
        const t = k === "logits" ? logits! : cache[k];
        const p = parts[k] ??= { data: [], shape: t.shape.slice(1) };
        p.data.push(Float32Array.from(t.dataSync()));
      }
    });
  }
  const out: Record<string, Tensor> = {};
  for (const k of keys) {
    const { data, shape } = parts[k];
    const all = new Float32Array(data.reduce((s, d) => s + d.length, 0));
    let o = 0;
    for (const d of data) all.set(d, o), o += d.length;
    out[k] = tensor(all, { dtype: "f32", shape: [N, ...shape] });
  }
  return out;
}
