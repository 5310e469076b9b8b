// GPT-NeoX and Llama loaded from Hugging Face model folders against the float64 PyTorch reference
// in tests/golden/lm_reference.py: logits and every TransformerLens hook point, plus one loader
// error per family.
import { join } from "node:path";
import { tensor } from "../tensor/ops/create.ts";
import { loadNeox, neoxHookNames, neoxRunWithCache } from "../data/lm/gpt_neox.ts";
import { llamaHookNames, llamaRunWithCache, loadLlama } from "../data/lm/llama.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { checkAgainstReference, expectError, root, withBrokenCopy } from "./lm_fixtures.ts";

test("lm gpt_neox: logits and hook points match the reference", async () => {
  const model = await loadNeox(root + "gpt_neox");
  assertEquals(model.cfg.nRot, 4);
  assert(model.cfg.parallelResidual && !model.cfg.tiedHead, "Pythia-style config");
  await checkAgainstReference(
    "gpt_neox",
    (t) => neoxRunWithCache(model, t),
    neoxHookNames(model.cfg),
  );
});

test("lm gpt_neox: a wrongly shaped tensor is an error naming file, tensor, expected and found shape", async () => {
  await withBrokenCopy("gpt_neox", (w) => {
    w["gpt_neox.layers.1.attention.query_key_value.weight"] = tensor(
      new Array(95 * 32).fill(0),
      { dtype: "f32", shape: [95, 32] },
    );
  }, async (dir) => {
    await expectError(() => loadNeox(dir), [
      join(dir, "model.safetensors"),
      "gpt_neox.layers.1.attention.query_key_value.weight",
      "expected shape [96, 32]",
      "found [95, 32]",
    ]);
  });
});

for (const name of ["llama", "llama_bf16"]) {
  test(`lm llama: ${name} logits and hook points match the reference`, async () => {
    const model = await loadLlama(root + name);
    await checkAgainstReference(
      name,
      (t) => llamaRunWithCache(model, t),
      llamaHookNames(model.cfg.nLayer),
    );
  });
}

test("lm llama: tied and untied heads, GQA and MQA are read from the config", async () => {
  const untied = await loadLlama(root + "llama");
  assert(!untied.cfg.tiedHead && untied.params.head !== untied.params.embed, "llama: untied head");
  assertEquals([untied.cfg.nHead, untied.cfg.nKvHead], [4, 2]);
  const tied = await loadLlama(root + "llama_bf16");
  assert(tied.cfg.tiedHead && tied.params.head === tied.params.embed, "llama_bf16: tied head");
  assertEquals([tied.cfg.nKvHead, tied.cfg.ropeTheta], [1, 500000]);
  // BF16 weights stay bf16 by default; dtype "f32" widens them at load.
  assertEquals(tied.params.embed.dtype, "bf16");
  assertEquals((await loadLlama(root + "llama_bf16", { dtype: "f32" })).params.embed.dtype, "f32");
});

test("lm llama: a missing tensor is an error naming the file, the tensor and its expected shape", async () => {
  await withBrokenCopy("llama", (w) => {
    delete w["model.layers.1.self_attn.k_proj.weight"];
  }, async (dir) => {
    await expectError(() => loadLlama(dir), [
      join(dir, "model.safetensors"),
      "model.layers.1.self_attn.k_proj.weight",
      "missing",
      "[16, 32]",
    ]);
  });
});
