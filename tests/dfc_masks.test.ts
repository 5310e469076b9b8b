// DFC gradient masks (sae/crosscoder/grad_mask.ts) on random F, shares, d, L, k, batch and data: every
// forbidden gradient entry is exactly zero for each loss term separately (reconstruction, AuxK;
// the L1 crosscoder's sparsity term too) and for the total, allowed entries are left untouched;
// after N random Adam steps of the real training step the forbidden weights and both Adam moments
// are exactly 0. The checkers catch a mask with one entry left out (testing the test).
import fc from "fast-check";
import * as t from "../mod.ts";
import type { LossAux, LossContext } from "../sae/arch/architecture.ts";
import { architecture, dfcPartition } from "../sae/arch/registry.ts";
import type { SaeConfig } from "../sae/config.ts";
import {
  forbiddenSpans,
  maskGradients,
  maskMoments,
  partitionMasks,
} from "../sae/crosscoder/grad_mask.ts";
import { makePartition } from "../sae/crosscoder/partition.ts";
import { fusedZeroSpans } from "../tensor/fused.ts";
import { native, setNativeKernels } from "../tensor/cpu/native.ts";
import { resolveConfig } from "../sae/config.ts";
import type { SaeParams } from "../sae/params.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import {
  assertGradMask,
  assertMaskedZero,
  assertMomentsMasked,
  assertPartitionIntact,
  dfcConfigArb,
  paramsArb,
  saeConfigArb,
  TestFailure,
} from "../testing/mod.ts";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";

type Term = "total" | "recon" | "auxk" | "sparsity";

/** One loss term as a function of the parameters (AuxK present: the context marks dead features). */
function termFn(cfg: SaeConfig, x: t.Tensor, ctx: LossContext, term: Term) {
  const arch = architecture(cfg.arch);
  return (p: SaeParams) => {
    const [total, aux] = arch.loss(p, { x }, cfg, ctx) as [t.Tensor, LossAux];
    return term === "total" ? total : (aux[term] as t.Tensor);
  };
}

/** Dead-feature context with a drawn dead set (at least one feature dead, so AuxK is on). */
function deadContext(F: number, deadBits: number[]): LossContext {
  const dead = Array.from({ length: F }, (_, i) => deadBits[i % deadBits.length] === 1 || i === 0);
  return { dead: t.tensor(dead), numDead: dead.filter(Boolean).length };
}

const caseArb = (cfgArb: fc.Arbitrary<SaeConfig>) =>
  cfgArb.chain((cfg) =>
    fc.record({
      cfg: fc.constant(cfg),
      params: paramsArb(cfg),
      batch: fc.integer({ min: 1, max: 48 }),
      dataSeed: fc.integer({ min: 0, max: 1e6 }),
      deadBits: fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 1, maxLength: 7 }),
    })
  );

const leakyTerms = { recon: 0, auxk: 0, total: 0 };
/** A case whose raw gradients are non-zero on forbidden entries for every term (k·B = 144 picks of 20 features), so the property never passes vacuously. */
function knownLeaky() {
  const cfg = resolveConfig({
    arch: "dfc",
    d_in: 4,
    d_sae: 20,
    k: 3,
    n_inputs: 2,
    dfc_shares: [0.2, 0.2],
  });
  return {
    cfg,
    params: architecture("dfc").init(t.random.key(3), cfg),
    batch: 48,
    dataSeed: 4,
    deadBits: [0, 1],
  };
}
test("dfc masks: forbidden gradient entries are exactly zero for each loss term and the total; allowed ones unchanged", async () => {
  await fc.assert(
    fc.asyncProperty(
      caseArb(dfcConfigArb()),
      async ({ cfg, params, batch, dataSeed, deadBits }) => {
        const p = dfcPartition(cfg)!;
        await assertPartitionIntact(params, p); // the arbitrary's own promise
        const x = t.random.normal(t.random.key(dataSeed), [batch, cfg.n_inputs!, cfg.d_in]);
        const ctx = deadContext(cfg.d_sae, deadBits);
        for (const term of ["recon", "auxk", "total"] as const) {
          const fn = termFn(cfg, x, ctx, term);
          const { grads } = await assertGradMask(fn, params, p, {
            transform: (g) => maskGradients(g, p),
            what: `${term} gradient`,
          });
          // Masking touches only forbidden entries: the rest equals the raw gradient bit for bit.
          const [, raw] = t.valueAndGrad(fn)(params) as [t.Tensor, SaeParams];
          // Count cases where masking mattered (the raw gradient had forbidden non-zeros).
          if (await assertMaskedZero(raw, p).then(() => false, () => true)) leakyTerms[term]++;
          const m = partitionMasks(p);
          for (const [k, mk] of [["W_enc", m.enc], ["W_dec", m.dec]] as const) {
            const keep = t.where(mk, 0, raw[k]);
            assertEquals(
              Array.from(await grads[k].data()),
              Array.from(await keep.data()),
              `${term} ${k} allowed entries`,
            );
          }
          for (const k of ["b_enc", "b_dec"] as const) {
            assertEquals(
              Array.from(await grads[k]!.data()),
              Array.from(await raw[k]!.data()),
              `${term} ${k} not masked`,
            );
          }
          t.dispose([grads, raw, m]);
        }
        t.dispose([params, x, ctx.dead]);
      },
    ),
    { numRuns: 25, examples: [[knownLeaky()]] },
  );
  console.log(
    `dfc masks: of 26 cases, raw gradients had forbidden non-zeros in ${
      JSON.stringify(leakyTerms)
    }`,
  );
  for (const term of ["recon", "auxk", "total"] as const) {
    assert(
      leakyTerms[term] > 0,
      `some cases gave ${term} raw forbidden gradients: ${JSON.stringify(leakyTerms)}`,
    );
  }
});

test("dfc masks: the L1 crosscoder's reconstruction and sparsity terms are masked exactly too (NaN from zero decoder rows included)", async () => {
  const cfgs = saeConfigArb("crosscoder").map((c) => ({ ...c, dfc_shares: c.dfc_shares }));
  await fc.assert(
    fc.asyncProperty(caseArb(cfgs), async ({ cfg, params, batch, dataSeed }) => {
      const p = makePartition(cfg.d_sae, cfg.dfc_shares!);
      const zeroed = maskGradients(params, p); // forbidden rows are 0: ‖·‖' there is 0/0
      const x = t.random.normal(t.random.key(dataSeed), [batch, cfg.n_inputs!, cfg.d_in]);
      for (const term of ["recon", "sparsity", "total"] as const) {
        const { grads } = await assertGradMask(termFn(cfg, x, {}, term), zeroed, p, {
          transform: (g) => maskGradients(g, p),
        });
        t.dispose(grads);
      }
      t.dispose([params, zeroed, x]);
    }),
    { numRuns: 15 },
  );
});

let runsWithAuxk = 0;
test("dfc masks: after N random Adam steps of the training step, forbidden weights and Adam moments are exactly 0", async () => {
  const arb = dfcConfigArb({ maxFeatures: 32 }).chain((cfg) =>
    fc.record({
      cfg: fc.constant(cfg),
      steps: fc.integer({ min: 1, max: 6 }),
      batch: fc.integer({ min: 2, max: 16 }),
      seed: fc.integer({ min: 0, max: 1e6 }),
      lr: fc.double({ min: 1e-4, max: 0.1, noNaN: true }),
    })
  );
  await fc.assert(
    fc.asyncProperty(arb, async ({ cfg, steps, batch, seed, lr }) => {
      const p = dfcPartition(cfg)!;
      // dead_tokens 1 makes every non-firing feature dead from step 1, so AuxK contributes.
      const tc = resolveTrainConfig(cfg, {
        steps: 100,
        batch_size: batch,
        lr,
        warmup_steps: 0,
        dead_tokens: 1,
        seed,
      });
      const data = (i: number) => ({
        x: t.random.normal(t.random.foldIn(t.random.key(seed), i), [
          batch,
          cfg.n_inputs!,
          cfg.d_in,
        ]),
      });
      let s = await initTrainState(t.random.key(seed), cfg, tc, [data(0)]);
      let sawAuxk = false;
      for (let i = 0; i < steps; i++) {
        const b = data(i + 1);
        const r = await trainStep(s, b, cfg, tc);
        sawAuxk ||= r.metrics.auxk !== undefined;
        t.disposeReplaced([stateTensors(s), b], stateTensors(r.state));
        s = r.state;
      }
      await assertPartitionIntact(s.params, p);
      const n = await assertMomentsMasked(s.opt, p);
      assert(
        n > 0 || p.exclusive.every(([a, b]) => a === b) || cfg.n_inputs === 1,
        "some forbidden moments were checked",
      );
      if (sawAuxk) runsWithAuxk++;
      t.dispose(stateTensors(s));
    }),
    {
      numRuns: 12,
      examples: [[{
        cfg: resolveConfig({
          arch: "dfc",
          d_in: 4,
          d_sae: 24,
          k: 1,
          n_inputs: 3,
          dfc_shares: [0.2, 0.1, 0.2],
        }),
        steps: 4,
        batch: 2,
        seed: 9,
        lr: 0.05,
      }]],
    },
  );
  assert(runsWithAuxk > 0, "AuxK contributed in some runs");
});

test("dfc masks: the checkers catch a mask with one forbidden entry left out, and broken weights or moments (testing the test)", async () => {
  const cfg = resolveConfig({
    arch: "dfc",
    d_in: 4,
    d_sae: 20,
    k: 3,
    n_inputs: 2,
    dfc_shares: [0.2, 0.2],
  });
  const p = dfcPartition(cfg)!;
  const params = architecture("dfc").init(t.random.key(3), cfg);
  const x = t.random.normal(t.random.key(4), [64, 2, 4]); // k·B = 192 picks: exclusive features get some
  const fn = termFn(cfg, x, {}, "recon");
  // A broken mask: every forbidden entry masked but one, where the raw gradient is not zero.
  const [, raw] = t.valueAndGrad(fn)(params) as [t.Tensor, SaeParams];
  const forbidden = await t.broadcastTo(partitionMasks(p).dec, [2, 20, 4]).data();
  const rawDec = await raw.W_dec.data();
  const leak = rawDec.findIndex((v, i) => forbidden[i] === 1 && v !== 0);
  assert(leak >= 0, "this input gives a forbidden decoder entry a raw gradient");
  const leaky = (g: SaeParams): SaeParams => {
    const m = maskGradients(g, p);
    const hole = t.tensor(Array.from({ length: 2 * 20 * 4 }, (_, i) => i === leak), {
      shape: [2, 20, 4],
    });
    return { ...m, W_dec: t.where(hole, g.W_dec, m.W_dec) };
  };
  let caught = "";
  try {
    await assertGradMask(fn, params, p, { transform: leaky });
  } catch (e) {
    caught = (e as Error).message;
    assert(e instanceof TestFailure, String(e));
  }
  assert(
    caught.includes(`W_dec[${leak}]`),
    `the leak at W_dec flat ${leak} is reported: ${caught}`,
  );
  // No mask at all is caught too, and the correct mask passes.
  let unmasked = false;
  await assertGradMask(fn, params, p).catch(() => (unmasked = true));
  assert(unmasked, "raw gradients have forbidden non-zeros on this input");
  const { grads, checked } = await assertGradMask(fn, params, p, {
    transform: (g) => maskGradients(g, p),
  });
  assertEquals(
    checked,
    2 * 4 * (4 + 4),
    "forbidden entries: 2 inputs × 4 other-input features × (4 encoder + 4 decoder)",
  );
  // Broken weights: one forbidden encoder entry made non-zero.
  const bad = {
    ...params,
    W_enc: t.add(
      params.W_enc,
      t.tensor(Array.from({ length: 2 * 4 * 20 }, (_, i) => (i === 4 ? 1e-30 : 0)), {
        shape: [2, 4, 20],
      }),
    ),
  };
  let broken = false;
  await assertPartitionIntact(bad, p).catch((e) => (broken = String(e).includes("input 0")));
  assert(broken, "a 1e-30 forbidden weight of input 0 (B-only feature 4) is caught");
  // Broken moments: an Adam state with a non-zero forbidden second moment.
  const opt = t.adam({ lr: 1e-3 }).init(params);
  await assertMomentsMasked(opt, p);
  const polluted = { ...opt, nu: { ...(opt.nu as SaeParams), W_dec: t.onesLike(params.W_dec) } };
  let momentsCaught = false;
  await assertMomentsMasked(polluted, p).catch((
    e,
  ) => (momentsCaught = String(e).includes("opt.nu.W_dec")));
  assert(momentsCaught, "a forbidden second moment is caught");
  await assertMomentsMasked(maskMoments(polluted, p), p); // and maskMoments repairs it on request
  await assertMaskedZero(maskGradients(bad, p), p);
  t.dispose([params, x, grads, bad]);
});

test("dfc masks: the span copy (cpu) and the `where` over broadcast masks give the same bits, NaN and ±∞ included; spans are exactly the masks' true entries", async () => {
  await fc.assert(
    fc.asyncProperty(
      dfcConfigArb({ maxFeatures: 40, maxInputs: 4 }),
      fc.integer({ min: 0, max: 1e6 }),
      async (cfg, seed) => {
        const p = dfcPartition(cfg)!;
        const [L, d, F] = [cfg.n_inputs!, cfg.d_in, cfg.d_sae];
        // Gradients with NaN, ±∞ and -0 sprinkled in: `where` makes every forbidden one +0, so must the spans.
        const special = [NaN, Infinity, -Infinity, -0];
        const noisy = (shape: number[], k: number) => {
          const v = Array.from(t.random.normal(t.random.key(seed + k), shape).dataSync());
          return t.tensor(v.map((x, i) => (i % 7 === 3 ? special[i % 4] : x)), { shape });
        };
        const g = {
          W_enc: noisy([L, d, F], 1),
          W_dec: noisy([L, F, d], 2),
          b_enc: t.zeros([F]),
          b_dec: t.zeros([L, d]),
        };
        const fast = maskGradients(g, p); // from a partition: the cpu's zeroSpans
        const m = partitionMasks(p);
        const slow = maskGradients(g, m); // from masks: `where`
        const bits = async (x: t.Tensor) =>
          Array.from(new Uint32Array(Float32Array.from(await x.data() as Float32Array).buffer));
        for (const k of ["W_enc", "W_dec"] as const) {
          assertEquals(
            await bits(fast[k]),
            await bits(slow[k]),
            k,
          );
        }
        for (
          const [which, shape, mk] of [["enc", [L, d, F], m.enc], [
            "dec",
            [L, F, d],
            m.dec,
          ]] as const
        ) {
          const spans = forbiddenSpans(p, shape, which);
          const want = await t.broadcastTo(mk, shape).data();
          const got = new Uint8Array(want.length);
          for (let s = 0; s < spans.length; s += 2) {
            assert(
              spans[s] <= spans[s + 1] && (s === 0 || spans[s - 1] <= spans[s]),
              `${which} spans ascending and disjoint`,
            );
            got.fill(1, spans[s], spans[s + 1]);
          }
          assertEquals(
            Array.from(got),
            Array.from(want, Number),
            `${which} spans cover exactly the forbidden entries`,
          );
        }
        t.dispose([g, fast, slow, m]);
      },
    ),
    { numRuns: 40 },
  );
});

test("dfc masks: the native span copy on several threads gives the TypeScript loop's bits (spans across the threads' slices; f32, f64, i32)", () => {
  const n = 100_003;
  // Spans of every length, some across the slices' boundaries at ~n/2 and ~n/3, one at each end.
  const ends = [0, 5, 9, 9, 40_000, 50_010, 66_000, 66_001, 70_000, 99_000, 99_990, n];
  const spans = Int32Array.from(ends);
  for (const dtype of ["f32", "f64", "i32"] as const) {
    const x = t.cast(t.random.normal(t.random.key(4), [n]), dtype);
    for (const threads of [1, 2, 3]) {
      const before = t.setCpuThreads(threads);
      try {
        const got = fusedZeroSpans(x, () => spans);
        const was = setNativeKernels(false);
        let want: t.Tensor | null;
        try {
          want = fusedZeroSpans(x, () => spans);
        } finally {
          setNativeKernels(was);
        }
        assert(got !== null && want !== null, "both ran");
        const a = new Uint8Array(got.dataSync().buffer), b = new Uint8Array(want.dataSync().buffer);
        assertEquals(a.length, b.length, `${dtype} bytes`);
        for (let i = 0; i < a.length; i++) {
          if (a[i] !== b[i]) throw new Error(`${dtype}, ${threads} threads: byte ${i} differs`);
        }
        t.dispose([got, want]);
      } finally {
        t.setCpuThreads(before);
      }
    }
  }
  assertThrows(
    () => native()?.zeroSpans(new Float32Array(4), new Float32Array(4), 4, Int32Array.of(3, 2), 1),
    "span 0",
  );
});
