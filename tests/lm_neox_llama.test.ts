// GPT-NeoX and Llama loaded from Hugging Face model folders against the float64 PyTorch reference
// in tests/golden/lm_reference.py: logits and every TransformerLens hook point, plus one loader
// error per family.
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tensor } from "../tensor/ops/create.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { loadSafetensors, saveSafetensors } from "../data/safetensors.ts";
import { loadNeox, neoxHookNames, neoxRunWithCache } from "../data/lm/gpt_neox.ts";
import { llamaHookNames, llamaRunWithCache, loadLlama } from "../data/lm/llama.ts";
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
  const dir = await mkdtemp(join(tmpdir(), "lm-families-"));
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
  assertEquals(tied.params.embed.dtype, "f32");
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
