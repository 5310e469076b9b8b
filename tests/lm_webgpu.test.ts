/**
 * The tiny fixture model of every family run on the webgpu backend agrees with the cpu: logits
 * and a few hook points (embedding, a layer-norm output, an attention pattern, an MLP activation,
 * the last residual), within the mirror suite's tolerance for accumulating ops
 * (tests/webgpu_mirror.ts: |gpu − cpu| ≤ 1e-5·|cpu| + 2e-6·bound), the bound being the tensor's
 * largest magnitude times the number of blocks (each block's sums add their rounding once).
 * Measured on llvmpipe: at most 0.3 of that (Gemma-2; the others ≤ 0.13). Skipped, with the
 * reason printed, where no adapter is found (Bun in CI: Dawn rejects Mesa's software Vulkan).
 */
import * as t from "../mod.ts";
import { treeFlatten, treeUnflatten } from "../autodiff/tree.ts";
import { hookNames, type LanguageModel, loadModel, runWithCache } from "../data/lm/model.ts";
import { loadSafetensors } from "../data/safetensors.ts";
import { AssertionError, test } from "./harness.ts";
import { root } from "./lm_fixtures.ts";
import { adapterOrSkip, on } from "./webgpu_adapter.ts";

const FIXTURES = ["gpt2", "gpt_neox", "llama", "llama_bf16", "qwen2", "gemma2"];

/** The hooks compared (every family has them), for a model of `nLayer` layers. */
function probes(m: LanguageModel): string[] {
  const L = m.cfg.nLayer;
  const want = [
    "hook_embed",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_pattern",
    `blocks.${L - 1}.mlp.hook_post`,
    `blocks.${L - 1}.hook_resid_post`,
  ];
  const known = new Set(hookNames(m));
  for (const h of want) if (!known.has(h)) throw new Error(`${m.family} lacks ${h}`);
  return want;
}

/** The model with every weight uploaded to `backend` (a tied head becomes two copies). */
async function moved(m: LanguageModel, backend: string): Promise<LanguageModel> {
  const [leaves, def] = treeFlatten(m.params);
  const up = await Promise.all(leaves.map((x) => t.toBackend(x as t.Tensor, backend)));
  return { ...m, params: treeUnflatten(def, up) } as LanguageModel;
}

/** The largest error as a share of the allowed one; throws naming the first value beyond it. */
function assertAgree(what: string, gpu: Float32Array, cpu: Float32Array, depth: number): number {
  let big = 0, worst = 0;
  for (let i = 0; i < cpu.length; i++) big = Math.max(big, Math.abs(cpu[i]));
  const atol = 2e-6 * big * depth;
  if (gpu.length !== cpu.length) {
    throw new AssertionError(`${what}: ${gpu.length} values on webgpu, ${cpu.length} on cpu`);
  }
  for (let i = 0; i < cpu.length; i++) {
    const err = Math.abs(gpu[i] - cpu[i]);
    worst = Math.max(worst, err / (1e-5 * Math.abs(cpu[i]) + atol));
    if (!(err <= 1e-5 * Math.abs(cpu[i]) + atol)) {
      throw new AssertionError(
        `${what}[${i}]: webgpu ${gpu[i]}, cpu ${cpu[i]} (max|cpu| ${big}, allowed ${
          1e-5 * Math.abs(cpu[i]) + atol
        })`,
      );
    }
  }
  return worst;
}

/** Logits and the probed hooks of `m` on webgpu, read back (`hooks` run there as well). */
async function onWebgpu(
  m: LanguageModel,
  ids: number[][],
  names: string[],
  hooks: Record<string, (a: t.Tensor) => t.Tensor> = {},
): Promise<Record<string, Float32Array>> {
  const gpuModel = await moved(m, "webgpu");
  return await on("webgpu", async () => {
    const run = runWithCache(gpuModel, ids, names, { hooks });
    const read = async (x: t.Tensor) => Float32Array.from(await x.data() as ArrayLike<number>);
    const out: Record<string, Float32Array> = { logits: await read(run.logits!) };
    for (const h of names) out[h] = await read(run.cache[h]);
    t.dispose([run.logits, run.cache, gpuModel.params]);
    return out;
  });
}

/** A fixture model, its reference tokens as rows, and the probed hook names. */
async function fixture(name: string) {
  const model = await loadModel(root + name);
  const { tensors: ref } = await loadSafetensors(root + name + "/reference.safetensors");
  const flat = Array.from(ref.tokens.dataSync() as Int32Array);
  const [B, T] = ref.tokens.shape;
  const ids = Array.from({ length: B }, (_, b) => flat.slice(b * T, (b + 1) * T));
  return { model, ids, names: probes(model) };
}

const f32 = (x: t.Tensor) => Float32Array.from(x.dataSync() as ArrayLike<number>);

const r = await adapterOrSkip("lm webgpu");
if (r.ok) {
  for (const name of FIXTURES) {
    test(`lm webgpu: ${name} logits and hook points agree with the cpu`, async () => {
      const { model, ids, names } = await fixture(name);
      const cpu = runWithCache(model, ids, names);
      const gpu = await onWebgpu(model, ids, names);
      const depth = model.cfg.nLayer;
      const worst = [assertAgree("logits", gpu.logits, f32(cpu.logits!), depth)];
      for (const h of names) worst.push(assertAgree(h, gpu[h], f32(cpu.cache[h]), depth));
      console.log(`${name}: largest error ${Math.max(...worst).toFixed(3)} of the allowed`);
    });
  }

  test("lm webgpu: the comparison catches a model that differs by 1e-4", async () => {
    const { model, ids, names } = await fixture("llama");
    const cpu = runWithCache(model, ids, names);
    const hook = `blocks.${model.cfg.nLayer - 1}.hook_resid_post`;
    const gpu = await onWebgpu(model, ids, names, { [hook]: (a) => t.mul(a, 1 + 1e-4) });
    let caught = "";
    try {
      assertAgree(hook, gpu[hook], f32(cpu.cache[hook]), model.cfg.nLayer);
    } catch (e) {
      caught = (e as Error).message;
    }
    if (!caught.startsWith(hook + "[")) {
      throw new AssertionError(`a residual scaled by 1 + 1e-4 passed the comparison: ${caught}`);
    }
  });
}
