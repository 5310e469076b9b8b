/**
 * `sae lm train` (data/lm/train/): nanoGPT's init statistics, batches as a pure function of
 * (seed, step), n-gram baselines on a hand-worked array, save → loadModel → the same logits, the
 * loss going down on a tiny real-text run (Brown sentences, a byte-level tokenizer), a run killed
 * with SIGKILL and resumed ending with weights equal byte for byte to an uninterrupted run's, and
 * bad input. The PyTorch comparison of the step is tests/lm_train_golden.test.ts.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { forward } from "../data/lm/gpt2.ts";
import { loadModel } from "../data/lm/model.ts";
import { batchWindows, splitWindows, windowStarts } from "../data/lm/train/batches.ts";
import { ngramLosses } from "../data/lm/train/baselines.ts";
import { gpt2ConfigFor, initGpt2 } from "../data/lm/train/init.ts";
import { gpt2TensorsOf, saveGpt2Folder } from "../data/lm/train/save.ts";
import { scriptCommand } from "../tensor/platform/process.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { runCli } from "./cli_run.ts";
import { assert, assertClose, assertEquals, test, withTempDir } from "./harness.ts";
import { brownLines, writeByteTokenizer } from "./text_fixtures.ts";

function std(t: Tensor): number {
  const x = t.dataSync();
  let s = 0, s2 = 0;
  for (const v of x) s += v, s2 += v * v;
  const m = s / x.length;
  return Math.sqrt(s2 / x.length - m * m);
}

test("lm train init: nanoGPT's statistics per tensor kind, a pure function of the seed", () => {
  const cfg = gpt2ConfigFor({ layers: 2, dModel: 64, heads: 4, context: 64, vocabSize: 512 });
  assertEquals([cfg.dMlp, cfg.gelu, cfg.layerNormEps], [256, "none", 1e-5]);
  const p = initGpt2(0, cfg);
  const near = (x: number, want: number, what: string) =>
    assert(Math.abs(x / want - 1) < 0.05, `${what}: std ${x}, want ${want}`);
  near(std(p.wte), 0.02, "wte"), near(std(p.wpe), 0.02, "wpe");
  for (const b of p.blocks) {
    near(std(b.wQkv), 0.02, "wQkv"), near(std(b.wIn), 0.02, "wIn");
    near(std(b.wO), 0.01, "wO (0.02/√(2L))"), near(std(b.wOut), 0.01, "wOut (0.02/√(2L))");
    for (const z of [b.bQkv, b.bO, b.bIn, b.bOut, b.ln1.b, b.ln2.b]) {
      assert(z.dataSync().every((v) => v === 0), "biases start at 0");
    }
    for (const w of [b.ln1.w, b.ln2.w]) assert(w.dataSync().every((v) => v === 1), "LN w = 1");
  }
  assert(p.head === undefined, "the head is tied to wte");
  assertEquals(
    Array.from(initGpt2(0, cfg).blocks[0].wIn.dataSync()),
    Array.from(p.blocks[0].wIn.dataSync()),
  );
  assert(initGpt2(1, cfg).wte.dataSync()[0] !== p.wte.dataSync()[0], "another seed, other weights");
});

test("lm train batches: windows of T + 1 from (seed, step) alone, targets shifted by one", () => {
  const ids = Int32Array.from({ length: 1000 }, (_, i) => i);
  const spec = { seed: 3, batch: 6, context: 16 };
  const a = batchWindows(ids, 7, spec);
  assertEquals(Array.from(a), Array.from(batchWindows(ids, 7, spec)), "same (seed, step)");
  assert(a.join() !== batchWindows(ids, 8, spec).join(), "another step, other windows");
  assert(a.join() !== batchWindows(ids, 7, { ...spec, seed: 4 }).join(), "another seed");
  const starts = windowStarts(ids.length, 7, spec);
  starts.forEach((s, b) => {
    assert(s >= 0 && s + 17 <= 1000, `start ${s} in range`);
    for (let j = 0; j < 17; j++) assertEquals(a[b * 17 + j], s + j);
  });
  const { inputs, targets } = splitWindows(a, 16);
  assertEquals(inputs.shape, [6, 16]);
  const x = inputs.dataSync(), y = targets.dataSync();
  for (let i = 0; i < x.length; i++) assertEquals(y[i], x[i] + 1);
  // Every start is reachable, including the last one (n − T − 1).
  const seen = new Set<number>();
  for (let s = 0; s < 400; s++) for (const v of windowStarts(20, s, spec)) seen.add(v);
  assertEquals([...seen].sort((p, q) => p - q), [0, 1, 2, 3]);
});

test("lm train baselines: add-k unigram and bigram on a hand-worked array", () => {
  // train 0 1 0 1 2 (V 3, k 1): unigram counts 2 2 1 → p = 3/8 3/8 2/8; pairs (0,1)×2 (1,0) (1,2).
  const r = ngramLosses(Int32Array.from([0, 1, 0, 1, 2]), Int32Array.from([0, 1, 2]), 3, {
    unigramK: 1,
    bigramK: 1,
  });
  assertClose([r.unigram], [-(Math.log(3 / 8) + Math.log(2 / 8)) / 2], { rtol: 1e-12 });
  // p(1|0) = (2+1)/(2+3), p(2|1) = (1+1)/(2+3)
  assertClose([r.bigram], [-(Math.log(3 / 5) + Math.log(2 / 5)) / 2], { rtol: 1e-12 });
  let err = "";
  try {
    ngramLosses(Int32Array.from([0, 5]), Int32Array.from([0, 1]), 3);
  } catch (e) {
    err = (e as Error).message;
  }
  assert(err.includes("token id 5 outside [0, 3)"), err);
});

test("lm train save: the HF folder loads through loadModel with the same logits", async () => {
  await withTempDir("lmtrain-save-", async (dir) => {
    const cfg = gpt2ConfigFor({ layers: 2, dModel: 32, heads: 4, context: 16, vocabSize: 64 });
    const params = initGpt2(5, cfg);
    await writeByteTokenizer(join(dir, "tok"), { vocabSize: 64 });
    const ids = [[1, 5, 9, 2, 63, 0, 7, 7], [3, 3, 40, 12, 8, 1, 0, 2]];
    const want = forward(params, ids, cfg).dataSync();
    for (const dtype of ["f32", "bf16"] as const) {
      const out = join(dir, dtype);
      await saveGpt2Folder(out, params, cfg, { dtype, tokenizerDir: join(dir, "tok"), eosId: 0 });
      const cj = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
      assertEquals(
        [cj.model_type, cj.n_layer, cj.n_embd, cj.n_head, cj.n_positions, cj.vocab_size],
        ["gpt2", 2, 32, 4, 16, 64],
      );
      assertEquals([cj.activation_function, cj.tie_word_embeddings, cj.eos_token_id], [
        "gelu",
        true,
        0,
      ]);
      assert(existsSync(join(out, "tokenizer.json")), "tokenizer.json copied");
      const m = await loadModel(out, { dtype: "keep" });
      assertEquals(m.cfg, cfg);
      assertEquals(
        (m.params as typeof params).wte.dtype,
        dtype,
        "stored dtype",
      );
      const got = forward(m.params as typeof params, ids, cfg).dataSync();
      if (dtype === "f32") assertEquals(Array.from(got), Array.from(want), "f32: the same logits");
      else assertClose(got, want, { rtol: 0.05, atol: 0.02, msg: "bf16 logits" });
    }
    assert(Object.keys(gpt2TensorsOf(params)).length === 2 + 12 * 2 + 2, "every tensor named");
  });
});

/** A tiny corpus of Brown sentences, two domains, and a byte-level tokenizer. */
function writeCorpus(dir: string, nTrain = 400, nHeld = 60): void {
  const lines = brownLines(nTrain + nHeld);
  const doc = (i: number) =>
    JSON.stringify({ text: lines.slice(i, i + 4).join(" "), domain: i % 8 ? "a" : "b" });
  const rows = (from: number, to: number) => {
    const out: string[] = [];
    for (let i = from; i < to; i += 4) out.push(doc(i));
    return out.join("\n") + "\n";
  };
  writeFileSync(join(dir, "train.jsonl"), rows(0, nTrain));
  writeFileSync(join(dir, "heldout.jsonl"), rows(nTrain, nTrain + nHeld));
}

const TINY = [
  "--d-model",
  "32",
  "--heads",
  "4",
  "--context",
  "16",
  "--batch",
  "4",
  "--warmup",
  "2",
  "--lr",
  "1e-2",
  "--min-lr",
  "1e-3",
];

test("lm train: the loss goes down on real text; curves, card and a loadable model", async () => {
  await withTempDir("lmtrain-run-", async (dir) => {
    writeCorpus(dir);
    await writeByteTokenizer(join(dir, "tok"), { vocabSize: 96 });
    const base = ["--data", join(dir, "train.jsonl"), "--heldout", join(dir, "heldout.jsonl")];
    const r = await runCli(
      "lm",
      "train",
      ...base,
      "--tokenizer",
      join(dir, "tok"),
      "--out",
      join(dir, "m"),
      ...TINY,
      "--steps",
      "80",
      "--eval-every",
      "40",
      "--log-every",
      "20",
    );
    assertEquals(r.code, 0, r.err);
    assert(/step 80\/80 loss [\d.]+ heldout [\d.]+ .* tok\/s ETA/.test(r.out), r.out);
    const curves = readFileSync(join(dir, "m", "curves.jsonl"), "utf8").trim().split("\n")
      .map((l) => JSON.parse(l));
    assertEquals(curves.length, 80);
    assertEquals(Object.keys(curves[0]), ["step", "tokens", "lr", "loss", "grad_norm", "ms"]);
    assertEquals(curves.filter((c) => "heldout_loss" in c).map((c) => c.step), [40, 80]);
    const mean = (xs: { loss: number }[]) => xs.reduce((s, c) => s + c.loss, 0) / xs.length;
    const first = mean(curves.slice(0, 5)), last = mean(curves.slice(-10));
    assert(last < first - 0.8, `training loss ${first} → ${last}`);
    const card = readFileSync(join(dir, "m", "MODEL_CARD.md"), "utf8");
    const row = /\| all \| [\d,]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|/.exec(card);
    assert(row, card);
    const held = curves.filter((c) => "heldout_loss" in c).map((c) => c.heldout_loss);
    assert(held[1] < held[0] && held[1] < Math.log(96) - 1, `held-out ${held} (uniform 4.56)`);
    assertClose([Number(row[1])], [held[1]], { atol: 1e-3, msg: "the card's held-out loss" });
    assert(/\| a \| [\d,]+ \|/.test(card) && /\| b \| [\d,]+ \|/.test(card), "a row per domain");
    const m = await loadModel(join(dir, "m"));
    assertEquals([m.cfg.nLayer, m.cfg.dModel, m.cfg.vocabSize], [1, 32, 96]);
    // The token cache is reused: a second run (model B, one domain) finds it for the held-out set.
    const b = await runCli(
      "lm",
      "train",
      ...base,
      "--tokenizer",
      join(dir, "tok"),
      "--init-from",
      join(dir, "m"),
      "--domain",
      "b",
      ...TINY,
      "--steps",
      "4",
      "--out",
      join(dir, "b"),
    );
    assertEquals(b.code, 0, b.err);
    assert(/data: \d+ training tokens \(50 documents\)/.test(b.out), b.out);
    assert(readFileSync(join(dir, "b", "MODEL_CARD.md"), "utf8").includes("domain `b` only"));
  });
});

/** `sae lm train` on writeCorpus's files into `dir/out`, at the TINY size. */
const trainArgs = (dir: string, out: string) => [
  "lm",
  "train",
  "--data",
  join(dir, "train.jsonl"),
  "--heldout",
  join(dir, "heldout.jsonl"),
  "--tokenizer",
  join(dir, "tok"),
  "--out",
  join(dir, out),
  ...TINY,
];

/** Run the CLI as its own process; `onLine` may kill it. */
function spawnCli(
  args: string[],
  onLine: (line: string, kill: () => void) => void = () => {},
): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  const cmd = scriptCommand("cli.ts");
  const child = spawn(cmd[0], [...cmd.slice(1), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "", err = "";
  child.stdout!.on("data", (b: Uint8Array) => {
    const text = new TextDecoder().decode(b);
    out += text;
    for (const l of text.split("\n")) onLine(l, () => child.kill("SIGKILL"));
  });
  child.stderr!.on("data", (b: Uint8Array) => (err += new TextDecoder().decode(b)));
  return new Promise((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal, out, err }))
  );
}

test(
  "lm train --resume: killed with SIGKILL and resumed, the weights equal an uninterrupted run's byte for byte",
  async () => {
    await withTempDir("lmtrain-kill-", async (dir) => {
      writeCorpus(dir, 200, 40);
      await writeByteTokenizer(join(dir, "tok"), { vocabSize: 96 });
      const args = (out: string) => [
        ...trainArgs(dir, out),
        "--steps",
        "40",
        "--checkpoint-every",
        "5",
        "--eval-every",
        "15",
        "--log-every",
        "1",
        "--dtype",
        "f32",
      ];
      const whole = await spawnCli(args("whole"));
      assertEquals(whole.code, 0, whole.err);
      const killed = await spawnCli(args("killed"), (line, kill) => {
        if (line.startsWith("step 12/")) kill();
      });
      assertEquals(killed.signal, "SIGKILL", `the run ended on its own: ${killed.out.slice(-200)}`);
      assert(!existsSync(join(dir, "killed", "model.safetensors")), "killed before the end");
      const resumed = await spawnCli([...args("killed"), "--resume"]);
      assertEquals(resumed.code, 0, resumed.err);
      const from = /resumed from step (\d+)/.exec(resumed.out);
      assert(from && Number(from[1]) >= 10 && Number(from[1]) < 40, resumed.out.slice(0, 300));
      const bytes = (run: string, f: string) => readFileSync(join(dir, run, f));
      assert(
        Buffer.compare(
          bytes("whole", "model.safetensors"),
          bytes("killed", "model.safetensors"),
        ) ===
          0,
        "model.safetensors differs",
      );
      assert(
        Buffer.compare(
          bytes("whole", "checkpoint/state.safetensors"),
          bytes("killed", "checkpoint/state.safetensors"),
        ) === 0,
        "the optimiser state differs",
      );
      const steps = (run: string) =>
        readFileSync(join(dir, run, "curves.jsonl"), "utf8").trim().split("\n").map((l) => {
          const { step, loss } = JSON.parse(l);
          return [step, loss];
        });
      assertEquals(steps("killed"), steps("whole"), "curves (step, loss)");
    });
  },
  60_000,
);

test("lm train: bad input is an error naming the option, file or line", async () => {
  await withTempDir("lmtrain-bad-", async (dir) => {
    writeCorpus(dir, 40, 8);
    await writeByteTokenizer(join(dir, "tok"), { vocabSize: 96 });
    const base = [
      ...trainArgs(dir, "o"),
      "--steps",
      "3",
    ];
    const expect = async (args: string[], code: number, part: string) => {
      const r = await runCli(...args);
      assertEquals(r.code, code, `${args.join(" ")}: ${r.err}`);
      assert(r.err.includes(part), `${JSON.stringify(r.err)} lacks ${JSON.stringify(part)}`);
    };
    await expect(["lm", "train", "--data", "x.jsonl"], 2, "--heldout is required");
    await expect([...base, "--bogus", "1"], 2, "unknown option --bogus");
    await expect([...base, "--heads", "5"], 2, "--d-model 32 is not divisible by --heads 5");
    await expect([...base, "--lr", "fast"], 2, `--lr must be a non-negative number, got "fast"`);
    await expect([...base, "--micro", "3"], 2, "--micro 3 does not divide --batch 4");
    writeFileSync(join(dir, "cfg.json"), JSON.stringify({ "d-model": 32, dmodel: 4 }));
    await expect([...base, "--config", join(dir, "cfg.json")], 2, `unknown option "dmodel"`);
    await expect([...base, "--domain", "zz"], 1, `no document has domain "zz"`);
    writeFileSync(join(dir, "bad.jsonl"), '{"text": "ok"}\n{"text": 3}\n');
    await expect(
      [...base, "--data", join(dir, "bad.jsonl")],
      1,
      `bad.jsonl line 2: field "text" must be a string`,
    );
    // A run with a checkpoint refuses to start over, and a resume with other options says which.
    assertEquals((await runCli(...base)).code, 0);
    await expect(base, 2, "holds a checkpoint; pass --resume");
    await expect([...base, "--resume", "--lr", "2e-2"], 2, "--resume: hyper differs");
    // A config file gives the same options as flags.
    writeFileSync(
      join(dir, "ok.json"),
      JSON.stringify({ "d-model": 32, heads: 4, context: 16, steps: 3, warmup: 1 }),
    );
    const c = await runCli(
      ...trainArgs(dir, "c").slice(0, 8),
      "--config",
      join(dir, "ok.json"),
      "--out",
      join(dir, "c"),
    );
    assertEquals(c.code, 0, c.err);
    assertEquals(JSON.parse(readFileSync(join(dir, "c", "train.json"), "utf8")).dModel, 32);
  });
});
