/**
 * `sae features DIR --model M --data TEXT`: stream a corpus through the model and the dictionary,
 * keep every feature's top-activating contexts and firing count (feature_contexts.ts), write them
 * into DIR/features/ and print a handful of features with their contexts.
 */
import { tensor } from "../../tensor/ops/create.ts";
import { reshape } from "../../tensor/ops/shape.ts";
import { tidy } from "../../tensor/scope.ts";
import { ensureDir, writeJsonAtomic } from "../../data/atomic.ts";
import { resolveModel } from "../../data/lm/hub.ts";
import { hookNames, loadModel, runWithCache } from "../../data/lm/model.ts";
import { saveSafetensors } from "../../data/safetensors.ts";
import {
  openTextRows,
  TEXT_FLAGS,
  TEXT_FLAGS_HELP,
  textRowsOptions,
} from "../../data/text/open_rows.ts";
import type { TokenRow } from "../../data/text/token_rows.ts";
import type { Tokenizer } from "../../data/text/tokenizer.ts";
import { countProgress } from "../../data/progress.ts";
import { architecture, isCrosscoder } from "../arch/registry.ts";
import { toDense } from "../code.ts";
import { loadSae } from "../io/saelens.ts";
import { isSet, single } from "../threshold.ts";
import { contextCollector, contextsOf, type FeatureContexts } from "./feature_contexts.ts";

export const FEATURES_HELP =
  `sae features DIR --model M --data TEXT: top-activating contexts of every feature

  --model M        the model the dictionary reads (folder or Hugging Face repo id)
  --hook H         the hook point (default: cfg.json's hook_name; a transcoder's input)
  --tokens N       tokens scanned (default 65536; special tokens and padding are not counted)
  --top N          contexts kept per feature (default 10)
  --before N, --after N   tokens shown before and after each maximum (default 8 and 4)
  --batch N        rows per forward pass (default 8)
  --show K         print K features (default 6: chosen at random, seeded, among those with at
                   least --top firings), each with its density and top contexts
  --seed N         the seed of that choice (default 0)
  --quiet          no progress bar
${TEXT_FLAGS_HELP}

Writes DIR/features/contexts.safetensors (values [F, top], tokens and acts [F, top, W], rows and
positions [F, top], fires [F]) and DIR/features/features.json (what was scanned); see docs/features.md.`;

const KNOWN = [
  "model",
  "hook",
  "data",
  "tokens",
  "top",
  "before",
  "after",
  "batch",
  "show",
  "seed",
  "quiet",
  ...TEXT_FLAGS,
];

type Flags = Record<string, string | true>;
type Fail = (m: string) => never;

function int(flags: Flags, name: string, dflt: number, min: number, fail: Fail): number {
  const v = flags[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (v === true || !Number.isSafeInteger(n) || n < min) {
    fail(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  return n;
}

function str(flags: Flags, name: string, fail: Fail): string | undefined {
  const v = flags[name];
  if (v === true) fail(`--${name} needs a value`);
  return v as string | undefined;
}

export async function featuresCommand(
  dir: string | undefined,
  flags: Flags,
  fail: Fail,
): Promise<void> {
  for (const f of Object.keys(flags)) {
    if (!KNOWN.includes(f)) fail(`sae features: unknown option --${f} (see sae features --help)`);
  }
  if (!dir) fail("sae features: missing the dictionary folder (sae features DIR)");
  const modelName = str(flags, "model", fail) ?? fail("sae features: --model M is required");
  const data = str(flags, "data", fail) ?? fail("sae features: --data TEXT is required");
  const saved = await loadSae(dir!);
  const { cfg, params, threshold } = saved;
  const arch = architecture(cfg.arch);
  if (isCrosscoder(cfg) || arch.input !== "rows") {
    fail(
      `sae features: ${cfg.arch} reads several activations per token; this command reads one hook point (SAEs and transcoders)`,
    );
  }
  const hook = str(flags, "hook", fail) ?? (cfg.extra?.hook_name as string | undefined) ??
    fail(`sae features: ${dir}/cfg.json names no hook_name; pass --hook H`);
  const modelDir = await resolveModel(modelName).catch((e) =>
    fail(`--model ${modelName}: ${(e as Error).message}`)
  );
  const model = await loadModel(modelDir);
  if (!hookNames(model).includes(hook)) {
    fail(`--hook ${hook}: ${model.family} has no hook point named ${JSON.stringify(hook)}`);
  }
  const text = textRowsOptions(flags, fail, (cfg.extra?.context_size as number) ?? 128);
  const { rows, tokenizer, special } = await openTextRows(data, modelDir, text).catch((e) =>
    fail(`--data ${data}: ${(e as Error).message}`)
  );
  const budget = int(flags, "tokens", 65536, 1, fail);
  const batch = int(flags, "batch", 8, 1, fail);
  const window = {
    top: int(flags, "top", 10, 1, fail),
    before: int(flags, "before", 8, 0, fail),
    after: int(flags, "after", 4, 0, fail),
  };
  const F = cfg.d_sae, T = rows.context;
  const collector = contextCollector(F, window);
  const θ = isSet(threshold) ? single(threshold, "sae features") : undefined;
  const bar = flags.quiet ? null : countProgress("features", budget, { unit: "tokens" });

  const scan = async (group: TokenRow[]): Promise<void> => {
    const B = group.length, ids = new Int32Array(B * T), keep = new Uint8Array(B * T);
    group.forEach((r, b) => {
      ids.set(r.ids, b * T);
      const n = r.length ?? T;
      for (let p = 0; p < n; p++) keep[b * T + p] = special.has(r.ids[p]) ? 0 : 1;
    });
    const codes = tidy(() => {
      const { cache } = runWithCache(model, tensor(ids, { shape: [B, T] }), [hook], {
        stopEarly: true,
      });
      const a = cache[hook];
      const x = reshape(a, [B * T, a.shape[a.ndim - 1] * (a.ndim === 4 ? a.shape[2] : 1)]);
      return toDense(arch.encodeInference(params, x, cfg, θ), F);
    });
    const values = (await codes.data()) as Float32Array;
    codes.dispose();
    // Past the budget, positions are masked so exactly `budget` tokens count.
    let left = budget - collector.result().scanned;
    for (let i = 0; i < keep.length; i++) if (keep[i] && left-- <= 0) keep[i] = 0;
    const before = collector.result().scanned;
    collector.add(ids, values, group.map((r) => r.index), keep);
    bar?.advance(collector.result().scanned - before);
  };

  let group: TokenRow[] = [];
  for await (const row of rows.rows()) {
    group.push(row);
    if (group.length === batch) {
      await scan(group);
      group = [];
      if (collector.result().scanned >= budget) break;
    }
  }
  if (group.length && collector.result().scanned < budget) await scan(group);
  bar?.done();
  const c = collector.result();
  await writeFeatures(`${dir}/features`, c, {
    model: modelName,
    hook,
    data,
    context: T,
  });
  const show = int(flags, "show", 6, 0, fail);
  if (show > 0) {
    console.log(
      formatFeatures(c, pickFeatures(c, show, int(flags, "seed", 0, 0, fail)), tokenizer),
    );
  }
}

/** DIR/features/contexts.safetensors and features.json, each written atomically. */
export async function writeFeatures(
  out: string,
  c: FeatureContexts,
  about: Record<string, unknown>,
): Promise<void> {
  await ensureDir(out);
  const W = c.before + 1 + c.after;
  await saveSafetensors(`${out}/contexts.safetensors`, {
    values: tensor(c.values, { shape: [c.features, c.top] }),
    tokens: tensor(c.tokens, { shape: [c.features, c.top, W], dtype: "i32" }),
    acts: tensor(c.acts, { shape: [c.features, c.top, W] }),
    rows: tensor(c.rows, { shape: [c.features, c.top], dtype: "i32" }),
    positions: tensor(c.positions, { shape: [c.features, c.top], dtype: "i32" }),
    fires: tensor(c.fires, { shape: [c.features], dtype: "f64" }),
  });
  let alive = 0;
  for (const n of c.fires) if (n > 0) alive++;
  await writeJsonAtomic(`${out}/features.json`, {
    format: "sparsecoder.features/1",
    ...about,
    tokens_scanned: c.scanned,
    features: c.features,
    alive,
    top: c.top,
    before: c.before,
    after: c.after,
  });
}

/** `n` features with at least `top` firings (fewer if fewer have), seeded, in id order. */
export function pickFeatures(c: FeatureContexts, n: number, seed: number): number[] {
  const pool: number[] = [];
  for (let f = 0; f < c.features; f++) if (c.fires[f] >= c.top) pool.push(f);
  // A small seeded shuffle (mulberry32): the choice must not depend on the runtime.
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = pool.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, n).sort((a, b) => a - b);
}

/** One line per context: the activation, then the window with the maximum's token in ⟦ ⟧. */
export function formatFeatures(
  c: FeatureContexts,
  features: number[],
  tokenizer: Tokenizer | null,
  perFeature = 3,
): string {
  const text = (ids: number[]) => {
    const real = ids.filter((i) => i >= 0);
    const s = tokenizer ? tokenizer.decode(real) : real.join(" ");
    return s.replace(/\n/g, "↵").replace(/\t/g, "→");
  };
  const lines: string[] = [];
  for (const f of features) {
    const ctx = contextsOf(c, f);
    const density = c.scanned ? c.fires[f] / c.scanned : 0;
    lines.push(
      `feature ${f}: fires on ${(100 * density).toPrecision(3)} % of tokens, max ${
        ctx[0]?.value.toPrecision(4) ?? "—"
      }`,
    );
    for (const x of ctx.slice(0, perFeature)) {
      const at = c.before;
      lines.push(
        `  ${x.value.toFixed(2).padStart(7)}  ${text(x.tokens.slice(0, at))}⟦${
          text([x.tokens[at]])
        }⟧${text(x.tokens.slice(at + 1))}`,
      );
    }
  }
  return lines.join("\n");
}
