// The "decoupled" code norm of the BatchTopK crosscoder family (crosscoder_learning's
// encode_decoupled): each input keeps its own batch top-k of f·‖W_dec[l, i]‖, decodes with its own
// code, and tracks its own θ. Checked here against direct computations on the host: the per-input
// selection and decode, θ per input after a training step, the θ-based inference code, and the
// evaluation's firing counts. The loss and gradients are in the golden fixtures (sae_golden).
import * as t from "../mod.ts";
import { ARCHITECTURES } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { resolveConfig } from "../sae/config.ts";
import { flatInput, perInputWeights } from "../sae/crosscoder/crosscoder.ts";
import { evaluateCrosscoder } from "../sae/crosscoder/eval.ts";
import type { SaeParams } from "../sae/params.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

const L = 3, d = 4, F = 16, k = 2, B = 24;
const cfg = resolveConfig({
  arch: "batchtopk-crosscoder",
  d_in: d,
  d_sae: F,
  k,
  n_inputs: L,
  code_norm: "decoupled",
});
const arch = ARCHITECTURES[cfg.arch];

/** Parameters whose inputs weigh features differently (decoder rows scaled per input), so their selections differ. */
function params(): SaeParams {
  const p = arch.init(t.random.key(4), cfg);
  const scale = t.exp(t.random.normal(t.random.key(5), [L, F, 1]));
  return { ...p, W_dec: t.mul(p.W_dec, scale), b_enc: t.full([F], 0.2) };
}
const batch = (i: number) => t.add(t.random.normal(t.random.key(20 + i), [B, L, d]), 0.3);

/** Host values: relu(pre) [B, F] and ‖W_dec[l, i]‖ [L, F]. */
async function hostView(p: SaeParams, x: t.Tensor): Promise<{ a: Float32Array; w: Float32Array }> {
  const a = await t.relu(
    t.add(t.matmul(flatInput(x, cfg), t.reshape(p.W_enc, [L * d, F])), p.b_enc!),
  ).data() as Float32Array;
  return { a, w: await perInputWeights(p.W_dec).data() as Float32Array };
}

test("decoupled crosscoder: each input keeps its own k·B largest f·‖W_dec[l]‖ and decodes with its own code", async () => {
  const p = params(), x = batch(0);
  const code = arch.encode(p, x, cfg);
  assertEquals(code.kind, "inputs");
  const dense = await toDense(code, F).data(); // [B, L, F]
  const { a, w } = await hostView(p, x);
  const picks: string[] = [];
  for (let l = 0; l < L; l++) {
    // The k·B largest scores of input l over the whole batch, recomputed on the host.
    const order = Array.from({ length: B * F }, (_, j) => j).sort((i, j) =>
      a[j] * w[l * F + (j % F)] - a[i] * w[l * F + (i % F)]
    );
    const keep = new Set(order.slice(0, k * B));
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < F; i++) {
        // The encoder's GEMM folds the bias in (sparse encoder): same values to rounding.
        const want = keep.has(b * F + i) ? a[b * F + i] : 0, got = dense[(b * L + l) * F + i];
        assert(
          (got === 0) === (want === 0),
          `code[${b}, ${l}, ${i}] kept ${got !== 0}, expected ${want !== 0}`,
        );
        assertClose([got], [want], { rtol: 1e-6, msg: `code[${b}, ${l}, ${i}]` });
      }
    }
    picks.push([...keep].sort((x, y) => x - y).join(","));
  }
  assert(
    new Set(picks).size === L,
    "the inputs chose different entries (else this test could not tell decoupled from shared)",
  );
  // x̂_l = code_l W_dec[l] + b_dec[l].
  const xhat = await arch.decode(p, code, cfg).data();
  const Wd = await p.W_dec.data(), bd = await p.b_dec.data();
  const want = new Float64Array(B * L * d);
  for (let b = 0; b < B; b++) {
    for (let l = 0; l < L; l++) {
      for (let j = 0; j < d; j++) {
        let s = bd[l * d + j];
        for (let i = 0; i < F; i++) s += dense[(b * L + l) * F + i] * Wd[(l * F + i) * d + j];
        want[(b * L + l) * d + j] = s;
      }
    }
  }
  assertClose(xhat, want, { rtol: 1e-5, atol: 1e-5, msg: "x̂" });
});

test("decoupled crosscoder: θ is one value per input, the first step's smallest kept f·‖W_dec[l]‖; L0 is k", async () => {
  const tc = t.sae.resolveTrainConfig(cfg, {
    steps: 4,
    batch_size: B,
    threshold_start_step: 0,
    normalize_activations: false,
    geometric_median_init: false,
  });
  const s0 = await t.sae.initTrainState(t.random.key(0), cfg, tc, [{ x: batch(0) }]);
  assertEquals(s0.threshold, [-1, -1, -1], "unset θ per input");
  const p = params();
  const s = { ...s0, params: p }; // fresh Adam moments are zeros of the same shapes
  const x = batch(1);
  const code = await toDense(arch.encode(p, x, cfg), F).data();
  const w = await perInputWeights(p.W_dec).data();
  const want = Array.from({ length: L }, (_, l) => {
    let m = Infinity;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < F; i++) {
        const v = code[(b * L + l) * F + i] * w[l * F + i];
        if (v > 0) m = Math.min(m, v);
      }
    }
    return m;
  });
  const r = await t.sae.trainStep(s, { x }, cfg, tc);
  const θ = r.metrics.threshold as number[];
  assert(Array.isArray(θ) && θ.length === L, `θ per input, got ${JSON.stringify(θ)}`);
  assertClose(θ, want, { rtol: 1e-6, msg: "θ_l" });
  assert(new Set(want.map((v) => v.toPrecision(6))).size === L, "the inputs' thresholds differ");
  assertEquals(r.metrics.l0, k, "each input keeps k·B entries: mean L0 k");
  // The next step moves each θ_l by the EMA independently.
  const r2 = await t.sae.trainStep(r.state, { x: batch(2) }, cfg, tc);
  const θ2 = r2.metrics.threshold as number[];
  θ2.forEach((v, l) =>
    assert(
      v !== θ[l] && Math.abs(v - θ[l]) < 0.01 * θ[l] + 1e-9,
      `θ_${l} moves by the 0.999 EMA (${θ[l]} → ${v})`,
    )
  );
});

test("decoupled crosscoder: θ-based inference keeps f where f·‖W_dec[l]‖ > θ_l; evaluation counts tokens, not (input, feature) pairs", async () => {
  const p = params(), x = batch(3);
  const { a, w } = await hostView(p, x);
  const θ = [0.2, 0.5, 0.35];
  const code = arch.encodeInference(p, x, cfg, θ);
  assertEquals(code.kind, "inputsDense");
  const f = await toDense(code, F).data();
  let kept = 0;
  const firedTokens = new Float64Array(F);
  let pairs = 0;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < F; i++) {
      let any = false;
      for (let l = 0; l < L; l++) {
        const want = a[b * F + i] * w[l * F + i] > θ[l] ? a[b * F + i] : 0;
        assertEquals(f[(b * L + l) * F + i], want, `code[${b}, ${l}, ${i}]`);
        if (want > 0) [kept, pairs, any] = [kept + 1, pairs + 1, true];
      }
      if (any) firedTokens[i]++;
    }
  }
  assert(kept > 0 && kept < B * L * F, `θ keeps some entries and drops others (${kept})`);
  const m = await evaluateCrosscoder(p, cfg, [{ x }], { threshold: θ });
  assertEquals(
    Array.from(m.fired),
    Array.from(firedTokens),
    "tokens each feature fired on (any input)",
  );
  assert(
    Array.from(m.fired).every((c) => c <= B),
    "no feature fires on more tokens than there are",
  );
  assertClose([m.l0], [pairs / (B * L)], {
    rtol: 1e-6,
    msg: "L0: each input's count, averaged over inputs",
  });
  // One θ for all inputs is accepted (the same value repeated); a per-input θ elsewhere is an error.
  const same = await toDense(arch.encodeInference(p, x, cfg, 0.3), F).data();
  const rep = await toDense(arch.encodeInference(p, x, cfg, [0.3, 0.3, 0.3]), F).data();
  assertEquals(Array.from(same), Array.from(rep));
  const plain = resolveConfig({ arch: "batchtopk-crosscoder", d_in: d, d_sae: F, k, n_inputs: L });
  assertThrows(
    () => ARCHITECTURES[plain.arch].encodeInference(p, x, plain, θ),
    "one threshold",
    "decoupled",
  );
});
