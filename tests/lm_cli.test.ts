// `sae lm info` and `sae lm run` on the tiny fixture models: the written cache equals the reference
// hooks and logits, and bad arguments or folders fail with a message naming the problem.
import { join } from "node:path";
import { saveNpy } from "../data/npy.ts";
import { loadSafetensors } from "../data/safetensors.ts";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { assertScaleClose, root } from "./lm_fixtures.ts";

const withTemp = (fn: (dir: string) => Promise<void>) => withTempDir("lm-cli-", fn);

test("sae lm info: family, sizes and hook points, as text and JSON", async () => {
  const text = await runCli("lm", "info", root + "gpt_neox");
  assertEquals(text.code, 0, text.err);
  assert(text.out.includes("gpt_neox") && text.out.includes("layers 2"), text.out);
  const json = await runCli("lm", "info", root + "gemma2", "--json", "--hooks");
  assertEquals(json.code, 0, json.err);
  const info = JSON.parse(json.out);
  assertEquals(info.family, "gemma2");
  assert(info.hooks.includes("blocks.0.ln1_post.hook_normalized"), "Gemma's post-norm hooks");
  assert(info.nParams > 0 && info.dtypes.length === 1, json.out);
});

test("sae lm run: the written hooks and logits equal the reference, in batches", async () => {
  await withTemp(async (dir) => {
    const { tensors: ref } = await loadSafetensors(root + "gpt2/reference.safetensors");
    await saveNpy(join(dir, "ids.npy"), ref.tokens);
    const hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"];
    const out = join(dir, "acts.safetensors");
    const r = await runCli(
      "lm",
      "run",
      "--model",
      root + "gpt2",
      "--tokens",
      join(dir, "ids.npy"),
      "--hooks",
      hooks.join(","),
      "--out",
      out,
      "--batch",
      "1",
    );
    assertEquals(r.code, 0, r.err);
    const { tensors, metadata } = await loadSafetensors(out);
    assertEquals(Object.keys(tensors).sort(), [...hooks, "logits"].sort());
    for (const h of hooks) assertScaleClose(h, tensors[h], ref[h]);
    assertScaleClose("logits", tensors.logits, ref.logits);
    assertEquals(metadata?.model, root + "gpt2");
  });
});

test("sae lm run --stop-early writes no logits", async () => {
  await withTemp(async (dir) => {
    const { tensors: ref } = await loadSafetensors(root + "llama/reference.safetensors");
    await saveNpy(join(dir, "ids.npy"), ref.tokens);
    const out = join(dir, "acts.safetensors");
    const r = await runCli(
      "lm",
      "run",
      "--model",
      root + "llama",
      "--tokens",
      join(dir, "ids.npy"),
      "--hooks",
      "blocks.0.hook_mlp_out",
      "--out",
      out,
      "--stop-early",
    );
    assertEquals(r.code, 0, r.err);
    const { tensors } = await loadSafetensors(out);
    assertEquals(Object.keys(tensors), ["blocks.0.hook_mlp_out"]);
    assertScaleClose("mlp_out", tensors["blocks.0.hook_mlp_out"], ref["blocks.0.hook_mlp_out"]);
  });
});

test("sae lm: bad arguments and folders name the problem", async () => {
  await withTemp(async (dir) => {
    const { tensors: ref } = await loadSafetensors(root + "gpt2/reference.safetensors");
    await saveNpy(join(dir, "ids.npy"), ref.tokens);
    const base = ["lm", "run", "--model", root + "gpt2", "--tokens", join(dir, "ids.npy")];
    const cases: [string[], number, string][] = [
      [[...base, "--hooks", "blocks.9.hook_resid_post", "--out", join(dir, "o")], 2, "blocks.9"],
      [[...base, "--hooks", "hook_embed", "--out", join(dir, "o"), "--batch", "0"], 2, "--batch"],
      [[...base, "--hooks", "hook_embed", "--out", join(dir, "o"), "--bogus"], 2, "--bogus"],
      [["lm", "info", dir], 1, join(dir, "config.json")],
      [["lm", "frobnicate"], 2, "frobnicate"],
    ];
    for (const [argv, code, part] of cases) {
      const r = await runCli(...argv);
      assertEquals(r.code, code, `${argv.join(" ")}: ${r.err}`);
      assert(r.err.includes(part), `${argv.join(" ")}: ${JSON.stringify(r.err)} lacks ${part}`);
    }
  });
});
