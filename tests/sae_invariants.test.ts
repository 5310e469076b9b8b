// Invariants of SAE codes and of the training step (sae/train/step.ts), each checked against values
// computed here independently: code sparsity patterns, the unit-norm decoder constraint,
// resampling, dead-feature counters, the BatchTopK threshold, k annealing, sparsity warmup, the
// learning-rate schedule, folding the activation scale into saved weights, and memory.
import * as t from "../mod.ts";
import type { Batch } from "../sae/arch/architecture.ts";
import { ARCHITECTURES } from "../sae/arch/registry.ts";
import { asCoo, type Code, toDense } from "../sae/code.ts";
import {
  type ArchName,
  resolveConfig,
  type SaeConfig,
  type SaeConfigInput,
} from "../sae/config.ts";
import { initParams, type SaeParams } from "../sae/params.ts";
import {
  foldScale,
  initTrainState,
  stateTensors,
  type StepMetrics,
  type TrainState,
  trainStep,
} from "../sae/train/step.ts";
import {
  resolveTrainConfig,
  type TrainConfig,
  type TrainConfigInput,
} from "../sae/train/config.ts";
import type { AdamState } from "../autodiff/optim.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

// ---- helpers -----------------------------------------------------------------------------------

const arr = async (x: t.Tensor): Promise<number[]> => Array.from(await x.data());

/** A [rows, cols] host matrix from a tensor. */
async function mat(x: t.Tensor): Promise<number[][]> {
  const v = await arr(x);
  const [r, c] = x.shape;
  return Array.from({ length: r }, (_, i) => v.slice(i * c, (i + 1) * c));
}

/** A copy of a 1-D tensor with some entries replaced. */
async function withEntries(x: t.Tensor, idx: number[], value: number): Promise<t.Tensor> {
  const v = Float32Array.from(await x.data());
  for (const i of idx) v[i] = value;
  return t.tensor(v);
}

/** Replace state.params.b_enc (training would never do this; it forces features on or off). */
async function setBEnc(s: TrainState, idx: number[], value: number): Promise<void> {
  const old = s.params.b_enc!;
  s.params = { ...s.params, b_enc: await withEntries(old, idx, value) };
  old.dispose();
}

/** (x − b_dec)·W_enc + b_enc on the host, in f64. */
async function hostPre(p: SaeParams, x: t.Tensor, applyBDec = true): Promise<number[][]> {
  const [X, W, be, bd] = [
    await mat(x),
    await mat(p.W_enc),
    await arr(p.b_enc!),
    await arr(p.b_dec),
  ];
  return X.map((row) =>
    be.map((b, j) => {
      let s = b;
      for (let i = 0; i < row.length; i++) s += (row[i] - (applyBDec ? bd[i] : 0)) * W[i][j];
      return s;
    })
  );
}

/** COO entries of a sparse code as host arrays. */
async function entries(code: Code): Promise<{ rows: number[]; cols: number[]; values: number[] }> {
  const c = asCoo(code)!;
  return { rows: await arr(c.rows), cols: await arr(c.cols), values: await arr(c.values) };
}

const countPerRow = (rows: number[], B: number, keep: (i: number) => boolean = () => true) => {
  const n = new Array<number>(B).fill(0);
  rows.forEach((r, i) => keep(i) && n[r]++);
  return n;
};

const D = 8, F = 16, B = 32;
const dataKey = t.random.key(7);

/** A batch for `cfg`: Gaussian x (times `scale`), y = x·M for transcoders, [B, 3, d] for MLSAE. */
function batchFor(cfg: SaeConfig, i: number, rows = B, scale = 1): Batch {
  const k = t.random.foldIn(dataKey, i);
  if (cfg.arch === "mlsae") return { x: t.random.normal(k, [rows, 3, cfg.d_in], { std: scale }) };
  const x = t.random.normal(k, [rows, cfg.d_in], { std: scale });
  if (cfg.arch !== "transcoder") return { x };
  const M = t.tidy(() =>
    t.random.normal(t.random.key(99), [cfg.d_in, cfg.d_out], { std: 3 / Math.sqrt(cfg.d_in) })
  );
  const y = t.matmul(x, M);
  M.dispose();
  return { x, y };
}

const cfgFor = (arch: ArchName, over: Partial<SaeConfigInput> = {}): SaeConfig =>
  resolveConfig({
    arch,
    d_in: D,
    d_sae: F,
    ...(arch === "transcoder" ? { d_out: 6 } : {}),
    ...(["topk", "batchtopk", "matryoshka", "transcoder", "mlsae"].includes(arch) ? { k: 3 } : {}),
    ...over,
  });

/** Training config with lr > 0 from step 0 and no decay, unless asked otherwise. */
const trainFor = (cfg: SaeConfig, over: TrainConfigInput = {}): TrainConfig =>
  resolveTrainConfig(cfg, {
    steps: 100,
    batch_size: B,
    lr: 1e-3,
    warmup_steps: 0,
    decay_start: null,
    sparsity_warmup_steps: 0,
    ...over,
  });

/** The batch as the model sees it during training (trainStep divides by the scales). */
function scaledBatch(b: Batch, s: TrainState): Batch {
  return { x: t.div(b.x, s.scale), ...(b.y ? { y: t.div(b.y, s.scaleOut) } : {}) };
}

/** Run `steps` training steps; `before(step, state)` may edit the state, `after` sees the result. */
async function train(
  cfg: SaeConfig,
  tc: TrainConfig,
  steps: number,
  hooks: {
    before?: (step: number, s: TrainState, batch: Batch) => void | Promise<void>;
    after?: (
      step: number,
      s: TrainState,
      m: StepMetrics,
      batch: Batch,
      prev: TrainState,
    ) => void | Promise<void>;
    batchScale?: number;
  } = {},
): Promise<TrainState> {
  let s = await initTrainState(t.random.key(tc.seed), cfg, tc, [
    batchFor(cfg, 0, B, hooks.batchScale),
  ]);
  for (let i = 0; i < steps; i++) {
    const batch = batchFor(cfg, i + 1, B, hooks.batchScale);
    await hooks.before?.(i, s, batch);
    const { state, metrics } = await trainStep(s, batch, cfg, tc);
    await hooks.after?.(i, state, metrics, batch, s);
    t.disposeReplaced([stateTensors(s), batch], stateTensors(state));
    s = state;
  }
  return s;
}

/** The Adam state inside a TrainState's optimizer state (a chain when gradients are clipped). */
const adamOf = (opt: unknown): AdamState =>
  (Array.isArray(opt)
    ? opt.find((o) => o && typeof o === "object" && "mu" in o)
    : opt) as AdamState;

// ---- codes -------------------------------------------------------------------------------------

test("TopK codes: exactly k entries per row, at most k non-zeros, exactly k when k pre-activations are positive", async () => {
  const cfg = resolveConfig({ arch: "topk", d_in: D, d_sae: 24, k: 5 });
  const p0 = initParams(t.random.key(1), cfg);
  const x = t.random.normal(t.random.key(2), [B, D]);
  const check = async (bEnc: number[], wantNonZero: (row: number) => number | null) => {
    const p = { ...p0, b_enc: t.tensor(bEnc) };
    const code = ARCHITECTURES.topk.encode(p, x, cfg);
    const e = await entries(code);
    assertEquals(e.values.length, B * cfg.k, "entries");
    assertEquals(countPerRow(e.rows, B), new Array(B).fill(cfg.k), "entries per row");
    const nz = countPerRow(e.rows, B, (i) => e.values[i] > 0);
    assert(e.values.every((v) => v >= 0), "values are ReLU'd");
    // The kept entries are the k largest pre-activations of their row (host reference).
    const pre = await hostPre(p, x);
    for (let r = 0; r < B; r++) {
      const want = nz[r] <= cfg.k ? wantNonZero(r) : null;
      if (want !== null) assertEquals(nz[r], want, `non-zeros in row ${r}`);
      assert(nz[r] <= cfg.k, `row ${r} has ${nz[r]} non-zeros`);
      const kept = e.cols.filter((_, i) => e.rows[i] === r);
      const order = pre[r].map((v, j) => [v, j]).sort((a, b) => b[0] - a[0]).slice(0, cfg.k).map((
        [, j],
      ) => j);
      assertEquals(
        [...kept].sort((a, b) => a - b),
        [...order].sort((a, b) => a - b),
        `row ${r} keeps its top k`,
      );
      const vals = e.values.filter((_, i) => e.rows[i] === r);
      assertClose(vals, kept.map((j) => Math.max(pre[r][j], 0)), {
        rtol: 1e-4,
        atol: 1e-5,
        msg: `row ${r} values`,
      });
    }
  };
  // Every pre-activation positive: exactly k non-zeros per row.
  await check(new Array(24).fill(10), () => 5);
  // Only features 0 and 1 can be positive: still k entries per row, but 2 non-zeros.
  await check(Array.from({ length: 24 }, (_, j) => (j < 2 ? 10 : -10)), () => 2);
  // Mixed signs: counts vary by row but never exceed k (checked inside).
  await check(new Array(24).fill(0), () => null);
});

for (const arch of ["batchtopk", "matryoshka"] as const) {
  test(`${arch} codes: exactly k·B entries per batch, per-row counts vary, the batch's largest are kept`, async () => {
    const cfg = resolveConfig({
      arch,
      d_in: D,
      d_sae: F,
      k: 3,
      ...(arch === "matryoshka" ? { matryoshka_groups: [4, 12] } : {}),
    });
    const p = initParams(t.random.key(3), cfg);
    // Rows of growing norm: large rows should take more than their share of the k·B entries.
    const x = t.mul(
      t.random.normal(t.random.key(4), [B, D]),
      t.reshape(t.arange(1, B + 1), [B, 1]),
    );
    const pre = await hostPre(p, x);
    const flat = pre.flat().sort((a, b) => b - a);
    const cut = flat[cfg.k * B - 1];
    for (const which of ["encode", "loss"] as const) {
      const code = which === "encode"
        ? ARCHITECTURES[arch].encode(p, x, cfg)
        : ARCHITECTURES[arch].loss(p, { x }, cfg, {})[1].code;
      const e = await entries(code);
      assertEquals(e.values.length, cfg.k * B, `${which}: entries`);
      const perRow = countPerRow(e.rows, B);
      assert(new Set(perRow).size > 1, `${which}: per-row counts should vary, got ${perRow}`);
      assertEquals(perRow.reduce((a, b) => a + b, 0), cfg.k * B);
      // Kept entries are exactly those at or above the (k·B)-th largest pre-activation.
      e.rows.forEach((r, i) =>
        assert(pre[r][e.cols[i]] >= cut - 1e-4, `${which}: kept entry below the cut`)
      );
      const keptSet = new Set(e.rows.map((r, i) => r * F + e.cols[i]));
      assertEquals(keptSet.size, cfg.k * B, `${which}: entries are distinct`);
      let above = 0;
      pre.forEach((row, r) =>
        row.forEach((v, j) =>
          v > cut + 1e-4 &&
          (above++,
            assert(keptSet.has(r * F + j), `${which}: (${r}, ${j}) above the cut was dropped`))
        )
      );
      assert(above > 0);
    }
  });
}

// ---- constrained Adam --------------------------------------------------------------------------

const ALL: ArchName[] = [
  "relu",
  "gated",
  "topk",
  "batchtopk",
  "jumprelu",
  "matryoshka",
  "transcoder",
  "mlsae",
];

test("constrained_adam keeps every decoder row at unit norm after each step, for every architecture", async () => {
  for (const arch of ALL) {
    const cfg = cfgFor(arch);
    const tc = trainFor(cfg, { optimizer: "constrained_adam", lr: 1e-2 });
    await train(cfg, tc, 3, {
      after: async (step, s) => {
        const norms = await arr(t.norm(s.params.W_dec, -1));
        assertClose(norms, new Array(F).fill(1), {
          rtol: 0,
          atol: 1e-5,
          msg: `${arch} step ${step} decoder norms`,
        });
      },
    });
  }
});

test("plain adam leaves decoder norms free", async () => {
  for (const arch of ["relu", "topk"] as const) {
    const cfg = cfgFor(arch);
    const tc = trainFor(cfg, { optimizer: "adam", lr: 1e-2 });
    const s = await train(cfg, tc, 3);
    const norms = await arr(t.norm(s.params.W_dec, -1));
    // ReLU starts at norm 0.1 (DL's init); TopK at 1 and drifts.
    const off = Math.max(...norms.map((n) => Math.abs(n - 1)));
    assert(
      off > (arch === "relu" ? 0.5 : 1e-4),
      `${arch}: decoder norms stayed at 1 (max |‖w‖ − 1| = ${off})`,
    );
  }
});

// ---- resampling --------------------------------------------------------------------------------

for (const clip of [null, 1]) {
  test(`resampling${clip ? " (clipped: Adam inside a chain)" : ""}: dead features get unit input directions, scaled encoder columns, b_enc 0, zeroed Adam moments`, async () => {
    const cfg = cfgFor("relu", { l1_coefficient: 0.01 });
    // resample_steps 4: resample at step 3, for features silent for ≥ 2 steps (2·B tokens). dead_tokens
    // is B, smaller than that window: the counters must still reach the window.
    const tc = trainFor(cfg, {
      resample_steps: 4,
      dead_tokens: B,
      geometric_median_init: false,
      grad_clip: clip,
    });
    const A = [1, 5, 9, 13]; // fire at step 0, silenced from step 1: dead for the resampler at step 3
    const C = [2, 6]; // silenced at step 3 only: dead by dead_tokens, not for the resampler
    let lastX: t.Tensor | null = null;
    const resampled: (number | undefined)[] = [];
    const s = await train(cfg, tc, 4, {
      before: async (step, st, batch) => {
        if (step === 0) {
          assertEquals(
            Array.isArray(st.opt),
            clip !== null,
            "optimizer state: a chain when clipping",
          );
        }
        if (step === 1) await setBEnc(st, A, -10);
        if (step === 3) {
          await setBEnc(st, C, -10);
          // Their moments are non-zero before resampling, so zeroing them is observable.
          const nu = await arr((adamOf(st.opt).nu as SaeParams).b_enc!);
          assert(A.every((j) => nu[j] > 0), "moments of A should be non-zero before resampling");
          lastX = t.keep(t.add(batch.x, 0));
        }
      },
      after: (_step, _s, m) => void resampled.push(m.resampled),
    });
    assertEquals(resampled, [undefined, undefined, undefined, 4], "metrics.resampled");
    const bEnc = await arr(s.params.b_enc!);
    A.forEach((j) => assertEquals(bEnc[j], 0, `b_enc[${j}]`));
    C.forEach((j) => assert(bEnc[j] < -9, `b_enc[${j}] should be untouched, got ${bEnc[j]}`));

    const since = await arr(s.sinceFired);
    A.forEach((j) => assertEquals(since[j], 0, `sinceFired[${j}] after resampling`));
    C.forEach((j) => assertEquals(since[j], B, `sinceFired[${j}]`));
    assertEquals(
      s.numDead,
      since.filter((v) => v >= tc.dead_tokens).length,
      "numDead counts features past dead_tokens",
    );
    assertEquals(s.numDead, C.length);

    // Adam moments of the resampled entries are exactly zero; others are not.
    const { mu, nu } = adamOf(s.opt) as { mu: SaeParams; nu: SaeParams };
    for (const [name, m] of [["mu", mu], ["nu", nu]] as const) {
      const We = await mat(m.W_enc), Wd = await mat(m.W_dec), be = await arr(m.b_enc!);
      for (const j of A) {
        assert(We.every((row) => row[j] === 0), `${name}.W_enc[:, ${j}]`);
        assert(Wd[j].every((v) => v === 0), `${name}.W_dec[${j}]`);
        assertEquals(be[j], 0, `${name}.b_enc[${j}]`);
      }
      assert(be[0] !== 0 && Wd[0].some((v) => v !== 0), `${name}: untouched moments are non-zero`);
    }

    // Decoder rows: unit-norm copies of distinct rows of the step's batch; encoder columns: the same
    // row (in training units) × 0.2 × the mean norm of the other encoder columns.
    const X = await mat(lastX!);
    const Wd = await mat(s.params.W_dec), We = await mat(s.params.W_enc);
    const colNorm = (j: number) => Math.hypot(...We.map((row) => row[j]));
    const alive = Array.from({ length: F }, (_, j) => j).filter((j) => !A.includes(j));
    const aliveNorm = alive.reduce((a, j) => a + colNorm(j), 0) / alive.length;
    const used = new Set<number>();
    for (const j of A) {
      const unit = X.map((row) => row.map((v) => v / Math.hypot(...row)));
      let best = -1, bestCos = -2;
      unit.forEach((u, r) => {
        const c = u.reduce((a, v, i) => a + v * Wd[j][i], 0);
        if (c > bestCos) [best, bestCos] = [r, c];
      });
      assertClose(Wd[j], unit[best], {
        rtol: 0,
        atol: 1e-5,
        msg: `W_dec[${j}] is input row ${best}'s direction`,
      });
      assert(!used.has(best), `input row ${best} used twice`);
      used.add(best);
      const expectCol = X[best].map((v) => (v / s.scale) * 0.2 * aliveNorm);
      assertClose(We.map((row) => row[j]), expectCol, {
        rtol: 1e-4,
        atol: 1e-6,
        msg: `W_enc[:, ${j}]`,
      });
    }
    (lastX as t.Tensor | null)?.dispose();
  });
}

// ---- dead-feature tracking ---------------------------------------------------------------------

test("dead tracking: sinceFired counts tokens, resets on firing, clamps at dead_tokens; AuxK only with dead features", async () => {
  const cfg = cfgFor("topk");
  const dead = 3 * B;
  const tc = trainFor(cfg, { dead_tokens: dead });
  const expect = new Array<number>(F).fill(0);
  let prevDead = 0;
  const auxkSeen: boolean[] = [];
  await train(cfg, tc, 8, {
    before: async (step, s) => {
      if (step === 0) await setBEnc(s, [0, 7], -100); // never in the top k
      if (step === 4) await setBEnc(s, [0], 100); // always in the top k from now on
    },
    after: async (step, s, m, batch, prev) => {
      // Which features fired: the same code, computed from the pre-step params.
      const sb = scaledBatch(batch, prev);
      const e = await entries(ARCHITECTURES.topk.encode(prev.params, sb.x, cfg));
      const fired = new Set(e.cols.filter((_, i) => e.values[i] > 0));
      for (let j = 0; j < F; j++) expect[j] = fired.has(j) ? 0 : Math.min(expect[j] + B, dead);
      assertEquals(await arr(s.sinceFired), expect, `sinceFired after step ${step}`);
      const numDead = expect.filter((v) => v >= dead).length;
      assertEquals(s.numDead, numDead, `numDead after step ${step}`);
      assertEquals(m.deadFraction, numDead / F, "deadFraction");
      // AuxK runs when the state entering the step had dead features.
      assertEquals("auxk" in m, prevDead > 0, `auxk in the metrics of step ${step}`);
      auxkSeen.push("auxk" in m);
      prevDead = numDead;
      if (step >= 3) assertEquals(expect[7], dead, "feature 7 stays clamped at dead_tokens"); // the scenario clamps
      if (step === 4) assertEquals(expect[0], 0, "feature 0 fired and reset");
    },
  });
  assert(auxkSeen.includes(true) && auxkSeen.includes(false), `auxk presence ${auxkSeen}`);
});

// ---- BatchTopK threshold -----------------------------------------------------------------------

for (const mode of ["dl", "saelens"] as const) {
  for (const arch of ["batchtopk", "matryoshka"] as const) {
    test(`${arch} threshold (${mode}): follows the min positive activation by the documented EMA`, async () => {
      const cfg = cfgFor(arch, arch === "matryoshka" ? { matryoshka_groups: [4, 12] } : {});
      const start = 3;
      const tc = trainFor(cfg, { threshold_ema: mode, threshold_start_step: start });
      let theta = mode === "dl" ? -1 : 0;
      const seen: number[] = [];
      const s = await train(cfg, tc, 7, {
        after: async (step, _s, m, batch, prev) => {
          const e = await entries(
            ARCHITECTURES[arch].encode(prev.params, scaledBatch(batch, prev).x, cfg),
          );
          const minPos = Math.min(...e.values.filter((v) => v > 0));
          if (mode === "saelens") theta = 0.99 * theta + 0.01 * minPos;
          else if (step >= start) theta = theta < 0 ? minPos : 0.999 * theta + 0.001 * minPos;
          assertClose([m.threshold as number], [theta], {
            rtol: 1e-6,
            atol: 0,
            msg: `θ after step ${step}`,
          });
          seen.push(m.threshold as number);
        },
      });
      if (mode === "dl") {
        assertEquals(seen.slice(0, start), [-1, -1, -1], "θ before threshold_start_step");
        assert(seen[start] > 0, "the first update copies m");
      } else assert(seen[0] > 0 && seen[0] < seen[1], `saelens θ rises from 0: ${seen}`);
      assertEquals(s.threshold, seen[seen.length - 1], "state.threshold");
    });
  }
}

// ---- schedules ---------------------------------------------------------------------------------

test("k annealing: metrics.k and the code's L0 go from k_start to k linearly over k_anneal_steps", async () => {
  const cfg = cfgFor("topk", { k: 2 });
  const tc = trainFor(cfg, { k_start: 8, k_anneal_steps: 6 });
  const ks: number[] = [], l0s: number[] = [];
  await train(cfg, tc, 9, {
    before: async (step, s) => {
      if (step === 0) await setBEnc(s, Array.from({ length: F }, (_, j) => j), 10); // all positive: L0 = k
    },
    after: (_step, _s, m) => void (ks.push(m.k), l0s.push(m.l0)),
  });
  // round(8 + (2 − 8)·min(step/6, 1))
  assertEquals(ks, [8, 7, 6, 5, 4, 3, 2, 2, 2], "metrics.k");
  assertEquals(l0s, ks, "L0 of the training code");
});

test("sparsity warmup: loss = recon + λ·min(step/warmup, 1)·sparsity (+ gated aux)", async () => {
  for (const arch of ["relu", "gated", "jumprelu"] as const) {
    const lambda = 0.3, warm = 4;
    const cfg = cfgFor(arch, { l1_coefficient: lambda });
    const tc = trainFor(cfg, { sparsity_warmup_steps: warm });
    await train(cfg, tc, 7, {
      after: (step, _s, m) => {
        const want = m.recon + lambda * Math.min(step / warm, 1) * m.sparsity! + (m.gatedAux ?? 0);
        assertClose([m.loss], [want], {
          rtol: 1e-5,
          atol: 1e-7,
          msg: `${arch} loss at step ${step}`,
        });
        if (step === 0) {
          assertEquals(m.loss, m.recon + (m.gatedAux ?? 0), `${arch}: no sparsity at step 0`);
        }
        assert(m.sparsity! > 0, "a sparsity term to scale");
      },
    });
  }
});

test("learning rate: warmup to the peak, constant, linear decay to 0 (steps 20, warmup 4, decay from 16)", async () => {
  const cfg = cfgFor("relu");
  const peak = 1e-2;
  const tc = trainFor(cfg, {
    steps: 20,
    lr: peak,
    warmup_steps: 4,
    decay_start: 16,
    optimizer: "adam",
  });
  const lrs: number[] = [];
  let unchanged = false, moved = false, before: number[] = [];
  await train(cfg, tc, 20, {
    after: async (step, s, m) => {
      lrs.push(m.lr);
      // The optimizer uses the same schedule: lr 0 at step 0 leaves the parameters as they were.
      const same = (await arr(s.params.W_enc)).every((v, i) => v === before[i]);
      if (step === 0) unchanged = same;
      if (step === 1) moved = !same;
    },
    before: async (_step, s) => void (before = await arr(s.params.W_enc)),
  });
  const expected = Array.from(
    { length: 20 },
    (_, s) => peak * Math.min(s / 4, 1) * (s >= 16 ? (20 - s) / 4 : 1),
  );
  assertClose(lrs, expected, { rtol: 1e-12, atol: 0, msg: "metrics.lr" });
  assert(unchanged, "the step with lr 0 must leave the parameters unchanged");
  assert(moved, "the step with lr > 0 must move them");
});

// ---- normalisation folded into the weights -----------------------------------------------------

test("activation normalisation: folded weights on raw inputs = unfolded model on scaled inputs × scale", async () => {
  for (
    const arch of [
      "relu",
      "gated",
      "topk",
      "batchtopk",
      "jumprelu",
      "matryoshka",
      "transcoder",
    ] as const
  ) {
    const cfg = cfgFor(arch, arch === "matryoshka" ? { matryoshka_groups: [4, 12] } : {});
    const tc = trainFor(cfg, { normalize_activations: true, lr: 1e-2 });
    const s = await train(cfg, tc, 3, { batchScale: 7 });
    assert(Math.abs(s.scale - 1) > 1, `${arch}: scale ${s.scale} should be far from 1`);
    if (arch === "transcoder") {
      assert(
        Math.abs(s.scaleOut / s.scale - 1) > 0.1,
        `transcoder: scaleOut ${s.scaleOut} vs scale ${s.scale}`,
      );
    }
    const folded = foldScale(s.params, s.scale, s.scaleOut);
    const a = ARCHITECTURES[arch];
    const raw = batchFor(cfg, 1000, B, 7);
    const codeRaw = a.encode(folded, raw.x, cfg);
    const codeScaled = a.encode(s.params, t.div(raw.x, s.scale), cfg);
    assertClose(await arr(toDense(codeRaw, F)), await arr(toDense(codeScaled, F)), {
      rtol: 1e-4,
      atol: 1e-5,
      msg: `${arch} codes`,
    });
    const out = await arr(a.decode(folded, codeRaw, cfg));
    const ref = await arr(t.mul(a.decode(s.params, codeScaled, cfg), s.scaleOut));
    assertClose(out, ref, { rtol: 1e-4, atol: 1e-4 * s.scaleOut, msg: `${arch} reconstruction` });
  }
  // MLSAE standardises per token instead.
  const ml = cfgFor("mlsae");
  const s = await initTrainState(t.random.key(0), ml, trainFor(ml), [batchFor(ml, 0, B, 7)]);
  assertEquals([s.scale, s.scaleOut], [1, 1], "mlsae scales");
});

// ---- memory ------------------------------------------------------------------------------------

test("memory: live buffers stay flat over 50 trainStep calls when replaced state is disposed", async () => {
  const cases: [ArchName, TrainConfigInput][] = [
    ["topk", { dead_tokens: 2 * B }], // AuxK path once features die
    ["batchtopk", {}],
    ["relu", { resample_steps: 6, ghost_grads: true, dead_tokens: 2 * B }], // ghost grads + resampling
  ];
  for (const [arch, over] of cases) {
    const cfg = cfgFor(arch);
    const tc = trainFor(cfg, over);
    const counts: number[] = [];
    const s = await train(cfg, tc, 50, {
      before: async (step, st) => {
        if (step === 0) await setBEnc(st, [0, 1, 2], -100); // dead features from the start
      },
      after: (step) => void (step >= 5 && counts.push(t.memoryStats().liveBuffers)),
    });
    assertEquals(
      new Set(counts).size,
      1,
      `${arch}: live buffers ${[...new Set(counts)].join(", ")}`,
    );
    t.dispose(stateTensors(s));
  }
});
