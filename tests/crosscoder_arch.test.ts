// The crosscoder family as architectures: init shapes and DFC zeros, the masked gradients of the
// golden DFC fixtures, the θ-based inference code, shape and config errors, and the model-diffing
// views (relative decoder norms, histogram, exclusive counts, partition usage) on known values.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as t from "../mod.ts";
import type { LossAux } from "../sae/arch/architecture.ts";
import { ARCHITECTURES, CROSSCODER_ARCHS, dfcPartition } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { resolveConfig, type SaeConfigInput } from "../sae/config.ts";
import { codeWeights, flatInput } from "../sae/crosscoder/crosscoder.ts";
import { maskGradients } from "../sae/crosscoder/grad_mask.ts";
import { makePartition, verifyPartitionIntegrity } from "../sae/crosscoder/partition.ts";
import type { SaeParams } from "../sae/params.ts";
import { evaluateCrosscoder } from "../sae/crosscoder/eval.ts";
import {
  exclusiveCounts,
  histogram,
  partitionUsage,
  relativeDecoderNorms,
} from "../sae/crosscoder/diffing.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

test("crosscoders: init gives W_enc [L,d,F], W_dec [L,F,d], b_enc [F], b_dec [L,d]; a DFC's forbidden entries are exactly 0", async () => {
  for (const arch of CROSSCODER_ARCHS) {
    const cfg = resolveConfig({
      arch,
      d_in: 5,
      d_sae: 40,
      k: 3,
      n_inputs: 3,
      dfc_shares: [0.1, 0.2, 0.1],
    });
    const p = ARCHITECTURES[arch].init(t.random.key(1), cfg);
    assertEquals([p.W_enc.shape, p.W_dec.shape, p.b_enc!.shape, p.b_dec.shape], [
      [3, 5, 40],
      [3, 40, 5],
      [40],
      [3, 5],
    ], arch);
    // W_enc[l] is W_dec[l]ᵀ at init; decoder rows have norm 0.1 (L1) or 1 (BatchTopK family) unless forbidden.
    assertClose(await t.transpose(p.W_enc, [0, 2, 1]).data(), await p.W_dec.data(), {
      rtol: 0,
      atol: 0,
    });
    const norms = await t.norm(p.W_dec, -1).data();
    const want = arch === "crosscoder" ? 0.1 : 1;
    const forbidden = arch === "dfc" ? dfcPartition(cfg)! : null;
    const r = forbidden ? await verifyPartitionIntegrity(p, forbidden) : null;
    if (r) assert(r.ok && r.max === 0, JSON.stringify(r));
    const zeros = Array.from(norms).filter((v) => v === 0).length;
    // 3 inputs; each has the other two inputs' exclusive features forbidden: (8 + 4) + (4 + 4) + (4 + 8) = 32.
    assertEquals(zeros, arch === "dfc" ? 32 : 0, `${arch} zero decoder rows`);
    assert(
      Array.from(norms).every((v) => v === 0 || Math.abs(v - want) < 1e-5),
      `${arch} row norms`,
    );
  }
});

const dir = fileURLToPath(new URL("./golden/fixtures/", import.meta.url));
const dfcFixtures = readdirSync(dir).filter((f) => f.startsWith("dfc")).map((f) =>
  JSON.parse(readFileSync(dir + f, "utf8"))
);

test("crosscoders: masked DFC gradients match the PyTorch reference's (f64), forbidden entries exactly 0", () => {
  assert(dfcFixtures.length >= 2, "DFC golden fixtures present");
  for (const fx of dfcFixtures) {
    const cfg = resolveConfig(fx.config as SaeConfigInput);
    const of = (a: { shape: number[]; data: number[] }) =>
      t.tensor(a.data, { dtype: "f64", shape: a.shape });
    const params = Object.fromEntries(
      Object.entries(fx.params).map(([k, a]) => [k, of(a as never)]),
    ) as unknown as SaeParams;
    const ctx = fx.context.dead
      ? {
        dead: t.tensor(fx.context.dead as boolean[], { dtype: "bool" }),
        numDead: fx.context.numDead,
      }
      : {};
    const [, g] = t.valueAndGrad((p: SaeParams) =>
      ARCHITECTURES.dfc.loss(p, { x: of(fx.inputs.x) }, cfg, ctx)[0]
    )(params) as [t.Tensor, SaeParams];
    const m = maskGradients(g, dfcPartition(cfg)!);
    for (const k of ["W_enc", "W_dec", "b_enc", "b_dec"] as const) {
      const want = fx.expected.masked_grads[k].data as number[];
      const got = Array.from(m[k]!.dataSync());
      assertClose(got, want, { rtol: 1e-9, atol: 1e-12, msg: `${fx.case} masked ${k}` });
      got.forEach((v, i) =>
        assert(want[i] !== 0 || v === 0, `${fx.case} ${k}[${i}] must be exactly 0, got ${v}`)
      );
    }
  }
});

test("crosscoders: BatchTopK inference keeps f where f·w > θ; code norms follow their definitions", async () => {
  const cfg = resolveConfig({ arch: "batchtopk-crosscoder", d_in: 3, d_sae: 6, k: 2, n_inputs: 2 });
  const p = ARCHITECTURES[cfg.arch].init(t.random.key(2), cfg);
  const p2 = {
    ...p,
    W_dec: t.mul(p.W_dec, t.reshape(t.tensor([1, 2, 0.5, 1, 3, 1, 1, 1, 2, 1, 1, 1]), [2, 6, 1])),
    b_enc: t.full([6], 0.3),
  };
  const x = t.random.normal(t.random.key(3), [7, 2, 3]);
  const theta = 0.9;
  const code = ARCHITECTURES[cfg.arch].encodeInference(p2, x, cfg, theta);
  const f = await toDense(code, 6).data();
  const pre = await t.relu(
    t.add(t.matmul(flatInput(x, cfg), t.reshape(p2.W_enc, [6, 6])), p2.b_enc!),
  ).data();
  const w = await codeWeights(p2.W_dec, cfg).data();
  let kept = 0;
  for (let i = 0; i < 42; i++) {
    const expect = pre[i] * w[i % 6] > theta ? pre[i] : 0;
    assertClose([f[i]], [expect], { rtol: 1e-6, atol: 1e-7, msg: `entry ${i}` });
    if (expect > 0) kept++;
  }
  assert(kept > 0 && kept < 42, `θ keeps some entries and drops others (${kept})`);
  // Code norms: per-input norms n_l; crosscoder Σ n_l, sae √Σ n_l², mixed 1·sae + 0.1·cc, none 1.
  const nl = await t.norm(p2.W_dec, -1).data();
  const n = (i: number) => [nl[i], nl[6 + i]];
  for (
    const [norm, fn] of [
      ["crosscoder", (a: number[]) => a[0] + a[1]],
      ["decoupled", (a: number[]) => a[0] + a[1]],
      ["sae", (a: number[]) => Math.hypot(a[0], a[1])],
      ["mixed", (a: number[]) => Math.hypot(a[0], a[1]) + 0.1 * (a[0] + a[1])],
      ["none", () => 1],
    ] as const
  ) {
    const c = resolveConfig({
      arch: "crosscoder",
      d_in: 3,
      d_sae: 6,
      n_inputs: 2,
      code_norm: norm,
    });
    assertClose(
      await codeWeights(p2.W_dec, c).data(),
      Array.from({ length: 6 }, (_, i) => fn(n(i))),
      { rtol: 1e-6, msg: norm },
    );
  }
});

test("crosscoders: wrong input shapes and bad configs are errors naming the problem", () => {
  const cfg = resolveConfig({ arch: "dfc", d_in: 4, d_sae: 20, k: 2, n_inputs: 2 });
  const p = ARCHITECTURES.dfc.init(t.random.key(0), cfg);
  assertThrows(() => ARCHITECTURES.dfc.encode(p, t.zeros([5, 8]), cfg), "[batch, 2, 4]", "[5, 8]");
  assertThrows(
    () =>
      ARCHITECTURES.crosscoder.loss(
        p,
        { x: t.zeros([5, 3, 4]) },
        { ...cfg, arch: "crosscoder" },
        {},
      ),
    "[5, 3, 4]",
  );
  assertThrows(
    () => resolveConfig({ arch: "dfc", d_in: 4, d_sae: 20, n_inputs: 2, dfc_shares: [0.6, 0.6] }),
    "dfc_shares",
    "sum to 1.2",
  );
  assertThrows(
    () => resolveConfig({ arch: "dfc", d_in: 4, d_sae: 20, n_inputs: 3, dfc_shares: [0.1, 0.1] }),
    "one share per input (3)",
  );
  assertThrows(
    () => resolveConfig({ arch: "crosscoder", d_in: 4, d_sae: 20, code_norm: "l2" as never }),
    "code_norm must be one of",
  );
  assertThrows(
    () =>
      resolveConfig({ arch: "crosscoder", d_in: 4, d_sae: 20, crosscoder_recon: "abs" as never }),
    "crosscoder_recon",
  );
  assertThrows(
    () => resolveConfig({ arch: "crosscoder", d_in: 4, d_sae: 20, apply_b_dec_to_input: true }),
    "apply_b_dec_to_input",
  );
  assertThrows(
    () => t.sae.resolveTrainConfig(cfg, { optimizer: "constrained_adam" }),
    "plain adam",
  );
  assertThrows(
    () => t.sae.resolveTrainConfig(cfg, { resample_steps: 100 }),
    "resampling is not implemented for dfc",
  );
});

test("model diffing: relative decoder norms, histogram, exclusive counts and partition usage on known values", async () => {
  // 5 features; input A norms [1, 0, 2, 0, 1], input B norms [0, 1, 2, 0, 3].
  const rows = (ns: number[]) => ns.map((n) => [n, 0]);
  const W_dec = t.tensor([rows([1, 0, 2, 0, 1]), rows([0, 1, 2, 0, 3])]);
  const r = await relativeDecoderNorms(W_dec);
  assertClose(r, [0, 1, 0.5, NaN, 0.75]);
  assertEquals(exclusiveCounts(r), { onlyA: 1, onlyB: 1, shared: 2, noDecoder: 1 });
  const h = histogram(r, { bins: 4 });
  assertEquals([h.counts, h.nan, h.outside], [[1, 0, 1, 2], 1, 0]);
  assertEquals(h.edges, [0, 0.25, 0.5, 0.75, 1]);
  assertThrows(() => histogram(r, { bins: 0 }), "bins");
  const p = makePartition(5, [0.2, 0.2]); // A-only {0}, B-only {1}, shared {2, 3, 4}
  const u = partitionUsage(
    p,
    { fired: [10, 0, 5, 0, 5], activation: [4, 0, 2, 0, 2], tokens: 20 },
    r,
  );
  assertEquals(u.map((s) => [s.set, s.features, s.alive]), [["exclusive 0", 1, 1], [
    "exclusive 1",
    1,
    0,
  ], ["shared", 3, 2]]);
  assertClose(u.map((s) => s.meanFrequency), [0.5, 0, 10 / 60]);
  assertClose(u.map((s) => s.activationShare), [0.5, 0, 0.5]);
  assertClose(u.map((s) => s.meanRelativeNorm), [0, 1, 0.625]);
});

test("crosscoder evaluation: perfect reconstruction has FVU 0 per input; L0 and firing counts are the code's", async () => {
  // d = 2, L = 2, F = 4 with W_dec[l] = identity-like rows, W_enc = its transpose: x̂ = x for x ≥ 0 on the right axes.
  const cfg = resolveConfig({ arch: "crosscoder", d_in: 2, d_sae: 4, n_inputs: 2 });
  const W_dec = t.tensor([[[1, 0], [0, 1], [0, 0], [0, 0]], [[0, 0], [0, 0], [1, 0], [0, 1]]]);
  const p: SaeParams = {
    W_enc: t.contiguous(t.transpose(W_dec, [0, 2, 1])),
    W_dec,
    b_enc: t.zeros([4]),
    b_dec: t.zeros([2, 2]),
  };
  const x = t.tensor([[[1, 0], [0, 2]], [[3, 1], [0, 0]], [[0, 0], [1, 1]]]);
  const m = await evaluateCrosscoder(p, cfg, [{ x }]);
  assertClose([m.mse, m.fvu, ...m.fvu_per_input, ...m.mse_per_input], [0, 0, 0, 0, 0, 0], {
    atol: 1e-6,
  });
  assertEquals(Array.from(m.fired), [2, 1, 1, 2]);
  assertClose([m.l0, m.frac_alive, m.dead_features, m.tokens], [2, 1, 0, 3]);
  const [, aux] = ARCHITECTURES.crosscoder.loss(p, { x }, cfg, {}) as [t.Tensor, LossAux];
  assertClose(await aux.recon.data(), [0], { atol: 1e-6 });
});

test("crosscoder training state: b_dec starts at each input's geometric median; k anneals; θ tracks the smallest kept f·w", async () => {
  const cfg = resolveConfig({
    arch: "batchtopk-crosscoder",
    d_in: 4,
    d_sae: 16,
    k: 2,
    n_inputs: 3,
  });
  const tc = t.sae.resolveTrainConfig(cfg, {
    steps: 10,
    batch_size: 32,
    k_start: 6,
    k_anneal_steps: 4,
    threshold_start_step: 0,
    normalize_activations: false,
  });
  const batch = (i: number) => ({
    x: t.add(
      t.random.normal(t.random.key(10 + i), [32, 3, 4]),
      t.reshape(t.tensor([0, 0, 0, 0, 5, 5, 5, 5, -3, 1, 0, 2]), [3, 4]),
    ),
  });
  let s = await t.sae.initTrainState(t.random.key(0), cfg, tc, [batch(0)]);
  assertEquals(s.params.b_dec.shape, [3, 4]);
  const x0 = batch(0).x;
  for (let l = 0; l < 3; l++) {
    const xl = t.contiguous(t.reshape(t.sliceAxis(x0, 1, l, l + 1), [32, 4]));
    const med = await t.sae.geometricMedian(xl);
    assertClose(
      await t.reshape(t.sliceAxis(s.params.b_dec, 0, l, l + 1), [4]).data(),
      await med.data(),
      { rtol: 1e-5, atol: 1e-6, msg: `input ${l}` },
    );
  }
  const ks: number[] = [], l0s: number[] = [];
  for (let i = 0; i < 6; i++) {
    const b = batch(i + 1);
    const r = await t.sae.trainStep(s, b, cfg, tc);
    // θ after the first step is exactly the batch's smallest kept f·w (DL: the first update copies).
    if (i === 0) {
      const code = ARCHITECTURES[cfg.arch].encode(s.params, b.x, { ...cfg, k: 6 });
      const coo = (code as { coo: t.Coo }).coo;
      const sv = t.mul(coo.values, t.take(codeWeights(s.params.W_dec, cfg), coo.cols, 0));
      assertClose([r.metrics.threshold as number], [
        await t.min(t.where(t.gt(sv, 0), sv, Infinity)).item(),
      ], { rtol: 1e-6 });
    }
    ks.push(r.metrics.k);
    l0s.push(r.metrics.l0);
    t.disposeReplaced(t.sae.stateTensors(s), t.sae.stateTensors(r.state));
    s = r.state;
  }
  assertEquals(ks, [6, 5, 4, 3, 2, 2]);
  assertEquals(l0s, ks, "BatchTopK keeps k·B entries: mean L0 = k");
});
