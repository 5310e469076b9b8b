/** The fixtures of the `sae features` tests: the tiny GPT-2 with a tokenizer, and a corpus with domains. */
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { resolveConfig, type SaeConfigInput } from "../sae/config.ts";
import { architecture } from "../sae/arch/registry.ts";
import { saveSae } from "../sae/io/saelens.ts";
import * as random from "../tensor/random.ts";
import { mul } from "../tensor/ops/elementwise.ts";
import { dispose } from "../tensor/scope.ts";
import { runCli } from "./cli_run.ts";

const MODEL = "tests/golden/fixtures/lm/gpt2", TEXT = "tests/golden/fixtures/text";

/** A TopK SAE on the fixture model's MLP (4 × 32 wide), the dashboard tests' dictionary. */
export const MLP_SAE: SaeConfigInput = {
  arch: "topk",
  d_in: 128,
  d_sae: 24,
  k: 4,
  extra: { hook_name: "blocks.0.mlp.hook_post" },
};

/** An MLSAE on the fixture model's two residual streams. */
export const RESID_MLSAE: SaeConfigInput = {
  arch: "mlsae",
  d_in: 32,
  d_sae: 24,
  k: 3,
  extra: { hook_names: ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"] },
};

/** The fixture model with the text fixture's tokenizer, and a corpus (its documents `repeat` times) whose lines name a domain. */
export async function fixtureModelAndCorpus(
  dir: string,
  repeat = 6,
): Promise<{ model: string; corpus: string }> {
  const model = join(dir, "model");
  await mkdir(model);
  for (const f of ["config.json", "model.safetensors"]) {
    await copyFile(`${MODEL}/${f}`, `${model}/${f}`);
  }
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    await copyFile(`${TEXT}/${f}`, `${model}/${f}`);
  }
  const lines = (await readFile(`${TEXT}/corpus.jsonl`, "utf8")).split("\n").filter((l) => l);
  const corpus = join(dir, "corpus.jsonl");
  const docs = lines.map((l) => JSON.parse(l).text as string).filter((t) => t);
  const domain = (t: string) => (t.includes("def ") ? "code" : /[äöüß]/.test(t) ? "de" : "en");
  await writeFile(
    corpus,
    Array.from({ length: repeat }, () => docs).flat().map((text) =>
      JSON.stringify({ text, domain: domain(text) })
    ).join("\n") + "\n",
  );
  return { model, corpus };
}

/** A DFC over two inputs: A-exclusive [0, 4), B-exclusive [4, 10), shared [10, 20). */
export const DFC: SaeConfigInput = {
  arch: "dfc",
  d_in: 8,
  d_sae: 20,
  k: 3,
  dfc_shares: [0.2, 0.3],
};

/** The architecture's init with each decoder row W_dec[l, i] scaled by a random 0.2..2 (so relative norms spread); forbidden rows stay 0. */
export async function scaledDictionary(dir: string, c: SaeConfigInput): Promise<void> {
  const cfg = resolveConfig(c);
  const p = architecture(cfg.arch).init(random.key(5), cfg);
  const s = random.uniform(random.key(6), [cfg.n_inputs!, cfg.d_sae, 1], {
    min: 0.2,
    max: 2,
  });
  const W_dec = mul(p.W_dec, s);
  await saveSae(dir, { params: { ...p, W_dec }, cfg });
  dispose([p, s, W_dec]);
}

/** A dictionary of random weights (the architecture's own init) saved in `dir`. */
export async function randomDictionary(dir: string, c: SaeConfigInput): Promise<void> {
  const cfg = resolveConfig(c);
  const params = architecture(cfg.arch).init(random.key(3), cfg);
  await saveSae(dir, { params, cfg });
}

/**
 * A dictionary folder with its `sae features` statistics over the fixture corpus (the fixture
 * model, a random dictionary of config `c` on its hook(s)): what the server's feature pages,
 * search and prompt view read. Returns the folders; the caller's temp dir holds them.
 */
export async function dictionaryWithFeatures(
  dir: string,
  c: SaeConfigInput,
  featureFlags: string[] = [],
): Promise<{ dict: string; model: string; corpus: string }> {
  const { model, corpus } = await fixtureModelAndCorpus(dir, 2);
  const dict = join(dir, "dict");
  await randomDictionary(dict, c);
  const r = await runCli(
    ...["features", dict, "--model", model, "--data", corpus, "--context", "16", "--quiet"],
    ...["--top", "3", "--before", "4", "--after", "2", "--show", "0", "--bins", "8"],
    ...["--intervals", "4", "--samples", "2", "--logits", "4", "--domain-field", "domain"],
    ...featureFlags,
  );
  if (r.code !== 0) throw new Error(`sae features failed: ${r.err}`);
  return { dict, model, corpus };
}
