/**
 * What `sae features` runs for each kind of dictionary: which model(s) and hook point(s) it reads
 * per token, how the codes come out ([B·T·S, F], S slices per position), and where each decoder
 * writes (for logit effects).
 *   - SAE: one hook; S = 1; the decoder writes back into that hook's space.
 *   - transcoder: reads its input hook, writes into its output hook (cfg hook_name_out, else
 *     ln2.hook_normalized → hook_mlp_out).
 *   - MLSAE: L hooks of one model, each a separate row: S = L slices (the layers), one decoder
 *     in the residual stream.
 *   - crosscoder: L inputs sharing one code: L hooks of one model, or one hook in each of L models
 *     run on the same tokens (model diffing); S = 1, or S = L for a decoupled crosscoder's
 *     per-input codes; decoder l writes into input l's hook.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { reshape, sliceAxis, squeeze, stack } from "../../tensor/ops/shape.ts";
import { tidy } from "../../tensor/scope.ts";
import { resolveModel } from "../../data/lm/hub.ts";
import { assertSameTokenizer } from "../../data/text/tokenizer_match.ts";
import {
  hookNames,
  type LanguageModel,
  loadModel,
  modelInfo,
  runWithCache,
} from "../../data/lm/model.ts";
import { architecture, isCrosscoder } from "../arch/registry.ts";
import { isPerInput, toDense } from "../code.ts";
import type { SavedSae } from "../io/saelens.ts";
import { isSet, single } from "../threshold.ts";

export type DictionaryKind = "sae" | "transcoder" | "mlsae" | "crosscoder";

export interface LoadedModel {
  name: string;
  dir: string;
  model: LanguageModel;
}

/** Where a decoder writes: decoder `index` (a crosscoder's input; 0 otherwise) into `hook` of `model`. */
export interface DecoderTarget {
  model: LoadedModel;
  hook: string;
  /** [F, d] the decoder's rows. */
  rows: Tensor;
}

export interface FeatureSource {
  kind: DictionaryKind;
  /** What is read per token, in the dictionary's input order. */
  inputs: { model: string; hook: string }[];
  /** Slices per position, and what each is (an MLSAE's hooks, a decoupled crosscoder's inputs). */
  slices: number;
  sliceNames: string[];
  /** Decoders and where they write; null (with the reason) when they write nowhere known. */
  targets: DecoderTarget[] | { none: string };
  /** The model whose tokenizer and special ids the text is read with. */
  first: LoadedModel;
  /** Codes [B·T·S, F] for token ids [B, T]. */
  encode(ids: Int32Array, B: number, T: number): Promise<Float32Array>;
}

type Flags = Record<string, string | true>;
type Fail = (m: string) => never;

const list = (v: string | true | undefined, name: string, fail: Fail): string[] | undefined => {
  if (v === true) fail(`--${name} needs a value`);
  return v === undefined ? undefined : (v as string).split(",").filter((s) => s !== "");
};

/** The models named by --model (a comma-separated list for crosscoders over several models). */
export async function loadModels(names: string[], fail: Fail): Promise<LoadedModel[]> {
  const out: LoadedModel[] = [];
  for (const name of names) {
    const dir = await resolveModel(name).catch((e) =>
      fail(`--model ${name}: ${(e as Error).message}`)
    );
    const model = await loadModel(dir).catch((e) =>
      fail(`--model ${name}: ${(e as Error).message}`)
    );
    out.push({ name, dir, model });
  }
  if (out.length > 1) {
    try {
      assertSameTokenizer(out.map((m) => m.dir));
    } catch (e) {
      fail((e as Error).message);
    }
  }
  const V = modelInfo(out[0].model).vocabSize;
  for (const m of out.slice(1)) {
    if (modelInfo(m.model).vocabSize !== V) {
      fail(
        `--model: ${m.name} has a vocabulary of ${modelInfo(m.model).vocabSize}, ${
          out[0].name
        } of ${V}; the models must share one tokenizer`,
      );
    }
  }
  return out;
}

/** Rows [N, width] of a cached activation (attention heads flattened). */
function rowsOf(a: Tensor): Tensor {
  const d = a.ndim === 4 ? a.shape[2] * a.shape[3] : a.shape[a.ndim - 1];
  return reshape(a, [-1, d]);
}

/** The source for `saved`, from --model, --hook, --hooks and cfg.json's hook names. */
export function featureSource(
  saved: SavedSae,
  models: LoadedModel[],
  flags: Flags,
  fail: Fail,
): FeatureSource {
  const { cfg, params, threshold } = saved;
  const extra = cfg.extra ?? {};
  const arch = architecture(cfg.arch);
  const cross = isCrosscoder(cfg);
  const kind: DictionaryKind = cross
    ? "crosscoder"
    : arch.input === "layers"
    ? "mlsae"
    : arch.needsTargets
    ? "transcoder"
    : "sae";
  const given = list(flags.hooks, "hooks", fail);
  const hookFlag = list(flags.hook, "hook", fail);
  if (hookFlag && hookFlag.length !== 1) {
    fail(`--hook takes one hook point (--hooks takes several)`);
  }
  let inputs: { m: LoadedModel; hook: string }[];
  if (kind === "sae" || kind === "transcoder") {
    if (models.length > 1) {
      fail(`sae features: a ${cfg.arch} reads one model; --model names ${models.length}`);
    }
    const hook = hookFlag?.[0] ?? (extra.hook_name as string | undefined) ??
      fail(`sae features: cfg.json names no hook_name; pass --hook H`);
    inputs = [{ m: models[0], hook }];
  } else {
    const L = kind === "crosscoder" ? cfg.n_inputs ?? 1 : null;
    const named = given ??
      (hookFlag
        ? hookFlag
        : Array.isArray(extra.hook_names)
        ? (extra.hook_names as string[])
        : models.length > 1 && typeof extra.hook_name === "string"
        ? [extra.hook_name] // a crosscoder across models (sae train --model A,B --hook H)
        : undefined);
    if (models.length > 1) {
      if (kind !== "crosscoder") {
        fail(`sae features: an MLSAE reads one model; --model names ${models.length}`);
      }
      const hooks = named?.length === 1 ? models.map(() => named[0]) : named;
      if (!hooks || hooks.length !== models.length) {
        fail(
          `sae features: ${models.length} models need one --hook H (the same in each) or --hooks with one per model`,
        );
      }
      inputs = models.map((m, i) => ({ m, hook: hooks![i] }));
    } else {
      if (!named) {
        fail(`sae features: a ${cfg.arch} reads several hook points: pass --hooks A,B,...`);
      }
      inputs = named!.map((hook) => ({ m: models[0], hook }));
    }
    if (L !== null && inputs.length !== L) {
      fail(
        `sae features: the crosscoder has ${L} inputs, ${inputs.length} given (--model/--hooks)`,
      );
    }
  }
  for (const { m, hook } of inputs) {
    if (!hookNames(m.model).includes(hook)) {
      fail(
        `--hook ${hook}: ${m.model.family} (${m.name}) has no hook point named ${
          JSON.stringify(hook)
        }`,
      );
    }
  }
  const perInput = kind === "crosscoder" && cfg.code_norm === "decoupled";
  const S = kind === "mlsae" || perInput ? inputs.length : 1;
  const θ = isSet(threshold)
    ? (perInput ? threshold : single(threshold, "sae features"))
    : undefined;
  const F = cfg.d_sae;

  const encode = async (ids: Int32Array, B: number, T: number): Promise<Float32Array> => {
    const codes = tidy(() => {
      const tok = tensor(ids, { shape: [B, T], dtype: "i32" });
      const byModel = new Map<LoadedModel, Record<string, Tensor>>();
      for (const m of new Set(inputs.map((i) => i.m))) {
        const hooks = inputs.filter((i) => i.m === m).map((i) => i.hook);
        byModel.set(m, runWithCache(m.model, tok, hooks, { stopEarly: true }).cache);
      }
      const rows = inputs.map((i) => rowsOf(byModel.get(i.m)![i.hook]));
      for (const [k, r] of rows.entries()) {
        if (r.shape[1] !== cfg.d_in) {
          fail(
            `sae features: the dictionary's d_in is ${cfg.d_in}, but ${inputs[k].hook} is ${
              r.shape[1]
            } wide`,
          );
        }
      }
      const x = rows.length === 1 && kind !== "mlsae" && kind !== "crosscoder"
        ? rows[0]
        : stack(rows, 1);
      const code = arch.encodeInference(params, x, cfg, θ);
      // A decoupled crosscoder's per-input code [N, L, F] keeps its inputs as slices.
      return isPerInput(code) ? reshape(toDense(code, F), [B * T * S, F]) : toDense(code, F);
    });
    const v = (await codes.data()) as Float32Array;
    codes.dispose();
    return v;
  };

  return {
    kind,
    inputs: inputs.map((i) => ({ model: i.m.name, hook: i.hook })),
    slices: S,
    sliceNames: S > 1
      ? inputs.map((i) => (models.length > 1 ? `${i.m.name}:${i.hook}` : i.hook))
      : [],
    targets: decoderTargets(saved, kind, inputs),
    first: models[0],
    encode,
  };
}

/** Where each decoder writes, with its rows; or why logit effects cannot be had. */
function decoderTargets(
  saved: SavedSae,
  kind: DictionaryKind,
  inputs: { m: LoadedModel; hook: string }[],
): DecoderTarget[] | { none: string } {
  const { params, cfg } = saved;
  const extra = cfg.extra ?? {};
  switch (kind) {
    case "sae":
      return [{ model: inputs[0].m, hook: inputs[0].hook, rows: params.W_dec }];
    case "transcoder": {
      const out = (extra.hook_name_out as string | undefined) ??
        (/^blocks\.(\d+)\.ln2\.hook_normalized$/.test(inputs[0].hook)
          ? inputs[0].hook.replace(/ln2\.hook_normalized$/, "hook_mlp_out")
          : undefined);
      if (!out) {
        return { none: `the transcoder's output hook is unknown (cfg.json has no hook_name_out)` };
      }
      return [{ model: inputs[0].m, hook: out, rows: params.W_dec }];
    }
    case "mlsae": {
      // One decoder for every layer's residual stream (standardised; the scale ranks no token).
      const resid = inputs.find((i) => !/hook_resid_(pre|mid|post)$/.test(i.hook));
      if (resid) return { none: `MLSAE hook ${resid.hook} is not a residual stream` };
      return [{ model: inputs[0].m, hook: inputs[0].hook, rows: params.W_dec }];
    }
    case "crosscoder":
      return inputs.map((i, l) => ({
        model: i.m,
        hook: i.hook,
        rows: squeeze(sliceAxis(params.W_dec, 0, l, l + 1), 0),
      }));
  }
}
