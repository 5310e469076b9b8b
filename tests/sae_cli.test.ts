// The `sae` command (cli.ts), run in-process through main(argv) with console output captured:
// train writes a complete run folder, eval/info print parseable JSON, usage errors exit with 2 and
// a message, --help exits with 0, and training reads .npy data.
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { runCli } from "./cli_run.ts";
import { assert, assertEquals, test } from "./harness.ts";

const run = runCli;

const tempDir = () => mkdtemp(join(tmpdir(), "sae-cli-"));
const TINY = [
  "--steps",
  "12",
  "--batch",
  "64",
  "--d-sae",
  "32",
  "--k",
  "4",
  "--synthetic-d",
  "16",
  "--synthetic-features",
  "24",
  "--synthetic-active",
  "2",
  "--quiet",
];

test("sae train writes the run folder; eval --json and info --json print parseable JSON", async () => {
  const dir = await tempDir();
  try {
    const out = join(dir, "run");
    const r = await run("train", "--arch", "topk", ...TINY, "--out", out);
    assertEquals(r.code, 0, `train failed: ${r.err}`);
    assert(r.out.includes("fraction_variance_explained"), "train prints the evaluation table");
    assert(r.out.includes("true features recovered"), "train prints ground-truth recovery");
    const files = await readdir(out);
    for (
      const f of [
        "cfg.json",
        "sae_weights.safetensors",
        "metrics.jsonl",
        "eval.json",
        "data.json",
        "checkpoint",
      ]
    ) assert(files.includes(f), `${f} missing from ${files}`);
    assert((await stat(join(out, "checkpoint"))).isDirectory(), "checkpoint/ is a folder");
    assertEquals((await readdir(join(out, "checkpoint"))).sort(), [
      "state.json",
      "state.safetensors",
    ]);
    const lines = (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assertEquals(lines.map((m) => m.step), [0, 10, 11], "logged steps (every 10th and the last)");
    const cfg = JSON.parse(await readFile(join(out, "cfg.json"), "utf8"));
    assertEquals([cfg.architecture, cfg.d_in, cfg.d_sae, cfg.k], ["topk", 16, 32, 4], "cfg.json");
    const evalJson = JSON.parse(await readFile(join(out, "eval.json"), "utf8"));
    assert(
      Number.isFinite(evalJson.fvu) && evalJson.true_features === 24,
      `eval.json ${JSON.stringify(evalJson).slice(0, 200)}`,
    );

    const e = await run("eval", out, "--json", "--batches", "2", "--batch", "128");
    assertEquals(e.code, 0, e.err);
    const m = JSON.parse(e.out);
    assertEquals(m.tokens, 256, "eval tokens");
    assert(
      m.fvu >= 0 && m.fvu < 1.5 && Math.abs(m.fvu + m.fraction_variance_explained - 1) < 1e-9,
      `eval fvu ${m.fvu}`,
    );
    assertEquals(m.l0 <= 4 + 1e-9, true, "TopK L0 ≤ k");
    assertEquals(m.true_features, 24, "recovery against the synthetic truth");

    const i = await run("info", out, "--json");
    assertEquals(i.code, 0, i.err);
    const info = JSON.parse(i.out);
    assertEquals([info.architecture, info.d_in, info.d_sae, info.k, info.dtype], [
      "topk",
      16,
      32,
      4,
      "f32",
    ], "info");
    assertEquals(info.parameters, 16 * 32 * 2 + 32 + 16, "parameter count");
    assert(
      info.evaluation && Number.isFinite(info.evaluation.fvu),
      "info shows the saved evaluation",
    );

    // Without --json both print tables.
    const table = await run("info", out);
    assert(
      table.code === 0 && table.out.includes("architecture") && table.out.includes("topk"),
      table.out,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("sae train --data file.npy trains on the array; eval needs --data for such a run", async () => {
  const dir = await tempDir();
  try {
    const npy = join(dir, "acts.npy");
    await t.saveNpy(npy, t.random.normal(t.random.key(5), [256, 12]));
    const out = join(dir, "run");
    const r = await run(
      "train",
      "--arch",
      "relu",
      "--data",
      npy,
      "--steps",
      "6",
      "--batch",
      "64",
      "--d-sae",
      "24",
      "--out",
      out,
      "--quiet",
    );
    assertEquals(r.code, 0, r.err);
    assertEquals(JSON.parse(await readFile(join(out, "data.json"), "utf8")), {
      kind: "npy",
      path: npy,
      targets: null,
    }, "data.json");
    const cfg = JSON.parse(await readFile(join(out, "cfg.json"), "utf8"));
    assertEquals([cfg.architecture, cfg.d_in, cfg.d_sae], ["standard", 12, 24]);
    assert(!r.out.includes("true features recovered"), "no ground truth for array data");

    const noData = await run("eval", out, "--json");
    assertEquals(noData.code, 2, "eval of an npy run without --data");
    assert(noData.err.includes("--data"), noData.err);
    const e = await run("eval", out, "--data", npy, "--json", "--batches", "1", "--batch", "128");
    assertEquals(e.code, 0, e.err);
    assertEquals(JSON.parse(e.out).tokens, 128);

    // A wrong extension is a usage error.
    const bad = await run(
      "train",
      "--data",
      join(dir, "acts.csv"),
      "--out",
      join(dir, "x"),
      "--quiet",
    );
    assertEquals(bad.code, 2);
    assert(bad.err.includes(".npy"), bad.err);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("bad arguments return 2 with a message on stderr", async () => {
  const dir = await tempDir();
  try {
    const out = join(dir, "never");
    const cases: [string[], string[]][] = [
      [[], ["usage: sae"]],
      [["frobnicate"], ["unknown command", "frobnicate"]],
      [["train", "--steps", "abc", "--out", out], ["--steps", "integer", "abc"]],
      [["train", "--steps", "-3", "--out", out], ["--steps", ">= 1"]],
      [["train", "--lr", "fast", "--out", out], ["--lr", "number"]],
      [["train", "--arch", "nope", "--out", out], ["--arch", "nope"]],
      [["train", "--bogus", "1", "--out", out], ["unknown option --bogus"]],
      [["train", "--d-sae", "8", "--expansion", "2", "--out", out], ["--d-sae", "--expansion"]],
      [["train", "--out"], ["--out needs a value"]],
      [["train", "extra-arg", "--out", out], ["unexpected argument", "extra-arg"]],
      [["train", "--matmul-precision", "fp8", "--out", out], ["--matmul-precision", "fp8"]],
      [["train", "--matmul-precision", "tf32", "--out", out], ["tf32 is a CUDA mode"]],
      [[
        "train",
        "--arch",
        "topk",
        "--k",
        "64",
        "--d-sae",
        "32",
        "--synthetic-d",
        "8",
        "--out",
        out,
      ], ["k = 64", "d_sae = 32"]],
      [["eval"], ["missing the dictionary folder"]],
      [["info"], ["missing the dictionary folder"]],
      [["info", dir, "--bogus"], ["unknown option --bogus"]],
    ];
    for (const [argv, fragments] of cases) {
      const r = await run(...argv);
      assertEquals(r.code, 2, `sae ${argv.join(" ")}: exit code (stderr: ${r.err})`);
      const text = r.err + r.out;
      for (const f of fragments) {
        assert(
          text.includes(f),
          `sae ${argv.join(" ")}: message ${JSON.stringify(text.slice(0, 300))} lacks ${
            JSON.stringify(f)
          }`,
        );
      }
    }
    // None of them trained anything.
    assert(!(await readdir(dir)).includes("never"), "a rejected command wrote its run folder");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("--help returns 0 for each command and prints its options", async () => {
  const cases: [string[], string][] = [
    [["--help"], "usage: sae <command>"],
    [["help"], "usage: sae <command>"],
    [["train", "--help"], "--arch NAME"],
    [["eval", "--help"], "sae eval DIR"],
    [["info", "--help"], "sae info DIR"],
    [["features", "--help"], "sae features DIR"],
  ];
  for (const [argv, fragment] of cases) {
    const r = await run(...argv);
    assertEquals(r.code, 0, `sae ${argv.join(" ")}`);
    assert(
      r.out.includes(fragment),
      `sae ${argv.join(" ")} printed ${JSON.stringify(r.out.slice(0, 200))}`,
    );
  }
});

test("sae train --matmul-precision bf16 records what ran (sbgemm or AMX, or f32 with the reason)", async () => {
  const dir = await tempDir();
  try {
    const out = join(dir, "run");
    const r = await run(
      "train",
      "--steps",
      "20",
      "--batch",
      "64",
      "--synthetic-d",
      "16",
      "--matmul-precision",
      "bf16",
      "--out",
      out,
      "--quiet",
    );
    assertEquals(r.code, 0, r.err);
    const ev = JSON.parse(await readFile(join(out, "eval.json"), "utf8"));
    const want = t.setCpuMatmulPrecision("bf16");
    t.setCpuMatmulPrecision("f32");
    assertEquals(ev.matmul_precision, {
      asked: "bf16",
      running: want.running,
      reason: want.reason,
      ...(want.via ? { via: want.via } : {}),
    });
    if (want.reason) assert(r.err.includes(want.reason), `stderr lacks the reason: ${r.err}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("sae train --data synthetic is the default data: the same weights", async () => {
  const dir = await tempDir();
  try {
    const a = await run("train", ...TINY, "--out", join(dir, "a"));
    const b = await run("train", ...TINY, "--data", "synthetic", "--out", join(dir, "b"));
    assertEquals([a.code, b.code], [0, 0], a.err + b.err);
    const w = (d: string) => readFile(join(dir, d, "sae_weights.safetensors"));
    assertEquals(new Uint8Array(await w("a")), new Uint8Array(await w("b")));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
