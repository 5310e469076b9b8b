/**
 * The pipelines the README runs on the shipped models, at small size: a tiny corpus, `sae lm
 * tokenizer` and `sae lm train` make a 2-layer model the same way the shipped ones were made, then
 * each of package.json's `train*` command lines runs with the shipped paths pointed at them and
 * fewer steps. Checked: the evaluation with CE and KL recovered in eval.json, SAELens's names in
 * cfg.json, and what each pipeline adds (features printed, per-layer metrics, the MLP replaced).
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assert, assertEquals, test } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { brownLines } from "./text_fixtures.ts";

const SHIPPED_DATA = "models/corpus/heldout.jsonl";
const SMALL_TRAIN = ["--steps", "20", "--batch", "256", "--context", "32", "--eval-tokens", "512"];
const SMALL_DIFF = ["--tokens", "256"];
/** `sae scae` subcommands at small size (the eval reads text past what training read). */
const SMALL_SCAE: Record<string, string[]> = {
  train: ["--steps", "10", "--batch", "256", "--context", "32", "--tokens", "2048", "--quiet"],
  connect: ["--tokens", "512", "--context", "32"],
  finetune: ["--steps", "3", "--batch", "64", "--tokens", "512", "--context", "32", "--quiet"],
  eval: ["--skip-tokens", "2048", "--tokens", "512", "--context", "32"],
};

/** package.json's `train*` scripts, each as its commands' arguments after `cli.ts`. */
async function trainScripts(): Promise<Record<string, string[][]>> {
  const pkg = JSON.parse(await readFile("package.json", "utf8"));
  const out: Record<string, string[][]> = {};
  for (const [name, line] of Object.entries(pkg.scripts as Record<string, string>)) {
    if (!/^train(:|$)/.test(name)) continue;
    out[name] = line.split("&&").map((command) => {
      const words = command.trim().split(/\s+/);
      return words.slice(words.indexOf("cli.ts") + 1);
    });
  }
  return out;
}

const root = await mkdtemp(join(tmpdir(), "sc-pipelines-"));
interface Fixture {
  corpus: string;
  /** Stand-ins for the shipped models, by their paths. */
  models: Record<string, string>;
}
let made: Promise<Fixture> | null = null;

/**
 * A tiny corpus (documents labelled en and de in turn), its tokenizer, a 2-layer model standing in
 * for both shipped base models, and its continuation on the `de` documents for model B.
 */
function fixture(): Promise<Fixture> {
  return made ??= (async () => {
    const corpus = join(root, "corpus.jsonl");
    const lines = brownLines(600);
    const docs = Array.from({ length: 60 }, (_, i) => ({
      text: lines.slice(i * 10, i * 10 + 10).join(" "),
      domain: i % 2 ? "de" : "en",
    }));
    await writeFile(corpus, docs.map((d) => JSON.stringify(d)).join("\n"));
    const tok = join(root, "tok"), lm = join(root, "lm"), lmB = join(root, "lm-b");
    const t = await runCli("lm", "tokenizer", "--data", corpus, "--vocab", "320", "--out", tok);
    assertEquals(t.code, 0, t.err);
    const common = ["--data", corpus, "--heldout", corpus, "--tokenizer", tok, "--batch", "8"];
    const small = ["--warmup", "2", "--eval-every", "20", "--eval-tokens", "512"];
    const m = await runCli(
      ...["lm", "train", ...common, "--out", lm, "--steps", "20", ...small],
      ...["--layers", "2", "--d-model", "32", "--heads", "2", "--context", "32"],
    );
    assertEquals(m.code, 0, m.err);
    const b = await runCli(
      ...["lm", "train", ...common, "--out", lmB, "--steps", "10", ...small],
      ...["--init-from", lm, "--domain", "de", "--context", "32"],
    );
    assertEquals(b.code, 0, b.err);
    return {
      corpus,
      models: { "models/lm-1l": lm, "models/lm-2l": lm, "models/lm-1l-de": lmB },
    };
  })();
}

/** Run one script's commands at small size; returns their output and the run folder. */
async function runScript(name: string): Promise<{ out: string; run: string; lm: string }> {
  const commands = (await trainScripts())[name];
  assert(commands, `package.json has no script ${name}`);
  const { corpus, models } = await fixture();
  const map = (a: string) =>
    a.split(",").map((part) =>
      models[part] ??
        (part === SHIPPED_DATA ? corpus : /^runs\//.test(part) ? join(root, part) : part)
    ).join(",");
  let out = "", run = "";
  for (const args of commands) {
    assert(args.join(" ").includes(SHIPPED_DATA), `${name}: ${args.join(" ")}`);
    run = join(root, args.find((a) => /^runs\//.test(a)) ?? "");
    const small = args[0] === "train"
      ? [...SMALL_TRAIN, "--quiet"]
      : args[0] === "scae"
      ? SMALL_SCAE[args[1]]
      : SMALL_DIFF;
    const r = await runCli(...args.map(map), ...small);
    assertEquals(r.code, 0, `${name}: ${args[0]}: ${r.err}`);
    out += r.out + "\n";
  }
  return { out, run, lm: models["models/lm-1l"] };
}

async function json(path: string): Promise<Record<string, any>> {
  return JSON.parse(await readFile(path, "utf8"));
}

function assertFinite(ev: Record<string, unknown>, keys: string[], what: string): void {
  for (const k of keys) {
    assert(typeof ev[k] === "number" && Number.isFinite(ev[k]), `${what} ${k}: ${ev[k]}`);
  }
}

test("pipelines: the scripts the README names exist and read the shipped model and corpus", async () => {
  const scripts = await trainScripts();
  assertEquals(Object.keys(scripts).sort(), [
    "train",
    "train:diff",
    "train:mlsae",
    "train:scae",
    "train:transcoder",
  ]);
  const readme = await readFile("README.md", "utf8");
  for (const name of Object.keys(scripts)) {
    assert(readme.includes(`npm run ${name}`), `README does not name npm run ${name}`);
  }
});

test("pipelines: main job, a TopK SAE on the MLP — CE/KL in eval.json, features printed", async () => {
  const { out, run, lm } = await runScript("train");
  assertFinite(
    await json(join(run, "eval.json")),
    ["fraction_variance_explained", "l0", "dead", "ce_loss_score", "kl_div_score"],
    "eval.json",
  );
  const cfg = await json(join(run, "cfg.json"));
  assertEquals([cfg.model_name, cfg.hook_name], [lm, "blocks.0.mlp.hook_post"]);
  assert(/features \(sae features/.test(out), out);
  assert(/^feature \d+: fires on/m.test(out), out);
  const about = await json(join(run, "features/features.json"));
  assert(about.tokens_scanned > 0 && about.alive > 0, JSON.stringify(about));
});

test("pipelines: transcoder from the MLP's input to its output, scored replacing the MLP", async () => {
  const { out, run } = await runScript("train:transcoder");
  const cfg = await json(join(run, "cfg.json"));
  assertEquals(
    [cfg.sparsecoder.arch, cfg.hook_name, cfg.hook_name_out],
    ["transcoder", "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"],
  );
  assertFinite(
    await json(join(run, "eval.json")),
    ["fraction_variance_explained", "ce_clean", "ce_spliced", "ce_loss_score", "kl_div_score"],
    "eval.json",
  );
  assert(/spliced at blocks\.0\.hook_mlp_out/.test(out), out);
});

test("pipelines: MLSAE over every residual stream, per-layer metrics and layer distributions", async () => {
  const { out, run } = await runScript("train:mlsae");
  const cfg = await json(join(run, "cfg.json"));
  const hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"];
  assertEquals([cfg.sparsecoder.arch, cfg.hook_names], ["mlsae", hooks]);
  const ev = await json(join(run, "eval.json"));
  assertFinite(ev, ["fraction_variance_explained", "ce_loss_score"], "eval.json");
  for (const k of ["fvu", "l0"]) {
    assertEquals(ev.per_layer?.[k]?.length, 3, `eval.json per_layer.${k}`);
  }
  const spread = ev.latent_layer_distribution;
  assert(Array.isArray(spread?.mean) && Array.isArray(spread?.std), "layer distributions as lists");
  assertEquals(spread.mean.length, cfg.d_sae);
  assert(/latent mean layer/.test(out), out);
});

test("pipelines: DFC across the base and finetuned models, then sae diff on the finetuning domain", async () => {
  const { out, run } = await runScript("train:diff");
  const cfg = await json(join(run, "cfg.json"));
  assertEquals(cfg.sparsecoder.arch, "dfc");
  assertEquals(cfg.model_names.length, 2);
  const ev = await json(join(run, "eval.json"));
  assertEquals(ev.per_model?.length, 2, "eval.json per_model");
  const diff = await json(join(run, "diff.json"));
  assertEquals(diff.domain, "de");
  assert(/B-exclusive/.test(out), out);
});

test("pipelines: SCAE suite on lm-2l — pretrain, connect, finetune, eval tables for each C", async () => {
  const { out, run } = await runScript("train:scae");
  const suite = join(run, "..", "scae");
  const info = await json(join(suite, "suite.json"));
  assertEquals([info.C, info.modules.length], [64, 4]);
  assertEquals((await json(join(run, "suite.json"))).C, 16);
  assertEquals((await json(join(run, "finetune.json"))).loss, "fvu+ce");
  // Two tables (pretrained, finetuned suite), each with the unpruned row and one per C.
  for (const c of ["unpruned", "0", "4", "16", "64", "all"]) {
    assertEquals(out.match(new RegExp(`^${c} `, "gm"))?.length, 2, `${c} rows: ${out}`);
  }
});

test("pipelines: clean up", () => rm(root, { recursive: true, force: true }));
