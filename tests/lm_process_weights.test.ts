// TransformerLens's weight processing (data/lm/process_weights.ts): the processed model against
// tests/golden/lm_tl_processed.py's float64 reference (written in TransformerLens's own per-head
// layout), and invariants that need no reference: log-probabilities kept, the residual stream
// centred (LayerNorm families) or untouched (RMSNorm), norms, q, k, patterns and MLP activations
// kept, value-side hooks shifted by a per-head constant, the input model untouched.
import { logSoftmax, mean } from "../tensor/ops/reduce.ts";
import { sub } from "../tensor/ops/elementwise.ts";
import { Tensor } from "../tensor/tensor.ts";
import { loadSafetensors } from "../data/safetensors.ts";
import { hookNames, type LanguageModel, loadModel, runWithCache } from "../data/lm/model.ts";
import {
  processingSteps,
  processWeights,
  type ProcessWeightsOptions,
} from "../data/lm/process_weights.ts";
import { assert, assertEquals, AssertionError, test } from "./harness.ts";
import { assertScaleClose, root } from "./lm_fixtures.ts";

const FIXTURES = [
  "gpt2",
  "gpt2_noprefix",
  "gpt2_sharded",
  "gpt_neox",
  "llama",
  "llama_bf16",
  "qwen2",
  "gemma2",
];
/** The fixtures tests/golden/lm_tl_processed.py writes reference_processed.safetensors for. */
const REFERENCED = ["gpt2", "gpt_neox", "qwen2"];

const isLayerNorm = (m: LanguageModel) => m.family === "gpt2" || m.family === "gpt_neox";

function run(model: LanguageModel, tokens: Tensor) {
  const { logits, cache } = runWithCache(model, tokens, hookNames(model));
  return { logits: logits!, cache };
}

async function tokensOf(name: string): Promise<Tensor> {
  return (await loadSafetensors(root + name + "/reference.safetensors")).tensors.tokens;
}

/** Hooks on the residual stream or writing to it: centred by centerWritingWeights. */
const residual = (h: string) =>
  /^hook_(pos_)?embed$|hook_resid_(pre|mid|post)$|hook_(attn|mlp)_out$/.test(h);
/** Hooks that carry the value bias: shifted by it under foldValueBiases. */
const valueSide = (h: string) => /attn\.hook_[vz]$/.test(h);

for (const name of REFERENCED) {
  test(`lm process weights: ${name} logits and hook points match the TransformerLens-layout reference`, async () => {
    const model = processWeights(await loadModel(root + name));
    const { tensors: ref } = await loadSafetensors(
      root + name + "/reference_processed.safetensors",
    );
    const { logits, cache } = run(model, ref.tokens);
    assertScaleClose("logits", logits, ref.logits);
    const stored = Object.keys(ref).filter((k) => k !== "tokens" && k !== "logits").sort();
    assertEquals(stored, [...hookNames(model)].sort(), "hook names");
    for (const h of stored) assertScaleClose(h, cache[h], ref[h]);
  });
}

test("lm process weights: the steps that apply per family follow TransformerLens's skips", async () => {
  const got: Record<string, Required<ProcessWeightsOptions>> = {};
  for (const name of ["gpt2", "gpt_neox", "llama", "qwen2", "gemma2"]) {
    got[name] = processingSteps(await loadModel(root + name));
  }
  const all = {
    foldLn: true,
    centerWritingWeights: true,
    centerUnembed: true,
    foldValueBiases: true,
  };
  assertEquals(got.gpt2, all);
  assertEquals(got.gpt_neox, all);
  assertEquals(got.llama, { ...all, centerWritingWeights: false, foldValueBiases: false });
  assertEquals(got.qwen2, { ...all, centerWritingWeights: false });
  assertEquals(got.gemma2, {
    foldLn: true,
    centerWritingWeights: false,
    centerUnembed: false,
    foldValueBiases: false,
  });
  const off = await loadModel(root + "gpt2");
  assertEquals(processingSteps(off, { foldLn: false, centerUnembed: false }), {
    ...all,
    foldLn: false,
    centerUnembed: false,
  });
});

for (const name of FIXTURES) {
  test(`lm process weights: ${name} keeps log-probs; hooks centred, shifted or kept as documented`, async () => {
    const raw = await loadModel(root + name);
    const tokens = await tokensOf(name);
    const before = run(raw, tokens);
    const processed = processWeights(raw);
    const after = run(processed, tokens);
    const steps = processingSteps(raw);

    assertScaleClose(
      "log_softmax(logits)",
      logSoftmax(after.logits, -1),
      logSoftmax(before.logits, -1),
    );
    // Logits: less their mean over the vocabulary, or unchanged where that step is skipped.
    const logitsExpected = steps.centerUnembed ? centred(before.logits) : before.logits;
    assertScaleClose("logits", after.logits, logitsExpected);
    if (steps.centerUnembed) assertNotCentred("raw logits", before.logits);

    let shifted = 0;
    for (const h of hookNames(raw)) {
      const a = after.cache[h], b = before.cache[h];
      if (residual(h) && isLayerNorm(raw)) {
        if (h.endsWith("hook_resid_pre")) assertNotCentred(`raw ${h}`, b);
        assertScaleClose(h, a, centred(b));
      } else if (valueSide(h) && steps.foldValueBiases) {
        assertConstantShift(h, a, b);
        shifted++;
      } else {
        assertScaleClose(h, a, b);
      }
    }
    // GPT-2 and NeoX hold value biases in every layer, Qwen2 too; the shift is checked there.
    if (steps.foldValueBiases) assertEquals(shifted, 2 * raw.cfg.nLayer, "value-side hooks");
  });
}

test("lm process weights: the input model's tensors are unchanged and processing is idempotent", async () => {
  for (const name of ["gpt2", "gpt_neox", "qwen2", "gemma2"]) {
    const raw = await loadModel(root + name);
    const snapshot = tensorsOf(raw.params).map((t) => Array.from(t.dataSync()));
    const once = processWeights(raw);
    const again = tensorsOf(raw.params).map((t) => Array.from(t.dataSync()));
    assertEquals(again.length, snapshot.length, `${name}: tensor count`);
    for (let i = 0; i < snapshot.length; i++) {
      assert(
        again[i].every((v, j) => Object.is(v, snapshot[i][j])),
        `${name}: input tensor ${i} changed`,
      );
    }
    // Some weights really changed (a processing that did nothing would pass the checks above).
    assert(
      tensorsOf(once.params).some((t) => !tensorsOf(raw.params).includes(t)),
      `${name}: nothing was processed`,
    );
    const tokens = await tokensOf(name);
    const a = run(once, tokens), b = run(processWeights(once), tokens);
    assertScaleClose(`${name} logits processed twice`, b.logits, a.logits);
    for (const h of hookNames(raw)) {
      assertScaleClose(`${name} ${h} processed twice`, b.cache[h], a.cache[h]);
    }
  }
});

test("lm process weights: each step alone keeps log-probs (GPT-2, NeoX, Qwen2)", async () => {
  const only: ProcessWeightsOptions[] = [
    { foldLn: true, centerWritingWeights: false, centerUnembed: false, foldValueBiases: false },
    { foldLn: false, centerWritingWeights: true, centerUnembed: false, foldValueBiases: false },
    { foldLn: false, centerWritingWeights: false, centerUnembed: true, foldValueBiases: false },
    { foldLn: false, centerWritingWeights: false, centerUnembed: false, foldValueBiases: true },
  ];
  for (const name of ["gpt2", "gpt_neox", "qwen2"]) {
    const raw = await loadModel(root + name);
    const tokens = await tokensOf(name);
    const ref = logSoftmax(run(raw, tokens).logits, -1);
    for (const opts of only) {
      const { logits } = run(processWeights(raw, opts), tokens);
      assertScaleClose(`${name} ${JSON.stringify(opts)}`, logSoftmax(logits, -1), ref);
    }
    const none = processWeights(raw, {
      foldLn: false,
      centerWritingWeights: false,
      centerUnembed: false,
      foldValueBiases: false,
    });
    assert(
      tensorsOf(none.params).every((t) => tensorsOf(raw.params).includes(t)),
      `${name}: with every step off the weights are the input's`,
    );
  }
});

/** x less its mean over the last axis. */
const centred = (x: Tensor): Tensor => sub(x, mean(x, -1, { keepdims: true }));

/** A check that centring changes something: some row's mean is far from zero. */
function assertNotCentred(name: string, x: Tensor): void {
  const m = mean(x, -1).dataSync();
  let big = 0;
  for (const v of m) big = Math.max(big, Math.abs(v));
  assert(big > 1e-2, `${name}: its mean over the last axis is already ~0 (${big})`);
}

/**
 * a = b − c for one c per head (the value bias) shared by every batch row and position, and c
 * not ~0: x [B, T, H, hd].
 */
function assertConstantShift(name: string, a: Tensor, b: Tensor): void {
  assertEquals(a.shape, b.shape, `${name} shape`);
  const [B, T, H, hd] = a.shape;
  const x = a.dataSync(), y = b.dataSync();
  let scale = 0, shift = 0;
  for (const v of y) scale = Math.max(scale, Math.abs(v));
  for (let k = 0; k < H * hd; k++) {
    const c = y[k] - x[k];
    shift = Math.max(shift, Math.abs(c));
    for (let bt = 0; bt < B * T; bt++) {
      const d = y[bt * H * hd + k] - x[bt * H * hd + k];
      if (!(Math.abs(d - c) <= 1e-4 * scale)) {
        throw new AssertionError(
          `${name}: shift at [${Math.floor(bt / T)}, ${bt % T}, ${Math.floor(k / hd)}, ${
            k % hd
          }] is ${d}, at position 0 ${c}`,
        );
      }
    }
  }
  assert(shift > 1e-3 * scale, `${name}: no value bias to fold (shift ${shift})`);
}

/** Every tensor of a parameter record (each once). */
function tensorsOf(params: unknown): Tensor[] {
  const out = new Set<Tensor>();
  const visit = (v: unknown): void => {
    if (v instanceof Tensor) out.add(v);
    else if (v !== null && typeof v === "object") Object.values(v).forEach(visit);
  };
  visit(params);
  return [...out];
}
