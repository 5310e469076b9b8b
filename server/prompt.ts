/**
 * The prompt view's computation (`sae serve DIR --model M`, POST /v1/prompt): tokenize a text with
 * the model's tokenizer, run the model to the dictionary's hook point(s) and the dictionary on
 * every token, exactly as `sae features` reads activations (sae/eval/features_source.ts), and say
 * per token which features are strongest. For an MLSAE, whose layers are slices of one code, also
 * the layer × latent picture of the whole prompt (as the MLSAE web app draws it). A crosscoder
 * reads several hooks of one model, or one hook of each of several models (`--model A,B`, which
 * must share a tokenizer, as `sae train --model A,B` checks); its rows are the stacked inputs.
 */
import { loadTokenizer, type Tokenizer } from "../data/text/tokenizer.ts";
import { tokenSpans } from "../data/text/token_spans.ts";
import { modelInfo } from "../data/lm/model.ts";
import { ConfigError } from "../sae/config.ts";
import type { SavedSae } from "../sae/io/saelens.ts";
import { type FeatureSource, featureSource, loadModels } from "../sae/eval/features_source.ts";

export interface Prompter {
  model: string;
  tokenizer: Tokenizer;
  source: FeatureSource;
  /** Most tokens one prompt may have: the model's context, or less if asked. */
  maxTokens: number;
  d_sae: number;
}

const fail = (m: string): never => {
  throw new ConfigError(m);
};

/**
 * The model `name` (a folder or a Hub id in the cache; for a crosscoder over models, several
 * comma-separated) and its tokenizer, wired to `saved` as `sae features` would; one token is run
 * through at once, so a hook or width that does not fit is a startup error, not a failed request.
 */
export async function loadPrompter(
  saved: SavedSae,
  name: string,
  opts: { maxTokens?: number; tokenizer?: Tokenizer } = {},
): Promise<Prompter> {
  const models = await loadModels(name.split(",").filter((m) => m !== ""), fail);
  const source = featureSource(saved, models, {}, fail);
  const tokenizer = opts.tokenizer ??
    await loadTokenizer(models[0].dir).catch((e) =>
      fail(`--model ${name}: ${(e as Error).message}`)
    );
  await source.encode(Int32Array.of(0), 1, 1);
  const ctx = Math.min(...models.map((m) => modelInfo(m.model).maxPositions));
  return {
    model: name,
    tokenizer,
    source,
    maxTokens: Math.min(ctx, opts.maxTokens ?? ctx),
    d_sae: saved.cfg.d_sae,
  };
}

/** The ids a text runs as: BOS first when the model expects it. */
export function promptIds(p: Prompter, text: string): number[] {
  const ids = Array.from(p.tokenizer.encode(text));
  const bos = p.tokenizer.bosId;
  return p.tokenizer.addBos && bos !== null ? [bos, ...ids] : ids;
}

export interface PromptToken {
  id: number;
  text: string;
  /** [start, end) in the prompt's rendered text (a character split across tokens is in both). */
  span: [number, number];
  special: boolean;
  /**
   * Strongest features, largest first; for slices, each feature's largest slice and its value; for
   * a crosscoder, its partition set (DFC) and relative norm (two inputs).
   */
  features: {
    id: number;
    value: number;
    slice?: string;
    partition?: string;
    relative_norm?: number;
  }[];
}

export interface PromptResult {
  model: string;
  kind: string;
  text: string;
  tokens: PromptToken[];
  /** MLSAE: layers × the prompt's strongest latents, the sum of each latent's activation at each layer. */
  layers: { names: string[]; latents: number[]; sums: number[][] } | null;
}

/**
 * Run the prompt: per token its top `topK` features (each with the fields `tags` gives it), and for
 * slices the layer × latent sums.
 */
export async function runPrompt(
  p: Prompter,
  ids: number[],
  topK: number,
  tags?: (f: number) => Record<string, unknown>,
  latents = 24,
): Promise<PromptResult> {
  const T = ids.length, F = p.d_sae, S = p.source.slices;
  const codes = await p.source.encode(Int32Array.from(ids), 1, T);
  const { text, spans } = tokenSpans(p.tokenizer, ids);
  const sliceNames = p.source.sliceNames;
  const tokens: PromptToken[] = ids.map((id, t) => {
    // A feature's value at a token is its largest over the slices (an MLSAE's layers).
    const best = new Map<number, [number, number]>();
    for (let s = 0; s < S; s++) {
      const row = (t * S + s) * F;
      for (let f = 0; f < F; f++) {
        const v = codes[row + f];
        if (v > 0 && v > (best.get(f)?.[0] ?? 0)) best.set(f, [v, s]);
      }
    }
    const top = [...best].sort((a, b) => b[1][0] - a[1][0] || a[0] - b[0]).slice(0, topK);
    return {
      id,
      text: text.slice(spans[t][0], spans[t][1]),
      span: spans[t],
      special: p.tokenizer.specialIds.has(id),
      features: top.map(([f, [v, s]]) => ({
        id: f,
        value: Math.fround(v),
        ...(S > 1 ? { slice: sliceNames[s] } : {}),
        ...(tags ? tags(f) : {}),
      })),
    };
  });
  let layers: PromptResult["layers"] = null;
  if (S > 1) {
    const sums = new Float64Array(S * F);
    for (let t = 0; t < T; t++) {
      for (let s = 0; s < S; s++) {
        for (let f = 0; f < F; f++) sums[s * F + f] += Math.max(0, codes[(t * S + s) * F + f]);
      }
    }
    const total = (f: number) => {
      let x = 0;
      for (let s = 0; s < S; s++) x += sums[s * F + f];
      return x;
    };
    const order = Array.from({ length: F }, (_, f) => [f, total(f)] as const)
      .filter(([, x]) => x > 0).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, latents)
      .map(([f]) => f);
    layers = {
      names: sliceNames,
      latents: order,
      sums: sliceNames.map((_, s) => order.map((f) => sums[s * F + f])),
    };
  }
  return { model: p.model, kind: p.source.kind, text, tokens, layers };
}
