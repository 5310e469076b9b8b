// `sae train --arch crosscoder|batchtopk-crosscoder|dfc` (sae/crosscoder/cli.ts hooks in
// cli.ts): synthetic paired data by default, .npy data of shape [N, L, d], the evaluation
// and model-diffing report, eval/info of the saved folder, and usage errors exiting with 2.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { runCli } from "./cli_run.ts";
import { assert, assertEquals, test } from "./harness.ts";

const run = runCli;

const TINY = [
  "--steps",
  "12",
  "--batch",
  "64",
  "--d-sae",
  "40",
  "--k",
  "4",
  "--synthetic-d",
  "8",
  "--synthetic-features",
  "20",
  "--synthetic-active",
  "2",
  "--quiet",
];

test("sae train --arch dfc: paired synthetic data, partition in cfg.json, report with partition usage; eval and info read it", async () => {
  const dir = await mkdtemp(join(tmpdir(), "cc-cli-"));
  try {
    const out = join(dir, "run");
    const r = await run(
      "train",
      "--arch",
      "dfc",
      ...TINY,
      "--shares",
      "0.1,0.15",
      "--code-norm",
      "sae",
      "--out",
      out,
    );
    assertEquals(r.code, 0, `train failed: ${r.err}`);
    for (
      const s of [
        "per input: input 0 FVU",
        "relative decoder norm",
        "exclusive 0",
        "exclusive 1",
        "shared",
      ]
    ) assert(r.out.includes(s), `report lacks ${s}: ${r.out}`);
    const cfg = JSON.parse(await readFile(join(out, "cfg.json"), "utf8"));
    assertEquals([
      cfg.architecture,
      cfg.n_inputs,
      cfg.partition.exclusive,
      cfg.sparsecoder.code_norm,
    ], ["dfc", 2, [[0, 4], [4, 10]], "sae"]);
    const data = JSON.parse(await readFile(join(out, "data.json"), "utf8"));
    assertEquals(
      [data.config.models, data.config.exclusive],
      [2, 1],
      "paired synthetic data: 20 features / 20 exclusive per model",
    );
    const ev = JSON.parse(await readFile(join(out, "eval.json"), "utf8"));
    assertEquals(ev.partition_usage.map((u: { features: number }) => u.features), [4, 6, 30]);
    const e = await run("eval", out, "--batches", "2", "--batch", "64", "--json");
    assertEquals(e.code, 0, e.err);
    const j = JSON.parse(e.out);
    assertEquals([j.tokens, j.fvu_per_input.length], [128, 2]);
    const info = await run("info", out, "--json");
    assertEquals(info.code, 0, info.err);
    const summary = JSON.parse(info.out);
    assertEquals([summary.architecture, summary.n_inputs, summary.code_norm, summary.partition], [
      "dfc",
      2,
      "sae",
      "exclusive 4 + 6, shared 30",
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("sae train --arch crosscoder reads [N, L, d] .npy data; bad crosscoder options exit with 2", async () => {
  const dir = await mkdtemp(join(tmpdir(), "cc-cli-"));
  try {
    const npy = join(dir, "acts.npy");
    await t.saveNpy(npy, t.random.normal(t.random.key(1), [256, 3, 6]));
    const r = await run(
      "train",
      "--arch",
      "crosscoder",
      "--data",
      npy,
      "--steps",
      "5",
      "--batch",
      "32",
      "--d-sae",
      "12",
      "--recon",
      "unsquared",
      "--quiet",
      "--out",
      join(dir, "cc"),
    );
    assertEquals(r.code, 0, r.err);
    const cfg = JSON.parse(await readFile(join(dir, "cc", "cfg.json"), "utf8"));
    assertEquals([cfg.n_inputs, cfg.d_in, cfg.sparsecoder.crosscoder_recon], [3, 6, "unsquared"]);
    assert(r.out.includes("input 2 FVU"), r.out);
    for (
      const [args, msg] of [
        [["--arch", "dfc", "--shares", "0.6,0.6"], "sum to 1.2"],
        [["--arch", "dfc", "--code-norm", "l3"], "--code-norm must be one of"],
        [["--arch", "crosscoder", "--recon", "abs"], "--recon must be squared or unsquared"],
        [
          ["--arch", "crosscoder", "--data", npy, "--inputs", "2"],
          "disagrees with the data's 3 inputs",
        ],
      ] as const
    ) {
      const b = await run("train", ...args, ...TINY, "--out", join(dir, "bad"));
      assertEquals(b.code, 2, `${args.join(" ")}: ${b.err}`);
      assert(b.err.includes(msg), `${args.join(" ")}: ${b.err}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
