/**
 * `sae features DIR --model M --data TEXT`: stream a corpus through the model(s) and the dictionary
 * and collect every feature's statistics in bounded memory (feature_stats.ts): top contexts,
 * interval samples, activation histogram, firing density (per layer, per input, per domain), then
 * its logit effects (logit_effects.ts) and, for crosscoders, decoder norms; written into
 * DIR/features/ (features_file.ts), with a checkpoint between batches for `--resume`.
 */
import { norm } from "../../tensor/ops/reduce.ts";
import { contiguous, transpose } from "../../tensor/ops/shape.ts";
import { tidy } from "../../tensor/scope.ts";
import { directLogitMap } from "../../data/lm/direct_logits.ts";
import {
  openTextRows,
  TEXT_FLAGS,
  TEXT_FLAGS_HELP,
  textRowsOptions,
} from "../../data/text/open_rows.ts";
import type { TokenRow } from "../../data/text/token_rows.ts";
import { countProgress } from "../../data/progress.ts";
import { loadSae } from "../io/saelens.ts";
import { suiteModuleHooks } from "../scae/suite.ts";
import { featureStats, type StatsShape } from "./feature_stats.ts";
import { domainSummary, writeFeatures } from "./features_file.ts";
import { loadCheckpoint, removeCheckpoint, saveCheckpoint } from "./features_checkpoint.ts";
import { featureSource, loadModels } from "./features_source.ts";
import { type LogitEffects, logitEffects } from "./logit_effects.ts";
import {
  domainFeatures,
  formatDomainRule,
  formatFeatures,
  pickFeatures,
} from "./features_print.ts";

export const FEATURES_HELP =
  `sae features DIR --model M --data TEXT: statistics of every feature on a corpus

  --model M        the model the dictionary reads (folder or Hugging Face repo id); a crosscoder
                   over several models: M1,M2,... (one --hook in each, or --hooks one per model)
  --hook H         the hook point (default: cfg.json's hook_name; a transcoder's input)
  --hooks A,B,...  an MLSAE's or crosscoder's hook points (default: cfg.json's hook_names)
  --tokens N       tokens scanned (default 65536; special tokens and padding are not counted)
  --top N          top contexts kept per feature (default 10)
  --before N, --after N   tokens shown before and after each maximum (default 8 and 4)
  --bins N         activation histogram bins per feature (even; default 32; 0: none)
  --intervals N    activation intervals sampled per feature (even; default 8; 0: none)
  --samples N      contexts sampled per interval (default 3)
  --logits K       tokens each decoder direction raises and lowers most (default 10; 0: none)
  --domain-field F JSON lines: the field naming each document's domain (e.g. domain): shares of
                   every feature's top contexts per domain, and the features ≥ 90 % in one
  --batch N        rows per forward pass (default 8)
  --checkpoint-every N   save the state every N tokens for --resume (default 262144; 0: never)
  --resume         continue from DIR/features/checkpoint.safetensors (same settings)
  --show K         print K features (default 6: chosen at random, seeded, among those with at
                   least --top firings), each with its density, top contexts and logit effects
  --show-domains K print the K strongest features meeting the domain rule in each domain
  --seed N         the seed of that choice and of the interval samples (default 0)
  --quiet          no progress bar
${TEXT_FLAGS_HELP}

Writes DIR/features/contexts.safetensors, stats.safetensors and features.json (format
sparsecoder.features/2); see docs/features.md.`;

const KNOWN = [
  "model",
  "hook",
  "hooks",
  "data",
  "tokens",
  "top",
  "before",
  "after",
  "bins",
  "intervals",
  "samples",
  "logits",
  "domain-field",
  "batch",
  "checkpoint-every",
  "resume",
  "show",
  "show-domains",
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

function even(flags: Flags, name: string, dflt: number, fail: Fail): number {
  const n = int(flags, name, dflt, 0, fail);
  if (n % 2 !== 0) fail(`--${name} must be even (bins merge in pairs), got ${n}`);
  return n;
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
  const modelNames = (str(flags, "model", fail) ?? fail("sae features: --model M is required"))
    .split(",");
  const data = str(flags, "data", fail) ?? fail("sae features: --data TEXT is required");
  const saved = await loadSae(dir!);
  const { cfg } = saved;
  // A suite's module folder: its hooks from suite.json where cfg.json names none.
  if (cfg.extra?.hook_name === undefined && flags.hook === undefined) {
    const hooks = await suiteModuleHooks(dir!);
    if (hooks) cfg.extra = { ...cfg.extra, ...hooks };
  }
  const models = await loadModels(modelNames, fail);
  const src = featureSource(saved, models, flags, fail);
  const domainField = str(flags, "domain-field", fail);
  const text = {
    ...textRowsOptions(flags, fail, (cfg.extra?.context_size as number) ?? 128),
    ...(domainField !== undefined ? { labelField: domainField } : {}),
  };
  const { rows, tokenizer, special } = await openTextRows(data, src.first.dir, text).catch((e) =>
    fail(`--data ${data}: ${(e as Error).message}`)
  );
  const budget = int(flags, "tokens", 65536, 1, fail);
  const batch = int(flags, "batch", 8, 1, fail);
  const seed = int(flags, "seed", 0, 0, fail);
  const shape: StatsShape = {
    features: cfg.d_sae,
    slices: src.slices,
    top: int(flags, "top", 10, 1, fail),
    before: int(flags, "before", 8, 0, fail),
    after: int(flags, "after", 4, 0, fail),
    bins: even(flags, "bins", 32, fail),
    intervals: even(flags, "intervals", 8, fail),
    samples: int(flags, "samples", 3, 0, fail),
    seed,
  };
  const every = int(flags, "checkpoint-every", 262144, 0, fail);
  const out = `${dir}/features`, T = rows.context;
  const about: Record<string, unknown> = {
    kind: src.kind,
    arch: cfg.arch,
    model: modelNames[0],
    ...(modelNames.length > 1 ? { models: modelNames } : {}),
    hook: src.inputs[0].hook,
    inputs: src.inputs,
    ...(src.slices > 1 ? { slice_names: src.sliceNames } : {}),
    data,
    context: T,
    text: rows.describe(),
  };
  // A resumed run must read the same rows the same way: these, and the shape, must match.
  const settings = { ...about, tokens: budget, batch, domain_field: domainField ?? null };
  const resumed = flags.resume
    ? await loadCheckpoint(out, shape, settings).catch((e) =>
      fail(`--resume: ${(e as Error).message}`)
    )
    : null;
  if (flags.resume && !resumed) {
    console.log(`sae features: no checkpoint in ${out}; starting at row 0`);
  }
  const collector = featureStats(shape, resumed?.stats);
  let nextRow = resumed?.nextRow ?? 0, lastSaved = collector.result().scanned;
  if (resumed) {
    console.log(
      `sae features: continuing at row ${nextRow} (${resumed.stats.scanned} tokens scanned)`,
    );
  }
  const bar = flags.quiet
    ? null
    : countProgress("features", budget, { unit: "tokens", start: collector.result().scanned });

  const scan = async (group: TokenRow[]): Promise<void> => {
    const B = group.length, ids = new Int32Array(B * T), keep = new Uint8Array(B * T);
    const labels = domainField !== undefined ? new Int32Array(B * T).fill(-1) : undefined;
    group.forEach((r, b) => {
      ids.set(r.ids, b * T);
      const n = r.length ?? T;
      for (let p = 0; p < n; p++) keep[b * T + p] = special.has(r.ids[p]) ? 0 : 1;
      const segs = r.segments ?? [];
      segs.forEach((s, k) => {
        const end = k + 1 < segs.length ? segs[k + 1].at : T;
        labels?.fill(collector.labelId(s.label), b * T + s.at, b * T + end);
      });
    });
    const codes = await src.encode(ids, B, T);
    // Past the budget, positions are masked so exactly `budget` tokens count.
    let left = budget - collector.result().scanned;
    for (let i = 0; i < keep.length; i++) if (keep[i] && left-- <= 0) keep[i] = 0;
    const before = collector.result().scanned;
    collector.add({ ids, codes, rowIds: group.map((r) => r.index), keep, labels });
    bar?.advance(collector.result().scanned - before);
    nextRow = group[group.length - 1].index + 1;
  };

  let group: TokenRow[] = [];
  if (collector.result().scanned < budget) {
    for await (const row of rows.rows()) {
      if (row.index < nextRow) continue;
      group.push(row);
      if (group.length < batch) continue;
      await scan(group);
      group = [];
      const scanned = collector.result().scanned;
      if (scanned >= budget) break;
      if (every > 0 && scanned - lastSaved >= every) {
        await saveCheckpoint(out, collector.result(), nextRow, settings);
        lastSaved = scanned;
      }
    }
    if (group.length && collector.result().scanned < budget) await scan(group);
  }
  bar?.done();
  const st = collector.result();

  const k = int(flags, "logits", 10, 0, fail);
  let logits: LogitEffects[] | { none: string } = { none: "--logits 0" };
  const through: string[] = [];
  if (k > 0) {
    const targets = src.targets;
    if ("none" in targets) logits = { none: targets.none };
    else {
      try {
        const maps = targets.map((t) => directLogitMap(t.model.model, t.hook));
        through.push(...maps.map((m, i) => `${targets[i].hook}: ${m.through}`));
        const effects: LogitEffects[] = [];
        for (const [i, t] of targets.entries()) {
          effects.push(await logitEffects(t.rows, maps[i], k));
        }
        logits = effects;
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        logits = { none: e.message };
      }
    }
  }
  let decoderNorms: Float32Array | undefined;
  if (src.kind === "crosscoder") {
    const n = tidy(() => contiguous(transpose(norm(saved.params.W_dec, -1), [1, 0])));
    decoderNorms = Float32Array.from((await n.data()) as Float32Array);
    n.dispose();
  }
  await writeFeatures(out, {
    stats: st,
    logits,
    ...(decoderNorms ? { decoderNorms } : {}),
    about: {
      ...about,
      logits: {
        through,
        final_norm: "centring kept, weight folded, scale and bias dropped (docs/features.md)",
      },
      ...(domainField !== undefined ? { domains: { field: domainField } } : {}),
    },
  });
  await removeCheckpoint(out);

  const domains = st.labels.length ? domainSummary(st) : undefined;
  const extras = {
    tokenizer,
    ...(Array.isArray(logits) ? { logits } : {}),
    ...(domains ? { domains } : {}),
    ...(src.slices > 1 ? { sliceNames: src.sliceNames } : {}),
    ...(decoderNorms ? { decoderNorms } : {}),
  };
  const show = int(flags, "show", 6, 0, fail);
  if (show > 0) console.log(formatFeatures(st, pickFeatures(st, show, seed), extras));
  if (domains) {
    console.log(formatDomainRule(st, domains));
    const n = int(flags, "show-domains", 0, 0, fail);
    if (n > 0) console.log(formatFeatures(st, domainFeatures(st, domains, n), extras));
  }
  if (!Array.isArray(logits) && k > 0) console.log(`logit effects: none (${logits.none})`);
}
