// Qwen2 and Gemma-2 loaded from Hugging Face model folders against the float64 PyTorch reference
// in tests/golden/lm_reference.py: logits and every TransformerLens hook point, plus one loader
// error per family.
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tensor } from "../tensor/ops/create.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { loadSafetensors, saveSafetensors } from "../data/safetensors.ts";
import { gemma2HookNames, gemma2RunWithCache, loadGemma2 } from "../data/lm/gemma2.ts";
import { loadQwen2, qwen2HookNames, qwen2RunWithCache } from "../data/lm/qwen2.ts";
import { assert, assertEquals, AssertionError, test } from "./harness.ts";

const root = fileURLToPath(new URL("./golden/fixtures/lm/", import.meta.url));

/** |ours − ref| ≤ 1e-4·(|ref| + max|ref|): relative, with an absolute floor scaled to the tensor. */
function assertScaleClose(name: string, ours: Tensor, ref: Tensor): void {
  assertEquals(ours.shape, ref.shape, `${name} shape`);
  const a = ours.dataSync(), e = ref.dataSync();
  let big = 0;
  for (let i = 0; i < e.length; i++) big = Math.max(big, Math.abs(e[i]));
  for (let i = 0; i < e.length; i++) {
    const err = Math.abs(a[i] - e[i]);
    if (!(err <= 1e-4 * (Math.abs(e[i]) + big))) {
      throw new AssertionError(`${name}[${i}]: got ${a[i]}, expected ${e[i]} (max|ref| ${big})`);
    }
  }
}

/** Logits and every stored hook against the reference; the hook-name sets must be equal. */
async function checkAgainstReference(
  name: string,
  run: (tokens: Tensor) => { logits: Tensor; cache: Record<string, Tensor> },
  hookNames: string[],
): Promise<void> {
  const { tensors: ref } = await loadSafetensors(root + name + "/reference.safetensors");
  const { logits, cache } = run(ref.tokens);
  assertScaleClose("logits", logits, ref.logits);
  const stored = Object.keys(ref).filter((k) => k !== "tokens" && k !== "logits").sort();
  assertEquals(stored, [...hookNames].sort(), "hook names");
  for (const h of hookNames) assertScaleClose(h, cache[h], ref[h]);
}

async function expectError(fn: () => Promise<unknown>, parts: string[]): Promise<void> {
  let msg: string | null = null;
  try {
    await fn();
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg !== null, `expected an error naming ${parts.join(", ")}`);
  for (const p of parts) assert(msg.includes(p), `error ${JSON.stringify(msg)} lacks ${p}`);
}

/** A copy of a fixture in a temp folder with its weights changed by `edit`. */
async function withBrokenCopy(
  fixture: string,
  edit: (weights: Record<string, Tensor>) => void,
  check: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "lm-qwen2-gemma2-"));
  try {
    await copyFile(root + fixture + "/config.json", join(dir, "config.json"));
    const { tensors } = await loadSafetensors(root + fixture + "/model.safetensors");
    edit(tensors);
    await saveSafetensors(join(dir, "model.safetensors"), tensors);
    await check(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

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
