// GPT-2 loaded from a Hugging Face model folder against the float64 PyTorch reference in
// tests/golden/lm_reference.py: logits and every TransformerLens hook point, for the prefixed,
// unprefixed and sharded layouts; plus the loader's errors and the hooks' replace/observe contract.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tensor } from "../tensor/ops/create.ts";
import { cast, mul } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { valueAndGrad } from "../autodiff/grad.ts";
import { treeMap } from "../autodiff/tree.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { forward, gpt2HookNames, runWithCache } from "../data/lm/gpt2.ts";
import { type Gpt2Params, loadGpt2 } from "../data/lm/load.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { checkAgainstReference, expectError, root, withBrokenCopy } from "./lm_fixtures.ts";

for (const name of ["gpt2", "gpt2_noprefix", "gpt2_sharded"]) {
  test(`lm gpt2: ${name} logits and hook points match the reference`, async () => {
    const model = await loadGpt2(root + name);
    await checkAgainstReference(
      name,
      (t) => runWithCache(model, t),
      gpt2HookNames(model.cfg.nLayer),
    );
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

test("lm gpt2: a missing tensor is an error naming the file and the tensor", async () => {
  await withBrokenCopy("gpt2", (w) => {
    delete w["transformer.h.1.mlp.c_fc.bias"];
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
  await withBrokenCopy("gpt2", (w) => {
    w["transformer.h.0.attn.c_attn.bias"] = tensor(new Array(95).fill(0), { dtype: "f32" });
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
  await withBrokenCopy("gpt2", (w) => {
    w["transformer.h.0.attn.c_extra.weight"] = tensor([1, 2], { dtype: "f32" });
  }, async (dir) => {
    await expectError(() => loadGpt2(dir), ["transformer.h.0.attn.c_extra.weight", "unexpected"]);
  });
});

test("lm gpt2: an unknown model_type is an error naming the file and the type", async () => {
  await withBrokenCopy("gpt2", async (_w, dir) => {
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, model_type: "bert" }));
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
