// `sae eval DIR --model M --data ids.npy`: the dictionary's activation metrics on the model's
// activations plus the downstream CE/KL figures, checked against the PyTorch reference
// (tests/golden/fixtures/lm_splice/expected.json), and its errors.
import { mkdtemp, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tensor } from "../tensor/ops/create.ts";
import { saveNpy } from "../data/npy.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { runCli } from "./cli_run.ts";

const fx = fileURLToPath(new URL("./golden/fixtures/", import.meta.url));
const dir = fx + "lm_splice/";
const model = fx + "lm/gpt2";
const tokens = dir + "tokens.npy";
const expected = JSON.parse(readFileSync(dir + "expected.json", "utf8")).cases as Record<
  string,
  { metrics: Record<string, number> }
>;

/** `sae eval DIR --model M --data tokens.npy …` for a dictionary of the fixture. */
const evalArgs = (name: string, ...extra: string[]) => [
  "eval",
  dir + name,
  "--model",
  model,
  "--data",
  tokens,
  ...extra,
];

function close(got: Record<string, unknown>, want: Record<string, number>, what: string) {
  for (const [k, e] of Object.entries(want)) {
    const a = got[k] as number;
    const tol = k.endsWith("positions") ? 0 : 2e-5 * Math.max(1, Math.abs(e));
    assert(Math.abs(a - e) <= tol, `${what}.${k}: got ${a}, expected ${e}`);
  }
}

test("sae eval --model: a ReLU SAE's CE/KL figures match the reference; activation metrics beside them", async () => {
  const r = await runCli(...evalArgs("relu", "--batch", "4", "--json"));
  assertEquals(r.code, 0, r.err);
  const m = JSON.parse(r.out);
  close(m, expected.relu.metrics, "relu");
  // The hook comes from cfg.json's hook_name; the special ids from the model's config (bos = eos = 63).
  assertEquals(m.hooks, ["blocks.1.hook_resid_pre"]);
  assertEquals(m.special_ids, [63]);
  // The activation metrics skip the 8 special positions of the 96.
  assertEquals(m.tokens, 88);
  assert(m.fvu > 0 && m.fvu < 1 && m.l0 > 0, `fvu ${m.fvu}, l0 ${m.l0}`);
});

test("sae eval --model: --special-ids, a transcoder's and a crosscoder's hooks from cfg.json", async () => {
  const none = await runCli(...evalArgs("relu", "--batch", "4", "--special-ids", "", "--json"));
  assertEquals(none.code, 0, none.err);
  close(JSON.parse(none.out), expected.relu_nospecial.metrics, "relu_nospecial");
  for (const name of ["transcoder", "crosscoder"]) {
    const r = await runCli(
      "eval",
      dir + name,
      "--model",
      model,
      "--data",
      tokens,
      "--batch",
      "4",
      "--json",
    );
    assertEquals(r.code, 0, r.err);
    close(JSON.parse(r.out), expected[name].metrics, name);
  }
  const table = await runCli(...evalArgs("topk", "--batch", "4"));
  assertEquals(table.code, 0, table.err);
  assert(/ce_loss_score\s+0\.99/.test(table.out), table.out);
  assert(/spliced at blocks\.0\.hook_attn_out/.test(table.out), table.out);
});

test("sae eval --model: --context and --tokens choose what is read", async () => {
  const r = await runCli(...evalArgs("relu", "--context", "8", "--tokens", "20", "--json"));
  assertEquals(r.code, 0, r.err);
  const m = JSON.parse(r.out);
  // ceil(20 / 8) = 3 rows of 8 tokens; row 1's 63 sits at position 7, so 3 + 1 special positions.
  assertEquals([m.rows, m.context, m.kl_positions, m.ce_positions], [3, 8, 20, 18]);
});

test("sae eval --model: errors name the hook, the widths, the token id and its place", async () => {
  const tmp = await mkdtemp(join(tmpdir(), "sae-eval-lm-"));
  try {
    const bad = join(tmp, "bad.npy");
    await saveNpy(bad, tensor([[63, 1, 2, 3], [63, 4, 64, 5]], { dtype: "i32" }));
    const floats = join(tmp, "floats.npy");
    await saveNpy(floats, tensor([[1, 2, 3]]));
    const cases: [string[], RegExp][] = [
      [
        ["--hook", "blocks.7.hook_resid_pre"],
        /--hook blocks\.7\.hook_resid_pre: gpt2 has no hook point named/,
      ],
      [["--hook", "blocks.0.mlp.hook_pre"], /d_in is 32, but blocks\.0\.mlp\.hook_pre is 128 wide/],
      [
        ["--data", bad, "--hook", "blocks.1.hook_resid_pre"],
        /token id 64 at row 1, position 2 is outside the model's vocabulary \[0, 64\)/,
      ],
      [["--data", floats], /expected integer token ids \[N, T\], got f32 \[1,3\]/],
      [["--context", "40"], /--context 40 exceeds the 16 tokens per row/],
      [["--batches", "3"], /--batches does not apply with --model/],
    ];
    for (const [extra, pattern] of cases) {
      const args = ["eval", dir + "relu", "--model", model, "--data", tokens, ...extra];
      // A later --data replaces the first.
      const r = await runCli(...args);
      assertEquals(r.code, 2, `${extra.join(" ")}: exit ${r.code}, ${r.err}`);
      assert(pattern.test(r.err), `${extra.join(" ")}: ${r.err}`);
    }
    const noModel = await runCli(
      "eval",
      dir + "relu",
      "--data",
      tokens,
      "--hook",
      "blocks.1.hook_resid_pre",
    );
    assertEquals(noModel.code, 2);
    assert(/--hook needs --model/.test(noModel.err), noModel.err);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test("sae eval --model --process-weights: the same log-probs, so the same clean and zero CE; the SAE sees centred input", async () => {
  const args = ["eval", dir + "relu", "--model", model, "--data", tokens, "--json"];
  const raw = await runCli(...args);
  const processed = await runCli(...args, "--process-weights");
  assertEquals(processed.code, 0, processed.err);
  const a = JSON.parse(raw.out), b = JSON.parse(processed.out);
  for (const k of ["ce_clean", "ce_zero"]) {
    assert(Math.abs(a[k] - b[k]) <= 1e-4 * Math.abs(a[k]), `${k}: ${a[k]} vs ${b[k]}`);
  }
  // The residual stream is centred by the processing, so the dictionary's reconstruction differs.
  assert(Math.abs(a.fvu - b.fvu) > 1e-6, `fvu ${a.fvu} vs ${b.fvu}`);
});

test("sae eval --model --data TEXT: the figures of the same rows given as ids", async () => {
  const { copyFile, mkdir } = await import("node:fs/promises");
  const { openTextRows } = await import("../data/text/open_rows.ts");
  const tmp = await mkdtemp(join(tmpdir(), "eval-text-"));
  try {
    const m = join(tmp, "model");
    await mkdir(m);
    for (const f of ["config.json", "model.safetensors"]) {
      await copyFile(model + "/" + f, join(m, f));
    }
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      await copyFile(fx + "text/" + f, join(m, f));
    }
    const corpus = fx + "text/corpus.jsonl";
    const { rows, special } = await openTextRows(corpus, m, { context: 12 });
    const ids: number[] = [];
    for await (const r of rows.rows()) ids.push(...r.ids);
    const n = Math.min(Math.floor(ids.length / 12), 20);
    await saveNpy(
      join(tmp, "ids.npy"),
      tensor(ids.slice(0, n * 12), { shape: [n, 12], dtype: "i32" }),
    );
    const specials = [...new Set([63, ...special])].sort((a, b) => a - b);
    const asText = await runCli(
      "eval",
      dir + "relu",
      ...["--model", m, "--data", corpus, "--context", "12", "--tokens", String(n * 12), "--json"],
    );
    assertEquals(asText.code, 0, asText.err);
    const asIds = await runCli(
      "eval",
      dir + "relu",
      ...[
        "--model",
        m,
        "--data",
        join(tmp, "ids.npy"),
        "--special-ids",
        specials.join(","),
        "--json",
      ],
    );
    assertEquals(asIds.code, 0, asIds.err);
    const a = JSON.parse(asText.out), b = JSON.parse(asIds.out);
    assertEquals(a.special_ids, specials);
    for (
      const k of ["ce_clean", "ce_spliced", "ce_zero", "kl_spliced", "ce_positions", "fvu", "l0"]
    ) {
      assertEquals(a[k], b[k], k);
    }
    const bad = await runCli(
      "eval",
      dir + "relu",
      "--model",
      m,
      "--data",
      tokens,
      "--packing",
      "truncate",
    );
    assertEquals(bad.code, 2);
    assert(bad.err.includes("--packing applies to text"), bad.err);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});
