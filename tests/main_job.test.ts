/**
 * The main job at small size: the chain `npm run train` runs on the shipped model, on a tiny one
 * made here the same way — a corpus, `sae lm tokenizer`, `sae lm train` — then package.json's own
 * `train` command line with the paths pointed at them and fewer steps: a TopK SAE on the MLP's
 * activations, its evaluation with CE and KL recovered in eval.json, SAELens's names in cfg.json,
 * and features printed with their contexts.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { brownLines } from "./text_fixtures.ts";

const SHIPPED_MODEL = "models/lm-1l", SHIPPED_DATA = "models/corpus/heldout.jsonl";

/** The arguments of package.json's `train` script after `cli.ts`. */
async function trainScriptArgs(): Promise<string[]> {
  const pkg = JSON.parse(await readFile("package.json", "utf8"));
  const words = (pkg.scripts.train as string).split(/\s+/);
  return words.slice(words.indexOf("cli.ts") + 1);
}

test("main job: corpus → tokenizer → language model → SAE on its MLP, CE/KL and features", async () => {
  const args = await trainScriptArgs();
  assert(args.includes(SHIPPED_MODEL) && args.includes(SHIPPED_DATA), args.join(" "));
  await withTempDir("main-job-", async (dir) => {
    const corpus = join(dir, "corpus.jsonl");
    const lines = brownLines(600);
    const docs = Array.from({ length: 60 }, (_, i) => lines.slice(i * 10, i * 10 + 10).join(" "));
    await writeFile(corpus, docs.map((text) => JSON.stringify({ text, domain: "en" })).join("\n"));
    const tok = join(dir, "tok"), lm = join(dir, "lm"), out = join(dir, "demo");
    const t = await runCli("lm", "tokenizer", "--data", corpus, "--vocab", "320", "--out", tok);
    assertEquals(t.code, 0, t.err);
    const m = await runCli(
      ...["lm", "train", "--data", corpus, "--heldout", corpus, "--tokenizer", tok, "--out", lm],
      ...["--layers", "1", "--d-model", "32", "--heads", "2", "--context", "32", "--batch", "8"],
      ...["--steps", "20", "--warmup", "2", "--eval-every", "20", "--eval-tokens", "512"],
    );
    assertEquals(m.code, 0, m.err);
    const mapped = args.map((a) =>
      a === SHIPPED_MODEL ? lm : a === SHIPPED_DATA ? corpus : a === "runs/demo" ? out : a
    );
    const r = await runCli(
      ...mapped,
      ...["--steps", "20", "--batch", "256", "--context", "32", "--eval-tokens", "512", "--quiet"],
    );
    assertEquals(r.code, 0, r.err);
    const ev = JSON.parse(await readFile(join(out, "eval.json"), "utf8"));
    for (
      const k of ["fraction_variance_explained", "l0", "dead", "ce_loss_score", "kl_div_score"]
    ) {
      assert(typeof ev[k] === "number" && Number.isFinite(ev[k]), `eval.json ${k}: ${ev[k]}`);
    }
    const cfg = JSON.parse(await readFile(join(out, "cfg.json"), "utf8"));
    assertEquals([cfg.model_name, cfg.hook_name], [lm, "blocks.0.mlp.hook_post"]);
    assert(/features \(sae features/.test(r.out), r.out);
    assert(/^feature \d+: fires on/m.test(r.out), r.out);
    const about = JSON.parse(await readFile(join(out, "features/features.json"), "utf8"));
    assert(about.tokens_scanned > 0 && about.alive > 0, JSON.stringify(about));
  });
});
