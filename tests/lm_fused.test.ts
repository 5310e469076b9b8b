/**
 * The fast inference path of the language models: the fused kernels (row norms, activations, the
 * causal attention pattern) agree with the compositions they replace, in f32 and f64, with masks,
 * soft-caps and windows; they stand aside when an operand is traced or a hook wants an
 * intermediate; the native add gives the TypeScript add's bits; a slice of heads reshapes as a
 * view; and every fixture's logits, through the fused path, match the reference.
 */
import { valueAndGrad } from "../autodiff/grad.ts";
import {
  activation,
  causalAttention,
  type Hook,
  layerNorm,
  makeHook,
  rmsNorm,
} from "../data/lm/common.ts";
import { forward, loadModel } from "../data/lm/model.ts";
import { loadSafetensors } from "../data/safetensors.ts";
import { loadNative, setNativeKernels } from "../tensor/cpu/native.ts";
import { fusedActivation, fusedAttnSoftmax, fusedRowNorm } from "../tensor/fused.ts";
import { tensor } from "../tensor/ops/create.ts";
import { add, mul } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { broadcastTo, reshape, sliceAxis, transpose } from "../tensor/ops/shape.ts";
import type { DType } from "../tensor/dtype.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";
import { assertScaleClose, root } from "./lm_fixtures.ts";

const status = loadNative();

/** Values of a fixed pseudo-random tensor (sin of a scaled index, so no generator is involved). */
function values(shape: number[], dtype: DType, scale = 1, phase = 0): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = Array.from({ length: n }, (_, i) => scale * Math.sin(1.7 * i + phase));
  return tensor(dtype === "f64" ? Float64Array.from(v) : Float32Array.from(v), { shape });
}

/** `fn` run with the native kernels off: the compositions (and the TypeScript add). */
function composed<T>(fn: () => T): T {
  const was = setNativeKernels(false);
  try {
    return fn();
  } finally {
    setNativeKernels(was);
  }
}

const noHooks: Hook = makeHook({});
const tol = (
  dtype: DType,
) => (dtype === "f64" ? { rtol: 1e-12, atol: 1e-13 } : { rtol: 1e-5, atol: 1e-6 });

if (!status.native) {
  test("lm fused: skipped (no native kernels)", () => console.log(`skipped: ${status.reason}`));
} else {
  for (const dtype of ["f32", "f64"] as const) {
    test(`lm fused: LayerNorm and RMSNorm (plain and 1 + w) agree with their compositions (${dtype})`, () => {
      const x = values([3, 5, 24], dtype, 3, 0.3), w = values([24], dtype, 0.5, 1);
      const b = values([24], dtype, 0.2, 2);
      const cases: [string, () => Tensor][] = [
        ["layerNorm", () => layerNorm(noHooks, "ln", x, w, b, 1e-5)],
        ["rmsNorm", () => rmsNorm(noHooks, "ln", x, w, 1e-6)],
        ["rmsNorm 1 + w", () => rmsNorm(noHooks, "ln", x, w, 1e-6, { plusOne: true })],
      ];
      assert(fusedRowNorm(x, w, b, { eps: 1e-5, center: true, plusOne: false }) !== null);
      for (const [name, f] of cases) {
        assertClose(f().dataSync(), composed(f).dataSync(), { ...tol(dtype), msg: name });
      }
    });

    test(`lm fused: gelu (tanh and erf) and silu agree with their compositions (${dtype})`, () => {
      // Wide range: the tanh form's tails, where ½x(1 + tanh u) cancels.
      const x = values([4, 300], dtype, 12);
      for (const kind of ["gelu_tanh", "gelu", "silu"] as const) {
        assert(fusedActivation(x, kind) !== null, `${kind}: the fused kernel ran`);
        assertClose(
          activation(x, kind).dataSync(),
          composed(() => activation(x, kind)).dataSync(),
          {
            ...tol(dtype),
            msg: kind,
          },
        );
      }
    });

    test(`lm fused: the attention pattern agrees with its composition, with mask, soft-cap and window (${dtype})`, () => {
      const B = 2, T = 7, H = 4, Hkv = 2, hd = 8;
      const q = values([B, T, H, hd], dtype, 1.5, 0.1);
      const k = values([B, T, Hkv, hd], dtype, 1.5, 0.7);
      const v = values([B, T, Hkv, hd], dtype, 1, 1.3);
      // Batch 1 pads its last two positions and, at position 0, its first key: every key its
      // first query sees is hidden, and the row stays finite (uniform) on both paths.
      const mask = tensor([[1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0, 0]], { dtype: "i32" });
      const optsList = [{}, { mask }, { softcap: 2 }, { window: 3 }, {
        mask,
        softcap: 2,
        window: 3,
      }];
      for (const opts of optsList) {
        const seen: Record<string, Tensor> = {};
        const hook = makeHook({ hooks: { "a.hook_pattern": (p) => void (seen.fast = p) } });
        const z = causalAttention(hook, "a.", q, k, v, 0.35, opts);
        const zc = composed(() => {
          const h = makeHook({ hooks: { "a.hook_pattern": (p) => void (seen.slow = p) } });
          return causalAttention(h, "a.", q, k, v, 0.35, opts);
        });
        const msg = JSON.stringify({ ...opts, mask: "mask" in opts });
        assertClose(seen.fast.dataSync(), seen.slow.dataSync(), { ...tol(dtype), msg });
        assertClose(z.dataSync(), zc.dataSync(), { ...tol(dtype), msg });
        for (const x of seen.fast.dataSync()) assert(Number.isFinite(x), `${msg}: finite pattern`);
      }
      const raw = values([B, H, T, T], dtype);
      assert(fusedAttnSoftmax(raw, null, { scale: 1, softcap: null, window: null }) !== null);
    });
  }

  test("lm fused: no fused kernel where an operand is traced (the gradient goes through the composition)", () => {
    const x = values([2, 6], "f64", 2), w = values([6], "f64", 1, 1), b = values([6], "f64");
    let fusedInside: Tensor | null = null;
    const [, g] = valueAndGrad((xx: Tensor) => {
      fusedInside = fusedRowNorm(xx, w, b, { eps: 1e-5, center: true, plusOne: false });
      return sum(mul(layerNorm(noHooks, "ln", xx, w, b, 1e-5), values([2, 6], "f64", 1, 2)));
    })(x);
    assertEquals(fusedInside, null, "a traced operand gets no fused kernel");
    // A row's LayerNorm gradient sums to zero over the row (the output ignores a shift of x).
    const gv = g.dataSync();
    for (let r = 0; r < 2; r++) {
      let s = 0;
      for (let c = 0; c < 6; c++) s += gv[r * 6 + c];
      assert(Math.abs(s) < 1e-12, `row ${r}: gradient sums to ${s}`);
    }
  });

  test("lm fused: a hook on a norm's intermediates gets them (the composition runs there)", () => {
    const x = values([2, 3, 8], "f32", 2), w = values([8], "f32"), b = values([8], "f32", 1, 1);
    const seen: Record<string, Tensor> = {};
    const hook = makeHook({ hooks: { "ln.hook_scale": (s) => void (seen.scale = s) } });
    const out = layerNorm(hook, "ln", x, w, b, 1e-5);
    assertEquals(seen.scale?.shape, [2, 3, 1]);
    assertClose(out.dataSync(), layerNorm(noHooks, "ln", x, w, b, 1e-5).dataSync());
  });

  for (const dtype of ["f32", "f64"] as const) {
    test(`lm fused: the native add gives the TypeScript add's bits (same shape, bias row, strided) (${dtype})`, () => {
      const x = values([5, 7, 33], dtype, 1e3, 0.1), y = values([5, 7, 33], dtype, 1e-3, 0.5);
      const bias = values([33], dtype, 7, 0.9);
      const strided = transpose(values([33, 7, 5], dtype, 2), [2, 1, 0]);
      const cases: [string, () => Tensor][] = [
        ["same shape", () => add(x, y)],
        ["bias row", () => add(x, bias)],
        ["bias row first", () => add(broadcastTo(bias, [5, 7, 33]), x)],
        ["strided", () => add(x, strided)],
      ];
      for (const [name, f] of cases) {
        const a = f().dataSync(), e = composed(f).dataSync();
        for (let i = 0; i < e.length; i++) {
          assert(Object.is(a[i], e[i]), `${name}[${i}]: native ${a[i]}, TypeScript ${e[i]}`);
        }
      }
    });
  }
}

test("lm fused: a slice of heads out of a fused QKV reshapes as a view, with the same values", () => {
  const qkv = values([2, 3, 3 * 8], "f32");
  const k = sliceAxis(qkv, -1, 8, 16);
  const heads = reshape(k, [2, 3, 2, 4]);
  assert(heads.storage === qkv.storage, "no copy");
  assertEquals(heads.strides, [72, 24, 4, 1]);
  const want = Array.from(
    { length: 2 * 3 * 8 },
    (_, i) => qkv.dataSync()[Math.floor(i / 8) * 24 + 8 + (i % 8)],
  );
  assertEquals(Array.from(heads.dataSync()), want);
  // Axes that do not nest still copy.
  const t = transpose(values([2, 3, 4], "f32"), [0, 2, 1]);
  assert(reshape(t, [8, 3]).storage !== t.storage, "a transpose merged across axes copies");
});

for (const name of ["gpt2", "gpt_neox", "llama", "qwen2", "gemma2"]) {
  test(`lm fused: ${name} logits without hooks (the fused path) match the reference`, async () => {
    const model = await loadModel(root + name);
    const { tensors: ref } = await loadSafetensors(root + name + "/reference.safetensors");
    assertScaleClose("logits", forward(model, ref.tokens), ref.logits);
  });
}
