// GPT-2 loaded from a Hugging Face model folder against the float64 PyTorch reference in
// tests/golden/lm_reference.py: logits and every TransformerLens hook point, for the prefixed,
// unprefixed and sharded layouts; plus the loader's errors and the hooks' replace/observe contract.
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tensor } from "../tensor/ops/create.ts";
import { cast, mul } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { valueAndGrad } from "../autodiff/grad.ts";
import { treeMap } from "../autodiff/tree.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { loadSafetensors, saveSafetensors } from "../data/safetensors.ts";
import { forward, gpt2HookNames, runWithCache } from "../data/lm/gpt2.ts";
import { type Gpt2Params, loadGpt2 } from "../data/lm/load.ts";
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
      throw new AssertionError(
        `${name}[${i}]: got ${a[i]}, expected ${e[i]} (max|ref| ${big})`,
      );
    }
  }
}

for (const name of ["gpt2", "gpt2_noprefix", "gpt2_sharded"]) {
  test(`lm gpt2: ${name} logits and hook points match the reference`, async () => {
    const model = await loadGpt2(root + name);
    const { tensors: ref } = await loadSafetensors(root + name + "/reference.safetensors");
    const { logits, cache } = runWithCache(model, ref.tokens);
    assertScaleClose("logits", logits, ref.logits);
    const hookNames = gpt2HookNames(model.cfg.nLayer);
    // Every stored hook is one we produce, and every one we produce is stored.
    const stored = Object.keys(ref).filter((k) => k !== "tokens" && k !== "logits").sort();
    assertEquals(stored, [...hookNames].sort(), "hook names");
    for (const h of hookNames) assertScaleClose(h, cache[h], ref[h]);
  });
}

test("lm gpt2: a hook that replaces an activation changes the logits; one returning nothing does not", async () => {
  const model = await loadGpt2(root + "gpt2");
  const tokens = [[1, 2, 3, 4], [5, 6, 7, 8]];
  const base = forward(model.params, tokens, model.cfg).dataSync();
  let seen: Tensor | null = null;
  const observed = forward(model.params, tokens, model.cfg, {
    hooks: { "blocks.0.hook_resid_post": (a) => void (seen = a) },
  }).dataSync();
  assert(seen !== null, "the hook was called");
  assertEquals(observed.length, base.length);
  for (let i = 0; i < base.length; i++) {
    assert(Object.is(observed[i], base[i]), `logit ${i} changed: ${observed[i]} vs ${base[i]}`);
  }
  const replaced = forward(model.params, tokens, model.cfg, {
    hooks: { "blocks.0.hook_resid_post": (a) => mul(a, 2) },
  }).dataSync();
  let diff = 0;
  for (let i = 0; i < base.length; i++) diff = Math.max(diff, Math.abs(replaced[i] - base[i]));
  assert(diff > 1e-3, `replacing blocks.0.hook_resid_post changed the logits by only ${diff}`);
});

test("lm gpt2: runWithCache rejects an unknown hook name", async () => {
  const model = await loadGpt2(root + "gpt2");
  await expectError(
    () => Promise.resolve(runWithCache(model, tensor([[1]], { dtype: "i32" }), ["blocks.9.x"])),
    ["blocks.9.x"],
  );
});

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

/** A copy of the gpt2 fixture in a temp folder, changed by `edit`. */
async function withBrokenCopy(
  edit: (dir: string, weights: Record<string, Tensor>) => Promise<void>,
  check: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "lm-gpt2-"));
  try {
    await copyFile(root + "gpt2/config.json", join(dir, "config.json"));
    const { tensors } = await loadSafetensors(root + "gpt2/model.safetensors");
    await edit(dir, tensors);
    await check(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("lm gpt2: a missing tensor is an error naming the file and the tensor", async () => {
  await withBrokenCopy(async (dir, w) => {
    delete w["transformer.h.1.mlp.c_fc.bias"];
    await saveSafetensors(join(dir, "model.safetensors"), w);
  }, async (dir) => {
    await expectError(() => loadGpt2(dir), [
      join(dir, "model.safetensors"),
      "h.1.mlp.c_fc.bias",
      "missing",
      "[128]",
    ]);
  });
});

test("lm gpt2: a wrongly shaped tensor is an error naming file, tensor, expected and found shape", async () => {
  await withBrokenCopy(async (dir, w) => {
    w["transformer.h.0.attn.c_attn.bias"] = tensor(new Array(95).fill(0), { dtype: "f32" });
    await saveSafetensors(join(dir, "model.safetensors"), w);
  }, async (dir) => {
    await expectError(() => loadGpt2(dir), [
      join(dir, "model.safetensors"),
      "transformer.h.0.attn.c_attn.bias",
      "expected shape [96]",
      "found [95]",
    ]);
  });
});

test("lm gpt2: an extra tensor is an error naming it", async () => {
  await withBrokenCopy(async (dir, w) => {
    w["transformer.h.0.attn.c_extra.weight"] = tensor([1, 2], { dtype: "f32" });
    await saveSafetensors(join(dir, "model.safetensors"), w);
  }, async (dir) => {
    await expectError(() => loadGpt2(dir), ["transformer.h.0.attn.c_extra.weight", "unexpected"]);
  });
});

test("lm gpt2: an unknown model_type is an error naming the file and the type", async () => {
  await withBrokenCopy(async (dir, w) => {
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, model_type: "bert" }));
    await saveSafetensors(join(dir, "model.safetensors"), w);
  }, async (dir) => {
    await expectError(() => loadGpt2(dir), [join(dir, "config.json"), '"bert"']);
  });
});

test("lm gpt2: the forward pass is differentiable (gradients match central differences in f64)", async () => {
  const model = await loadGpt2(root + "gpt2");
  const params = treeMap((x: Tensor) => cast(x, "f64"), model.params);
  const tokens = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]];
  const weights = tensor(
    Array.from({ length: 2 * 5 * model.cfg.vocabSize }, (_, i) => Math.sin(i)),
    { dtype: "f64", shape: [2, 5, model.cfg.vocabSize] },
  );
  const loss = (p: Gpt2Params) => sum(mul(forward(p, tokens, model.cfg), weights));
  const [, g] = valueAndGrad(loss)(params);
  // One element of each kind of weight: attention QKV, MLP in, embedding, final norm.
  const probes: [string, (p: Gpt2Params) => Tensor, (p: Gpt2Params, t: Tensor) => void, number][] =
    [
      ["blocks.0.wQkv", (p) => p.blocks[0].wQkv, (p, t) => (p.blocks[0].wQkv = t), 5 * 96 + 40],
      ["blocks.1.wIn", (p) => p.blocks[1].wIn, (p, t) => (p.blocks[1].wIn = t), 77],
      ["wte", (p) => p.wte, (p, t) => (p.wte = t), 4 * 32 + 3],
      ["lnF.w", (p) => p.lnF.w, (p, t) => (p.lnF.w = t), 7],
    ];
  for (const [name, getT, setT, i] of probes) {
    const base = getT(params);
    const at = (delta: number): number => {
      const vals = Array.from(base.dataSync());
      vals[i] += delta;
      const p = { ...params, blocks: params.blocks.map((b) => ({ ...b })), lnF: { ...params.lnF } };
      setT(p, tensor(vals, { dtype: "f64", shape: base.shape }));
      return loss(p).dataSync()[0];
    };
    const h = 1e-5;
    const fd = (at(h) - at(-h)) / (2 * h);
    const an = getT(g).dataSync()[i];
    assert(Math.abs(fd) > 1e-6, `${name}[${i}]: the probe has no effect (${fd})`);
    assert(
      Math.abs(an - fd) <= 1e-5 * (Math.abs(fd) + 1),
      `${name}[${i}]: gradient ${an}, central difference ${fd}`,
    );
  }
});
