// Dictionaries spliced into a language model (sae/eval/splice.ts) and the CE/KL figures of
// sae/eval/downstream.ts, against tests/golden/lm_splice_reference.py (float64 PyTorch, the tiny
// GPT-2 fixture), plus invariants that hold whatever the weights: the error term keeps the clean
// forward value, an exact-identity dictionary changes nothing, gradients flow through the splice.
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import { memoryStats, type Tensor } from "../tensor/tensor.ts";
import { loadNpy } from "../data/npy.ts";
import { tensor, zeros } from "../tensor/ops/create.ts";
import { concat, transpose } from "../tensor/ops/shape.ts";
import { eye } from "../tensor/ops/create.ts";
import { mul, neg } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { grad } from "../autodiff/grad.ts";
import {
  forward,
  type LanguageModel,
  loadModel,
  runWithCache,
  runWithHooks,
} from "../data/lm/model.ts";
import { loadSae } from "../sae/io/saelens.ts";
import { resolveConfig } from "../sae/config.ts";
import {
  type Dictionary,
  dictionarySplice,
  multiHookSplice,
  SpliceError,
  transcoderSplice,
} from "../sae/eval/splice.ts";
import { downstreamLoss, type DownstreamMetrics, tokenBatches } from "../sae/eval/downstream.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

const dir = fileURLToPath(new URL("./golden/fixtures/lm_splice/", import.meta.url));
const modelDir = fileURLToPath(new URL("./golden/fixtures/lm/gpt2", import.meta.url));

interface Case {
  dictionary: string;
  hook?: string;
  hooks?: string[];
  input_hook?: string;
  special_ids: number[];
  pad_id: number | null;
  metrics: Record<string, number>;
}
const expected = JSON.parse(readFileSync(dir + "expected.json", "utf8")) as {
  batch: number;
  cases: Record<string, Case>;
};

let cached: { model: LanguageModel; tokens: Tensor } | null = null;
async function setup() {
  cached ??= { model: await loadModel(modelDir), tokens: await loadNpy(dir + "tokens.npy") };
  return cached;
}

function assertMetrics(name: string, got: DownstreamMetrics, want: Record<string, number>) {
  for (const [k, e] of Object.entries(want)) {
    const a = got[k as keyof DownstreamMetrics];
    // Figures are means of f32 log-probabilities of order 10; scores are ratios of their gaps.
    const tol = k.endsWith("positions") ? 0 : 2e-5 * Math.max(1, Math.abs(e));
    assert(Math.abs(a - e) <= tol, `${name}.${k}: got ${a}, expected ${e} (tol ${tol})`);
  }
}

for (const [name, c] of Object.entries(expected.cases)) {
  test(`lm splice: ${name} matches the PyTorch reference (CE, KL, scores, frac_recovered)`, async () => {
    const { model, tokens } = await setup();
    const dict = await loadSae(dir + c.dictionary);
    const splice = c.hooks
      ? multiHookSplice(model, dict, c.hooks)
      : c.input_hook
      ? transcoderSplice(model, dict, { input: c.input_hook, output: c.hook })
      : dictionarySplice(model, dict, c.hook!);
    const m = await downstreamLoss(model, tokenBatches(tokens, expected.batch), splice, {
      specialIds: c.special_ids,
      padId: c.pad_id,
    });
    assertMetrics(name, m, c.metrics);
    assertEquals(m.rows, 6);
    assertEquals(m.batches, 2);
  });
}

test("lm splice: a transcoder's hooks default from its config (hook_name, hook_name_out)", async () => {
  const { model, tokens } = await setup();
  const dict = await loadSae(dir + "transcoder");
  // dictionarySplice hands a transcoder to transcoderSplice; the input comes from cfg.json.
  const m = await downstreamLoss(
    model,
    tokenBatches(tokens, 4),
    dictionarySplice(model, dict, "blocks.1.hook_mlp_out"),
    { specialIds: [63] },
  );
  assertMetrics("transcoder (defaults)", m, expected.cases.transcoder.metrics);
});

test("lm splice: without frac_recovered the SAELens figures are the same", async () => {
  const { model, tokens } = await setup();
  const dict = await loadSae(dir + "relu");
  const c = expected.cases.relu;
  const m = await downstreamLoss(
    model,
    tokenBatches(tokens, expected.batch),
    dictionarySplice(model, dict, c.hook!),
    { specialIds: c.special_ids, fracRecovered: false },
  );
  assert(Number.isNaN(m.frac_recovered), `frac_recovered ${m.frac_recovered}`);
  const { frac_recovered: _f, ...rest } = c.metrics;
  assertMetrics("relu without frac_recovered", m, rest);
});

test("lm splice: evaluation streams with flat memory (no tensor outlives its batch)", async () => {
  const { model, tokens } = await setup();
  const splices = [
    dictionarySplice(model, await loadSae(dir + "topk"), "blocks.0.hook_attn_out"),
    multiHookSplice(model, await loadSae(dir + "crosscoder"), [
      "blocks.0.hook_resid_mid",
      "blocks.1.hook_resid_mid",
    ]),
  ];
  for (const s of splices) {
    await downstreamLoss(model, tokenBatches(tokens, 2), s, { specialIds: [63] });
    const before = memoryStats();
    await downstreamLoss(model, tokenBatches(tokens, 1), s, { specialIds: [63] });
    const after = memoryStats();
    assertEquals([after.liveBuffers, after.liveBytes], [before.liveBuffers, before.liveBytes]);
  }
});

/** An exact identity as a ReLU SAE: W_enc = [I, −I], W_dec = [I; −I], so x̂ = ReLU(x) − ReLU(−x) = x. */
function identitySae(d: number): Dictionary {
  const I = eye(d);
  const W_dec = concat([I, neg(I)], 0);
  return {
    cfg: resolveConfig({ arch: "relu", d_in: d, d_sae: 2 * d, apply_b_dec_to_input: false }),
    params: { W_enc: transpose(W_dec), W_dec, b_enc: zeros([2 * d]), b_dec: zeros([d]) },
  };
}

test("lm splice: the error term keeps the clean forward exactly (ce_spliced = ce_clean, kl_spliced = 0)", async () => {
  const { model, tokens } = await setup();
  const dict = await loadSae(dir + "relu");
  const hook = "blocks.1.hook_resid_pre";
  const base = dictionarySplice(model, dict, hook);
  const withError = { ...base, spliced: (t: Tensor) => base.spliced(t, { errorTerm: true }) };
  const m = await downstreamLoss(model, tokenBatches(tokens, 4), withError, { specialIds: [63] });
  assertEquals(m.ce_spliced, m.ce_clean);
  assertEquals(m.kl_spliced, 0);
  assertEquals(m.ce_loss_score, 1);
  assertEquals(m.kl_div_score, 1);
  assertEquals(m.frac_recovered, 1);
  // Without it the same dictionary does change the model (so the test above can fail).
  const plain = await downstreamLoss(model, tokenBatches(tokens, 4), base, { specialIds: [63] });
  assert(plain.kl_spliced > 0.01, `kl without the error term ${plain.kl_spliced}`);
});

test("lm splice: an identity dictionary changes nothing; zero ablation does", async () => {
  const { model, tokens } = await setup();
  const m = await downstreamLoss(
    model,
    tokenBatches(tokens, 4),
    dictionarySplice(model, identitySae(32), "blocks.0.hook_resid_post"),
    { specialIds: [63] },
  );
  assert(
    Math.abs(m.ce_spliced - m.ce_clean) <= 1e-5 * m.ce_clean,
    `${m.ce_spliced} vs ${m.ce_clean}`,
  );
  assert(m.kl_spliced <= 1e-5, `kl_spliced ${m.kl_spliced}`);
  assert(m.kl_zero > 0.1, `kl_zero ${m.kl_zero}`);
  assert(Math.abs(m.ce_loss_score - 1) <= 1e-4, `score ${m.ce_loss_score}`);
});

test("lm splice: the error term's gradients are those of splicing at the clean value", async () => {
  const { model } = await setup();
  const hook = "blocks.0.hook_resid_post";
  const t = tensor([[63, 5, 9, 12, 40, 2]], { dtype: "i32" });
  const weights = tensor(Array.from({ length: 6 * 64 }, (_, i) => Math.sin(i)), {
    shape: [1, 6, 64],
  });
  const base = identitySae(32);
  const lossOf = (W_dec: Tensor, errorTerm: boolean) => {
    const d: Dictionary = { ...base, params: { ...base.params, W_dec } };
    const hooks = dictionarySplice(model, d, hook).spliced(t, { errorTerm });
    return sum(mul(runWithHooks(model, t, hooks), weights));
  };
  // At the identity x̂ = x, so the error term's surrogate gradient (downstream Jacobian at x, then
  // through the dictionary) equals the plain splice's true gradient.
  const g = grad((w: Tensor) => lossOf(w, true))(base.params.W_dec) as Tensor;
  const gPlain = grad((w: Tensor) => lossOf(w, false))(base.params.W_dec) as Tensor;
  assertClose(g.dataSync(), gPlain.dataSync(), { rtol: 1e-4, atol: 1e-5 });
  assert(Array.from(g.dataSync()).some((v) => Math.abs(v) > 1e-3), "W_dec gets a gradient");
  // And the forward value is the clean one, bit for bit, for a dictionary that is not the identity.
  const relu = await loadSae(dir + "relu");
  const at = "blocks.1.hook_resid_pre";
  const kept = runWithHooks(
    model,
    t,
    dictionarySplice(model, relu, at).spliced(t, { errorTerm: true }),
  );
  assertEquals(Array.from(kept.dataSync()), Array.from(forward(model, t).dataSync()));
});

test("lm splice: an MLSAE that reconstructs its standardised input exactly leaves the model unchanged", async () => {
  const { model, tokens } = await setup();
  // ± pairs of the basis with k = d keep every positive pre-activation: x̂ = standardised x, and
  // the splice maps it back with the token's own mean and deviation.
  const id = identitySae(32);
  const mlsae: Dictionary = {
    cfg: resolveConfig({ arch: "mlsae", d_in: 32, d_sae: 64, k: 32, apply_b_dec_to_input: false }),
    params: id.params,
  };
  const hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_mid"];
  for (
    const splice of [
      multiHookSplice(model, mlsae, hooks),
      dictionarySplice(model, mlsae, hooks[1]),
    ]
  ) {
    const m = await downstreamLoss(model, tokenBatches(tokens, 4), splice, { specialIds: [63] });
    assert(m.kl_spliced <= 1e-5, `kl_spliced ${m.kl_spliced} at ${splice.replaces}`);
    assert(m.kl_zero > 0.1, `kl_zero ${m.kl_zero}`);
  }
  // A dictionary that is not exact does change it (the check above can fail).
  const shrunk: Dictionary = {
    ...mlsae,
    params: { ...id.params, W_dec: mul(id.params.W_dec, 0.5) },
  };
  const m = await downstreamLoss(
    model,
    tokenBatches(tokens, 4),
    multiHookSplice(model, shrunk, hooks),
    { specialIds: [63] },
  );
  assert(m.kl_spliced > 1e-3, `kl_spliced ${m.kl_spliced}`);
});

test("lm splice: crosscoder replaces only the hooks asked, from the clean activations of all", async () => {
  const { model, tokens } = await setup();
  const dict = await loadSae(dir + "crosscoder");
  const hooks = ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_mid"];
  const t = tokens;
  const only = multiHookSplice(model, dict, hooks, [hooks[1]]).spliced(t);
  assertEquals(Object.keys(only), [hooks[1]]);
  const { cache } = runWithCache(model, t, hooks, { hooks: only });
  const clean = runWithCache(model, t, hooks).cache;
  // The first hook is untouched; the second is replaced.
  assertEquals(Array.from(cache[hooks[0]].dataSync()), Array.from(clean[hooks[0]].dataSync()));
  assert(
    Array.from(cache[hooks[1]].dataSync()).some((v, i) => v !== clean[hooks[1]].dataSync()[i]),
    "second hook replaced",
  );
});

test("lm splice: errors name the hook, the widths and the architecture", async () => {
  const { model, tokens } = await setup();
  const relu = await loadSae(dir + "relu");
  const expectThrow = (f: () => unknown, pattern: RegExp) => {
    try {
      f();
    } catch (e) {
      assert(e instanceof SpliceError || e instanceof RangeError, String(e));
      assert(pattern.test((e as Error).message), (e as Error).message);
      return;
    }
    throw new Error(`expected an error matching ${pattern}`);
  };
  expectThrow(
    () => dictionarySplice(model, relu, "blocks.9.hook_resid_pre"),
    /no hook point named "blocks\.9\.hook_resid_pre"/,
  );
  // attn.hook_q is [B, T, 4, 8]: width 32 fits; mlp.hook_pre is 128 wide.
  const wide = dictionarySplice(model, relu, "blocks.0.mlp.hook_pre");
  expectThrow(
    () => runWithHooks(model, tokens, wide.spliced(tokens)),
    /blocks\.0\.mlp\.hook_pre has shape \[6,16,128\] \(width 128\), the dictionary's d_in is 32/,
  );
  const cc = await loadSae(dir + "crosscoder");
  expectThrow(
    () => dictionarySplice(model, cc, "blocks.0.hook_resid_mid"),
    /crosscoder reads several inputs/,
  );
  expectThrow(
    () => multiHookSplice(model, cc, ["blocks.0.hook_resid_mid"]),
    /2 inputs, 1 hooks given/,
  );
  const tc = await loadSae(dir + "transcoder");
  expectThrow(
    () =>
      transcoderSplice(model, tc, {
        input: "blocks.1.hook_mlp_out",
        output: "blocks.1.ln2.hook_normalized",
      }),
    /does not come before/,
  );
});
