/**
 * Dictionaries spliced into a language model: hook functions (for runWithHooks / forward) that
 * replace an activation by its reconstruction. Pure functions returning `Record<string, HookFn>`;
 * a `Splice` bundles the spliced hooks and the zero-ablation baseline that downstream.ts compares.
 *
 * - A dictionary at one hook: the activation [B, T, d] (or [B, T, H, hd] at attn.hook_q|k|v|z,
 *   flattened to H·hd as SAELens does) becomes x̂ = decode(encode(x)) where `splicedAt` [B, T] is
 *   true, and keeps its clean value elsewhere (SAELens leaves special-token positions clean).
 * - Error term: out = x + (x̂ − stopGradient(x̂)). Its forward value is exactly x (x̂ − x̂ is 0),
 *   and its gradients are those of SAELens's error-term mode (x̂ + stopGradient(x − x̂)): the
 *   identity to x plus the path through the dictionary, to x and to the dictionary's parameters.
 *   SAELens's own form is only x up to rounding; this one is bit-for-bit the clean value.
 * - A transcoder reads its input hook (default `blocks.L.ln2.hook_normalized`, or the config's
 *   `hook_name`) and replaces its output hook (`blocks.L.hook_mlp_out`, or `hook_name_out`).
 * - A crosscoder or MLSAE at several hooks: the clean activations of all of them (one pass, cut
 *   after the last) give one reconstruction per hook; a second pass replaces the chosen hooks
 *   (default all) at once. MLSAE reconstructs the standardised vector, mapped back to the
 *   activation's scale with the token's own mean and standard deviation.
 * - A crosscoder across models at one hook (a base and a finetuned model): each model's clean
 *   activation at the same tokens is encoded together, and one model's hook becomes its own slice
 *   of the reconstruction.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, cast, mul, sqrt, stopGradient, sub, where } from "../../tensor/ops/elementwise.ts";
import { zeros } from "../../tensor/ops/create.ts";
import { mean, variance } from "../../tensor/ops/reduce.ts";
import { expandDims, reshape, sliceAxis, stack } from "../../tensor/ops/shape.ts";
import type { HookFn, LanguageModel } from "../../data/lm/model.ts";
import { hookNames, runWithCache } from "../../data/lm/model.ts";
import { architecture, isCrosscoder } from "../arch/registry.ts";
import type { SaeConfig } from "../config.ts";
import type { SaeParams } from "../params.ts";
import { isSet, single, type Threshold } from "../threshold.ts";

/** A loaded dictionary (what loadSae returns). */
export interface Dictionary {
  params: SaeParams;
  cfg: SaeConfig;
  threshold?: Threshold;
}

export interface SpliceOptions {
  /** Add the error term: the forward value stays clean, gradients flow through the dictionary. */
  errorTerm?: boolean;
  /** bool [B, T]: where the reconstruction replaces the activation (default: everywhere). */
  splicedAt?: Tensor | null;
}

/** The spliced hooks of one batch, and the zero-ablation baseline's. */
export interface Splice {
  /** Hook points the dictionary replaces. */
  readonly replaces: readonly string[];
  spliced(tokens: Tensor, opts?: SpliceOptions): Record<string, HookFn>;
  zeroAblation(): Record<string, HookFn>;
}

export class SpliceError extends Error {
  override name = "SpliceError";
}

const MLSAE_EPS = 1e-5; // the standardisation's ε (sae/arch/mlsae.ts)

/** x̂ for rows x [N, d_in] of a one-vector dictionary (not a crosscoder). */
export function reconstructRows(dict: Dictionary, x: Tensor): Tensor {
  const { params, cfg, threshold } = dict;
  const arch = architecture(cfg.arch);
  const θ = isSet(threshold) ? single(threshold, "splice") : undefined;
  if (arch.input === "layers") {
    // MLSAE encodes [B, L, d]; one layer is L = 1, and x̂ comes back standardised.
    const code = arch.encodeInference(params, reshape(x, [x.shape[0], 1, x.shape[1]]), cfg, θ);
    return arch.decode(params, code, cfg);
  }
  return arch.decode(params, arch.encodeInference(params, x, cfg, θ), cfg);
}

/** The activation's width as the dictionary sees it (heads flattened), checked against `width`. */
function rowsOf(a: Tensor, hook: string, width: number, what: string): Tensor {
  const d = a.ndim === 4 ? a.shape[2] * a.shape[3] : a.shape[a.ndim - 1];
  if (a.ndim < 3 || a.ndim > 4 || d !== width) {
    throw new SpliceError(
      `splice: ${hook} has shape [${a.shape}] (width ${d}), the dictionary's ${what} is ${width}`,
    );
  }
  return reshape(a, [-1, d]);
}

/** The replacement of `clean` by `xhat` (same shape) under the options. */
function replace(clean: Tensor, xhat: Tensor, opts: SpliceOptions): Tensor {
  const out = opts.errorTerm ? add(clean, sub(xhat, stopGradient(xhat))) : xhat;
  if (!opts.splicedAt) return out;
  const at = opts.splicedAt;
  const [B, T] = clean.shape;
  if (at.ndim !== 2 || at.shape[0] !== B || at.shape[1] !== T) {
    throw new SpliceError(`splice: splicedAt has shape [${at.shape}], expected [${B}, ${T}]`);
  }
  let m = cast(at, "bool");
  for (let i = 2; i < clean.ndim; i++) m = expandDims(m, -1);
  return where(m, out, clean);
}

function checkHook(model: LanguageModel, hook: string): void {
  if (!hookNames(model).includes(hook)) {
    throw new SpliceError(
      `splice: ${model.family} has no hook point named ${JSON.stringify(hook)}`,
    );
  }
}

/** Zero the activation at every hook (the baseline of CE/KL recovered; every position). */
export function zeroAblationHooks(hooks: readonly string[]): Record<string, HookFn> {
  return Object.fromEntries(
    hooks.map((h) => [h, (a: Tensor) => zeros(a.shape, a.dtype, a.backend)]),
  );
}

/** A one-hook dictionary: the hook's activation replaced by its reconstruction. */
export function dictionarySplice(model: LanguageModel, dict: Dictionary, hook: string): Splice {
  checkHook(model, hook);
  if (isCrosscoder(dict.cfg)) {
    throw new SpliceError(
      `splice: a ${dict.cfg.arch} reads several inputs; use multiHookSplice with its ${
        dict.cfg.n_inputs ?? 1
      } hook points`,
    );
  }
  if (architecture(dict.cfg.arch).needsTargets) {
    return transcoderSplice(model, dict, { output: hook });
  }
  if (dict.cfg.d_out !== dict.cfg.d_in) {
    throw new SpliceError(`splice: d_out ${dict.cfg.d_out} ≠ d_in ${dict.cfg.d_in}`);
  }
  const isMlsae = architecture(dict.cfg.arch).input === "layers";
  return {
    replaces: [hook],
    spliced: (_tokens, opts = {}) => ({
      [hook]: (a) => {
        const x = rowsOf(a, hook, dict.cfg.d_in, "d_in");
        const xhat = isMlsae
          ? unstandardize(reconstructRows(dict, x), x)
          : reconstructRows(dict, x);
        return replace(a, reshape(xhat, a.shape), opts);
      },
    }),
    zeroAblation: () => zeroAblationHooks([hook]),
  };
}

/** MLSAE's x̂ (standardised) mapped back with the per-token mean and std of x. */
function unstandardize(xhatStd: Tensor, x: Tensor): Tensor {
  const mu = mean(x, -1, { keepdims: true });
  const sd = sqrt(add(variance(x, -1, { keepdims: true }), MLSAE_EPS));
  return add(mul(xhatStd, sd), mu);
}

/** `blocks.L.hook_mlp_out` → `blocks.L.ln2.hook_normalized`; null for other names. */
export function defaultTranscoderInput(output: string): string | null {
  const m = /^blocks\.(\d+)\.hook_mlp_out$/.exec(output);
  return m ? `blocks.${m[1]}.ln2.hook_normalized` : null;
}

/**
 * A transcoder: the output hook replaced by the transcoder's output from the input hook's
 * activation (captured earlier in the same pass). Names default to the config's `hook_name` /
 * `hook_name_out` (SAELens's transcoder fields), then to ln2.hook_normalized → hook_mlp_out.
 */
export function transcoderSplice(
  model: LanguageModel,
  dict: Dictionary,
  names: { input?: string; output?: string } = {},
): Splice {
  const extra = dict.cfg.extra ?? {};
  const output = names.output ??
    (typeof extra.hook_name_out === "string" ? extra.hook_name_out : undefined);
  if (!output) throw new SpliceError("transcoder splice: no output hook named (hook_name_out)");
  const input = names.input ??
    (typeof extra.hook_name === "string" && extra.hook_name !== output
      ? extra.hook_name
      : defaultTranscoderInput(output));
  if (!input) {
    throw new SpliceError(
      `transcoder splice: no input hook for ${output}; name one (e.g. blocks.L.ln2.hook_normalized)`,
    );
  }
  checkHook(model, input);
  checkHook(model, output);
  const order = hookNames(model);
  if (order.indexOf(input) >= order.indexOf(output)) {
    throw new SpliceError(
      `transcoder splice: input ${input} does not come before output ${output}`,
    );
  }
  return {
    replaces: [output],
    spliced: (_tokens, opts = {}) => {
      let seen: Tensor | null = null;
      return {
        [input]: (a) => {
          seen = a;
        },
        [output]: (a) => {
          const x = rowsOf(seen!, input, dict.cfg.d_in, "d_in");
          rowsOf(a, output, dict.cfg.d_out, "d_out");
          return replace(a, reshape(reconstructRows(dict, x), a.shape), opts);
        },
      };
    },
    zeroAblation: () => zeroAblationHooks([output]),
  };
}

/**
 * A crosscoder (or MLSAE) over `hooks` (in the crosscoder's input order): each of `replace`
 * (default all) becomes its reconstruction from the clean activations of all hooks.
 */
export function multiHookSplice(
  model: LanguageModel,
  dict: Dictionary,
  hooks: readonly string[],
  replaceOnly: readonly string[] = hooks,
): Splice {
  for (const h of hooks) checkHook(model, h);
  for (const h of replaceOnly) {
    if (!hooks.includes(h)) throw new SpliceError(`splice: ${h} is not one of the hooks ${hooks}`);
  }
  const { cfg } = dict;
  const cross = isCrosscoder(cfg);
  const isMlsae = architecture(cfg.arch).input === "layers";
  if (!cross && !isMlsae) {
    throw new SpliceError(`splice: a ${cfg.arch} dictionary reads one hook; use dictionarySplice`);
  }
  if (cross && (cfg.n_inputs ?? 1) !== hooks.length) {
    throw new SpliceError(
      `splice: the crosscoder has ${cfg.n_inputs ?? 1} inputs, ${hooks.length} hooks given`,
    );
  }
  return {
    replaces: replaceOnly,
    spliced: (tokens, opts = {}) => {
      const { cache } = runWithCache(model, tokens, hooks, { stopEarly: true });
      const rows = hooks.map((h) => rowsOf(cache[h], h, cfg.d_in, "d_in"));
      let xhat: Tensor[];
      if (cross) xhat = crosscoderSlices(dict, rows);
      else {
        const z = reconstructRows(dict, reshape(stack(rows, 1), [-1, cfg.d_in]));
        const N = rows[0].shape[0];
        xhat = hooks.map((_, l) =>
          unstandardize(
            reshape(sliceAxis(reshape(z, [N, hooks.length, -1]), 1, l, l + 1), [N, -1]),
            rows[l],
          )
        );
      }
      return Object.fromEntries(
        replaceOnly.map((h) => {
          const l = hooks.indexOf(h);
          return [h, (a: Tensor) => replace(a, reshape(xhat[l], a.shape), opts)];
        }),
      );
    },
    zeroAblation: () => zeroAblationHooks(replaceOnly),
  };
}

/** A crosscoder's reconstruction of rows [N, d] per input, one [N, d] per input. */
function crosscoderSlices(dict: Dictionary, rows: readonly Tensor[]): Tensor[] {
  const { cfg } = dict;
  const a = architecture(cfg.arch);
  const θ = isSet(dict.threshold) ? dict.threshold : undefined;
  const x = stack([...rows], 1); // [N, L, d]
  const out = a.decode(dict.params, a.encodeInference(dict.params, x, cfg, θ), cfg);
  return rows.map((_, l) => reshape(sliceAxis(out, 1, l, l + 1), [-1, cfg.d_in]));
}

/**
 * A crosscoder across `models` (in its input order) at one hook: model `which`'s hook becomes its
 * own slice of the reconstruction, encoded from every model's clean activation at the same tokens
 * (one pass of each model, cut after the hook). Pass the spliced hooks to `models[which]`.
 */
export function crossModelSplice(
  models: readonly LanguageModel[],
  dict: Dictionary,
  hook: string,
  which: number,
): Splice {
  for (const m of models) checkHook(m, hook);
  const { cfg } = dict;
  if (!isCrosscoder(cfg)) {
    throw new SpliceError(
      `splice: a ${cfg.arch} reads one model; crossModelSplice needs a crosscoder`,
    );
  }
  if ((cfg.n_inputs ?? 1) !== models.length) {
    throw new SpliceError(
      `splice: the crosscoder has ${cfg.n_inputs ?? 1} inputs, ${models.length} models given`,
    );
  }
  if (!Number.isInteger(which) || which < 0 || which >= models.length) {
    throw new SpliceError(`splice: model ${which} is not one of the ${models.length} models`);
  }
  return {
    replaces: [hook],
    spliced: (tokens, opts = {}) => {
      const rows = models.map((m) => {
        const { cache } = runWithCache(m, tokens, [hook], { stopEarly: true });
        return rowsOf(cache[hook], hook, cfg.d_in, "d_in");
      });
      const xhat = crosscoderSlices(dict, rows)[which];
      return { [hook]: (a: Tensor) => replace(a, reshape(xhat, a.shape), opts) };
    },
    zeroAblation: () => zeroAblationHooks([hook]),
  };
}
