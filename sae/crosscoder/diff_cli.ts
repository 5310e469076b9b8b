/**
 * `sae diff DIR --data HELDOUT.jsonl --domain D`: the domain specificity of a crosscoder across two
 * models (domain_specificity.ts). The held-out documents of domain D and those of every other
 * domain are tokenised apart (each document followed by the end-of-text id, as `sae lm train`
 * reads held-out text per domain), cut into rows, run through both models and the dictionary, and
 * each feature's firing counted per domain; the rest pools the other domains (each up to --tokens,
 * so no one domain dominates by its size). Writes DIR/diff.json and prints a table.
 */
import { join } from "node:path";
import { tensor } from "../../tensor/ops/create.ts";
import { modelInfo } from "../../data/lm/model.ts";
import { loadTokenizer } from "../../data/text/tokenizer.ts";
import { corpusTokens, domainTokens } from "../../data/lm/train/tokens.ts";
import { writeJsonAtomic } from "../../data/atomic.ts";
import { loadSae } from "../io/saelens.ts";
import { dfcPartition, isCrosscoder } from "../arch/registry.ts";
import { isSet } from "../threshold.ts";
import { snakeKeys } from "../io/file_keys.ts";
import { type CrosscoderMetrics, evaluateCrosscoder } from "./eval.ts";
import { relativeDecoderNorms } from "./diffing.ts";
import {
  featureRatios,
  partitionSets,
  poolCounts,
  relativeNormBins,
  relativeNormSets,
  setFrequencies,
  type SetSpecificity,
  setSpecificity,
  topByRatio,
} from "./domain_specificity.ts";
import { crossModelBatches, crossModelHook, modelNamesOf } from "../eval/cross_model.ts";
import {
  configSpecialIds,
  evalModels,
  type Fail,
  type Flags,
  integer,
  value,
} from "../eval/eval_tokens.ts";

export const DIFF_HELP =
  `sae diff DIR --data TEXT.jsonl --domain D: do the features of a crosscoder across two models
(a base A and a model B finetuned on domain D) that belong to B fire more on D's text?

  --data PATH     JSON lines with "text" and "domain" fields (e.g. models/corpus/heldout.jsonl)
  --domain D      the domain; "the rest" is every other domain, each read on its own and pooled
  --model A,B     the models, in the crosscoder's input order (default: cfg.json's model_names)
  --hook H        the hook point (default: cfg.json's hook_name)
  --tokens N      tokens read from each domain (default 65536)
  --context T     tokens per row (default 128, at most the models' positions)
  --batch N       rows per forward pass (default 8)
  --top K         B's most domain-specific features listed (default 10)
  --json          print diff.json instead of the table

Per feature: freq(D) and freq(rest) = tokens it fires on / tokens (end-of-text ids left out), and
ratio = freq(D) / max(freq(rest), 1/tokens(rest)). Per set of features (a DFC's A-exclusive,
B-exclusive and shared sets; for every crosscoder the relative-decoder-norm buckets A-only r < 0.1,
B-only r > 0.9, shared, and r in tenths), over the features alive on either side: the mean and
median ratio, the share with ratio > 2, and the pooled ratio Σ freq(D) / Σ freq(rest). Writes
DIR/diff.json.`;

const KNOWN = ["data", "domain", "model", "hook", "tokens", "context", "batch", "top", "json"];

const fmtRatio = (x: number) =>
  !Number.isFinite(x)
    ? String(x)
    : x >= 100
    ? x.toFixed(0)
    : x === 0 || x >= 0.01
    ? x.toFixed(2)
    : x.toExponential(0);

function setTable(title: string, sets: SetSpecificity[]): string {
  const head = `${title.padEnd(14)} features  alive  mean ratio  median  >2      pooled`;
  return [
    head,
    ...sets.map((s) =>
      `${s.set.padEnd(14)} ${String(s.features).padStart(8)} ${String(s.alive).padStart(6)} ${
        fmtRatio(s.meanRatio).padStart(11)
      } ${fmtRatio(s.medianRatio).padStart(7)} ${
        Number.isNaN(s.shareAbove) ? "   -  " : `${(100 * s.shareAbove).toFixed(1)}%`.padStart(6)
      } ${fmtRatio(s.pooledRatio).padStart(8)}`
    ),
  ].join("\n");
}

export async function diffCommand(dir: string | undefined, flags: Flags, fail: Fail) {
  for (const f of Object.keys(flags)) {
    if (!KNOWN.includes(f)) fail(`sae diff: unknown option --${f} (see sae diff --help)`);
  }
  if (!dir) fail("sae diff: missing the dictionary folder (sae diff DIR)");
  const started = performance.now();
  const saved = await loadSae(dir);
  const { cfg, params, threshold } = saved;
  if (!isCrosscoder(cfg) || cfg.n_inputs !== 2) {
    fail(
      `sae diff: ${dir} holds a ${cfg.arch}${
        isCrosscoder(cfg) ? ` over ${cfg.n_inputs} inputs` : ""
      }; it compares a crosscoder across two models`,
    );
  }
  const data = value(flags, "data", fail) ?? fail("sae diff: --data TEXT.jsonl is required");
  const domain = value(flags, "domain", fail) ?? fail("sae diff: --domain D is required");
  const given = value(flags, "model", fail) ?? (modelNamesOf(cfg).join(",") ||
    fail(`sae diff: ${dir}/cfg.json names no model_names: pass --model A,B`));
  const { names, dirs, models } = await evalModels({ ...flags, model: given }, fail);
  const hook = crossModelHook(saved, names, models, flags, fail);
  const tokenizer = await loadTokenizer(dirs[0]).catch((e) =>
    fail(`--model ${names[0]}: ${(e as Error).message}`)
  );
  const corpus = await corpusTokens(data, { tokenizer, tokenizerDir: dirs[0], withDomains: true })
    .catch((e) => fail(`--data ${data}: ${(e as Error).message}`));
  const d = corpus.domains.indexOf(domain);
  const listed = corpus.domains.map((x) => JSON.stringify(x)).join(", ");
  if (d < 0) fail(`--domain ${domain}: ${data} has documents of domains ${listed}`);
  if (corpus.domains.length < 2) fail(`--domain ${domain}: ${data} has no other domain to compare`);
  const maxPos = Math.min(...models.map((m) => modelInfo(m).maxPositions));
  const context = integer(flags, "context", 2, fail) ?? Math.min(128, maxPos);
  if (context > maxPos) fail(`--context ${context} exceeds the models' ${maxPos} positions`);
  const budget = integer(flags, "tokens", 1, fail) ?? 65536;
  const rows = (ids: Int32Array, what: string) => {
    const n = Math.min(Math.floor(ids.length / context), Math.ceil(budget / context));
    if (n === 0) fail(`sae diff: ${what} has ${ids.length} tokens, not one row of ${context}`);
    return tensor(ids.slice(0, n * context), { shape: [n, context], dtype: "i32" });
  };
  const special = [...new Set([...tokenizer.specialIds, ...configSpecialIds(dirs[0]).special])]
    .sort((a, b) => a - b);
  const batch = integer(flags, "batch", 1, fail) ?? 8;
  const top = integer(flags, "top", 0, fail) ?? 10;
  const θ = isSet(threshold) ? { threshold } : {};
  // Each domain on its own (up to --tokens of it), the rest pooled from the other domains.
  const perDomain: { domain: string; m: CrosscoderMetrics }[] = [];
  for (let i = 0; i < corpus.domains.length; i++) {
    const name = corpus.domains[i];
    const ids = rows(domainTokens(corpus, i), `domain ${JSON.stringify(name)}`);
    const m = await evaluateCrosscoder(
      params,
      cfg,
      crossModelBatches(models, ids, batch, hook, special),
      θ,
    );
    ids.dispose();
    perDomain.push({ domain: name, m });
  }
  const mD = perDomain[d].m;
  const others = perDomain.filter((_, i) => i !== d);
  const rest = poolCounts(others.map((o) => o.m));
  const ratios = featureRatios(mD, rest);
  const rel = await relativeDecoderNorms(params.W_dec);
  const part = dfcPartition(cfg);
  const normSets = relativeNormSets(rel);
  const partSets = part ? partitionSets(part) : null;
  const byPartition = partSets ? setSpecificity(ratios, partSets) : null;
  const byNorm = setSpecificity(ratios, normSets);
  const byBin = setSpecificity(ratios, relativeNormBins(rel));
  const bSet = partSets ? partSets[1] : normSets[1];
  const sets = partSets ?? normSets;
  const topB = topByRatio(ratios, bSet.features, top);
  const seconds = (performance.now() - started) / 1000;
  const out = {
    dictionary: dir,
    arch: cfg.arch,
    models: names,
    hook,
    data,
    domain,
    rest_domains: others.map((o) => o.domain),
    context,
    tokens: { domain: mD.tokens, rest: rest.tokens },
    special_ids: special,
    ratio: "freq(domain) / max(freq(rest), 1/tokens(rest)); sets over alive features",
    ...(byPartition ? { by_partition: byPartition.map(snakeKeys) } : {}),
    by_relative_norm: byNorm.map(snakeKeys),
    by_relative_norm_bin: byBin.map(snakeKeys),
    top_b: {
      set: bSet.name,
      features: topB.map((f) => ({
        ...snakeKeys(f),
        freq_by_domain: Object.fromEntries(
          perDomain.map((p) => [p.domain, p.m.fired[f.feature] / p.m.tokens]),
        ),
      })),
    },
    per_domain: perDomain.map(({ domain, m }) => ({
      domain,
      tokens: m.tokens,
      fvu: m.fvu_per_input,
      l0: m.l0,
      set_frequency: setFrequencies(m, sets),
    })),
    seconds,
  };
  await writeJsonAtomic(join(dir, "diff.json"), out);
  if (flags.json) {
    console.log(JSON.stringify(out));
    return;
  }
  const fvu = (v: number[]) => v.map((x) => x.toFixed(3)).join(" / ");
  const e = (x: number) => (Number.isFinite(x) ? x.toExponential(2) : String(x));
  console.log(
    [
      `sae diff ${dir}: ${cfg.arch}, A = ${names[0]}, B = ${names[1]}, at ${hook}`,
      ...perDomain.map(({ domain: name, m }) =>
        `  ${name.padEnd(8)} ${String(m.tokens).padStart(7)} tokens, FVU A / B ${
          fvu(m.fvu_per_input)
        }, L0 ${m.l0.toFixed(1)}, mean frequency per feature ${
          sets.map((s) => `${s.name} ${e(setFrequencies(m, [s])[s.name])}`).join(", ")
        }`
      ),
      `ratio = freq(${domain}) / freq(rest = ${
        others.map((o) => o.domain).join(" + ")
      }), over features alive on either side:`,
      ...(byPartition ? [setTable("DFC set", byPartition)] : []),
      setTable("relative norm", byNorm),
      setTable("r bin", byBin),
      `${bSet.name} features most specific to ${domain} (frequency on ${
        perDomain.map((p) => p.domain).join(" / ")
      }):`,
      ...topB.map((f) =>
        `  feature ${String(f.feature).padStart(6)}  ratio ${fmtRatio(f.ratio).padStart(7)}  ${
          perDomain.map((p) => e(p.m.fired[f.feature] / p.m.tokens)).join(" / ")
        }`
      ),
      `wrote ${join(dir, "diff.json")} (${seconds.toFixed(1)} s)`,
    ].join("\n"),
  );
}
