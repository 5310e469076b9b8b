// Qwen2 and Gemma-2 loaded from Hugging Face model folders against the float64 PyTorch reference
// in tests/golden/lm_reference.py: logits and every TransformerLens hook point, plus one loader
// error per family.
import { join } from "node:path";
import { tensor } from "../tensor/ops/create.ts";
import { gemma2HookNames, gemma2RunWithCache, loadGemma2 } from "../data/lm/gemma2.ts";
import { loadQwen2, qwen2HookNames, qwen2RunWithCache } from "../data/lm/qwen2.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { checkAgainstReference, expectError, root, withBrokenCopy } from "./lm_fixtures.ts";

test("lm qwen2: logits and hook points match the reference", async () => {
  const model = await loadQwen2(root + "qwen2");
  assert(model.cfg.qkvBias && model.cfg.tiedHead, "qwen2: q/k/v biases, tied head");
  assert(model.params.head === model.params.embed, "qwen2: head is the embedding");
  assertEquals([model.cfg.nHead, model.cfg.nKvHead, model.cfg.ropeTheta], [4, 2, 1e6]);
  assertEquals(model.cfg.layerWindows, [null, null], "use_sliding_window false");
  await checkAgainstReference(
    "qwen2",
    (t) => qwen2RunWithCache(model, t),
    qwen2HookNames(model.cfg.nLayer),
  );
});

test("lm qwen2: a wrongly shaped q/k/v bias is an error naming file, tensor and both shapes", async () => {
  await withBrokenCopy("qwen2", (w) => {
    w["model.layers.0.self_attn.k_proj.bias"] = tensor(new Array(15).fill(0), { dtype: "f32" });
  }, async (dir) => {
    await expectError(() => loadQwen2(dir), [
      join(dir, "model.safetensors"),
      "model.layers.0.self_attn.k_proj.bias",
      "expected shape [16]",
      "found [15]",
    ]);
  });
});

test("lm gemma2: logits and hook points match the reference", async () => {
  const model = await loadGemma2(root + "gemma2");
  const c = model.cfg;
  assertEquals([c.headDim, c.queryPreAttnScalar, c.attnSoftcap, c.finalSoftcap], [16, 24, 8, 3]);
  assertEquals(c.layerWindows, [5, null], "even layers slide, odd layers are global");
  assert(c.tiedHead && model.params.head === model.params.embed, "gemma2: tied head by default");
  await checkAgainstReference(
    "gemma2",
    (t) => gemma2RunWithCache(model, t),
    gemma2HookNames(c.nLayer),
  );
});

test("lm gemma2: a missing post-norm is an error naming the file, the tensor and its expected shape", async () => {
  await withBrokenCopy("gemma2", (w) => {
    delete w["model.layers.1.post_feedforward_layernorm.weight"];
  }, async (dir) => {
    await expectError(() => loadGemma2(dir), [
      join(dir, "model.safetensors"),
      "model.layers.1.post_feedforward_layernorm.weight",
      "missing",
      "[32]",
    ]);
  });
});
