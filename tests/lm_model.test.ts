// The family-independent model API (data/lm/model.ts): loading by model_type, forward, the cache
// with an early stop, hooks that replace activations, the padding mask, and the model summary.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tensor } from "../tensor/ops/create.ts";
import { mul } from "../tensor/ops/elementwise.ts";
import { sliceAxis } from "../tensor/ops/shape.ts";
import { loadSafetensors } from "../data/safetensors.ts";
import {
  FAMILIES,
  forward,
  hookNames,
  loadModel,
  modelInfo,
  runWithCache,
  runWithHooks,
} from "../data/lm/model.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { assertScaleClose, checkAgainstReference, expectError, root } from "./lm_fixtures.ts";

const fixtures: Record<string, string> = {
  gpt2: "gpt2",
  gpt2_noprefix: "gpt2",
  gpt2_sharded: "gpt2",
  gpt_neox: "gpt_neox",
  llama: "llama",
  llama_bf16: "llama",
  qwen2: "qwen2",
  gemma2: "gemma2",
};

for (const [name, family] of Object.entries(fixtures)) {
  test(`lm model: ${name} loads by model_type and matches the reference`, async () => {
    const model = await loadModel(root + name);
    assertEquals(model.family, family);
    const names = hookNames(model);
    await checkAgainstReference(name, (t) => {
      const { logits, cache } = runWithCache(model, t, names);
      return { logits: logits!, cache };
    }, names);
  });
}

test("lm model: every supported family has a fixture", () => {
  assertEquals([...new Set(Object.values(fixtures))].sort(), [...FAMILIES].sort());
});

test("lm model: an unsupported model_type names the file, the type and what is supported", async () => {
  const dir = await mkdtemp(join(tmpdir(), "lm-type-"));
  try {
    await writeFile(join(dir, "config.json"), JSON.stringify({ model_type: "mamba" }));
    await expectError(() => loadModel(dir), [join(dir, "config.json"), '"mamba"', "gpt_neox"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("lm model: stopEarly returns the asked activations, no logits, and runs nothing later", async () => {
  const model = await loadModel(root + "llama");
  const { tensors: ref } = await loadSafetensors(root + "llama/reference.safetensors");
  const names = ["blocks.0.hook_mlp_out", "blocks.0.hook_resid_pre"];
  let reached = 0;
  const hooks = { "blocks.1.hook_resid_pre": () => void reached++ };
  const { logits, cache } = runWithCache(model, ref.tokens, names, { stopEarly: true, hooks });
  assertEquals(logits, null);
  for (const n of names) assertScaleClose(n, cache[n], ref[n]);
  assertEquals(reached, 0);
  const full = runWithCache(model, ref.tokens, names, { hooks });
  assert(full.logits !== null && reached === 1, "without stopEarly the pass reaches layer 1");
});

test("lm model: stopAtLayer caches the residual entering that block, as TransformerLens's stop_at_layer", async () => {
  const model = await loadModel(root + "gpt2");
  const { tensors: ref } = await loadSafetensors(root + "gpt2/reference.safetensors");
  const one = runWithCache(model, ref.tokens, ["blocks.0.hook_mlp_out"], { stopAtLayer: 1 });
  assertEquals(one.logits, null);
  assertEquals(Object.keys(one.cache).sort(), ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_pre"]);
  assertScaleClose("resid", one.cache["blocks.1.hook_resid_pre"], ref["blocks.1.hook_resid_pre"]);
  const all = runWithCache(model, ref.tokens, [], { stopAtLayer: 2 });
  assertScaleClose("end", all.cache["blocks.1.hook_resid_post"], ref["blocks.1.hook_resid_post"]);
  for (
    const [names, l, part] of [[["blocks.1.attn.hook_q"], 1, "past stopAtLayer 1"], [
      [],
      3,
      "[0, 2]",
    ]] as const
  ) {
    let msg = "";
    try {
      runWithCache(model, ref.tokens, names, { stopAtLayer: l });
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(msg.includes(part), msg);
  }
});

test("lm model: the cache sees what a hook returns", async () => {
  const model = await loadModel(root + "gpt_neox");
  const { tensors: ref } = await loadSafetensors(root + "gpt_neox/reference.safetensors");
  const n = "blocks.0.hook_attn_out";
  const { cache } = runWithCache(model, ref.tokens, [n], { hooks: { [n]: (a) => mul(a, 2) } });
  assertScaleClose("doubled", cache[n], mul(ref[n], 2));
});

test("lm model: runWithHooks replaces an activation, and a misspelt hook is an error", async () => {
  const model = await loadModel(root + "gpt2");
  const { tensors: ref } = await loadSafetensors(root + "gpt2/reference.safetensors");
  const clean = forward(model, ref.tokens);
  const same = runWithHooks(model, ref.tokens, { "blocks.1.hook_mlp_out": (a) => a });
  assertScaleClose("identity hook", same, clean);
  const zeroed = runWithHooks(model, ref.tokens, { "blocks.1.hook_mlp_out": (a) => mul(a, 0) });
  const diff = Math.max(
    ...Array.from(zeroed.dataSync(), (v, i) => Math.abs(v - clean.dataSync()[i])),
  );
  assert(diff > 1e-3, `zeroing the last MLP changes the logits (max change ${diff})`);
  let msg = "";
  try {
    runWithHooks(model, ref.tokens, { "blocks.1.hook_mlp_outt": (a) => a });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes('"blocks.1.hook_mlp_outt"') && msg.includes("gpt2"), msg);
});

test("lm model: no query attends to a masked key, and left padding stays finite", async () => {
  for (const name of ["gpt2", "gpt_neox", "llama", "gemma2"]) {
    const model = await loadModel(root + name);
    const { tensors: ref } = await loadSafetensors(root + name + "/reference.safetensors");
    const [B, T] = ref.tokens.shape;
    // Row 0: the first two positions are padding (left padding); row 1: position 3 is hidden.
    const hidden = (b: number, t: number) => (b === 0 ? t < 2 : t === 3);
    const mask = tensor(
      Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => !hidden(b, t))),
      { dtype: "bool" },
    );
    const names = hookNames(model).filter((n) => n.endsWith("hook_pattern"));
    const { logits, cache } = runWithCache(model, ref.tokens, names, { attentionMask: mask });
    assert(logits!.dataSync().every(Number.isFinite), `${name}: finite logits`);
    for (const n of names) {
      const p = cache[n].dataSync(), H = cache[n].shape[1];
      for (let b = 0; b < Math.min(B, 2); b++) {
        for (let h = 0; h < H; h++) {
          for (let q = 0; q < T; q++) {
            const anyVisible = Array.from({ length: q + 1 }, (_, k) => !hidden(b, k)).some(Boolean);
            if (!anyVisible) continue;
            for (let k = 0; k < T; k++) {
              const v = p[((b * H + h) * T + q) * T + k];
              if (hidden(b, k)) assertEquals(v, 0, `${name} ${n}[${b},${h},${q},${k}]`);
            }
          }
        }
      }
    }
    // Unmasked, the same keys carry weight: the mask is what removed it.
    const open = runWithCache(model, ref.tokens, [names[0]]).cache[names[0]].dataSync();
    assert(open[(0 * T + 3) * T + 1] > 0, `${name}: key 1 is visible without the mask`);
    let msg = "";
    try {
      forward(model, ref.tokens, { attentionMask: sliceAxis(mask, 1, 0, T - 1) });
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(msg.includes("attentionMask") && msg.includes(`[${B}, ${T}]`), msg);
  }
});

test("lm model: modelInfo counts parameters once and reports sizes", async () => {
  const model = await loadModel(root + "gpt2");
  const info = modelInfo(model);
  const { cfg } = model as Extract<typeof model, { family: "gpt2" }>;
  const d = cfg.dModel, m = cfg.dMlp, L = cfg.nLayer;
  const perLayer = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d);
  assertEquals(info.nParams, cfg.vocabSize * d + cfg.nPositions * d + L * perLayer + 2 * d);
  assertEquals(info.dtypes, ["f32"]);
  assertEquals(info.family, "gpt2");
  assertEquals(info.maxPositions, cfg.nPositions);
});
