// The SCAE pruned pass in scatter form (sae/scae/scatter.ts) against the gather form it replaces:
// values and gradients (w.r.t. the codes and the virtual weights) on random tables with −1 padding,
// upstream ids repeated across rows and within a row, zero codes and ids no row lists; then the
// whole pruned pass on the tiny GPT-2 and GPT-NeoX suites with and without the inverted tables.
import fc from "fast-check";
import type { Tensor } from "../tensor/tensor.ts";
import { tensor } from "../tensor/ops/create.ts";
import { add, mul } from "../tensor/ops/elementwise.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { reshape, take, transpose } from "../tensor/ops/shape.ts";
import { valueAndGrad } from "../autodiff/grad.ts";
import { toDense } from "../sae/code.ts";
import {
  type ConnIndex,
  connIndex,
  connIndices,
  fvu,
  prunedForward,
  scatterRule,
  type SuiteParams,
} from "../sae/scae/pruned.ts";
import { fanOut, scatterContribution } from "../sae/scae/scatter.ts";
import { assert, assertClose, test } from "./harness.ts";
import { setup } from "./scae_fixture.ts";

async function close(a: Tensor, b: Tensor, what: string, rtol = 1e-5, atol = 1e-6) {
  assertClose(Array.from(await a.data()), Array.from(await b.data()), { rtol, atol, msg: what });
}

/** The gather form: Σ_c f[n, idx[i, c]]·(V·mask)[i, c, h] → [H, N, F_down]. */
function gathered(vals: Tensor, indices: Tensor, V: Tensor, c: ConnIndex, Fup: number): Tensor {
  const f = toDense({ kind: "rows", values: vals, indices }, Fup);
  return transpose(matmul(transpose(take(f, c.idx, 1), [1, 0, 2]), mul(V, c.mask)), [2, 1, 0]);
}

const dims = fc.record({
  N: fc.integer({ min: 1, max: 5 }),
  k: fc.integer({ min: 1, max: 4 }),
  extra: fc.integer({ min: 0, max: 5 }),
  Fd: fc.integer({ min: 1, max: 6 }),
  C: fc.integer({ min: 1, max: 4 }),
  H: fc.integer({ min: 1, max: 3 }),
  seed: fc.integer({ min: 0, max: 2 ** 30 }),
  dtype: fc.constantFrom("f32" as const, "f64" as const),
});

/** A small deterministic generator, so one fast-check seed fixes every array. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

test("scae scatter == gather: values and gradients on random tables (fast-check)", async () => {
  let repeats = 0, padded = 0, zeros = 0;
  await fc.assert(
    fc.asyncProperty(dims, async ({ N, k, extra, Fd, C, H, seed, dtype }) => {
      const r = rng(seed);
      const Fup = k + extra;
      // Few distinct ids so they repeat across rows (and, allowed here, within a row).
      const ids = Int32Array.from(
        { length: Fd * C },
        () => (r() < 0.25 ? -1 : Math.floor(r() * Fup)),
      );
      padded += ids.filter((v) => v < 0).length;
      const c = connIndex({ rows: Fd, C, ids });
      // Each token's k distinct active features, some with a zero code (a ReLU'd top-k entry).
      const idx = new Int32Array(N * k), val = new Float32Array(N * k);
      for (let n = 0; n < N; n++) {
        const perm = Array.from({ length: Fup }, (_, j) => j).sort(() => r() - 0.5);
        for (let t = 0; t < k; t++) {
          idx[n * k + t] = perm[t];
          val[n * k + t] = r() < 0.2 ? 0 : r() * 2 - 1;
        }
      }
      zeros += val.filter((v) => v === 0).length;
      repeats += ids.length - new Set(ids).size;
      const indices = tensor(idx, { dtype: "i32", shape: [N, k] });
      const vals = tensor(val, { shape: [N, k], dtype });
      const V = tensor(Float32Array.from({ length: Fd * C * H }, () => r() * 2 - 1), {
        shape: [Fd, C, H],
        dtype,
      });
      const W = tensor(Float32Array.from({ length: H * N * Fd }, () => r() * 2 - 1), {
        shape: [H, N, Fd],
        dtype,
      });
      // The op reads one V row per connected slot; differentiate w.r.t. the full [F_down, C, H].
      const fan = fanOut({ rows: Fd, C, ids });
      const slots = tensor(fan.slots, { dtype: "i32" });
      const loss = (form: "scatter" | "gather") => (p: { vals: Tensor; V: Tensor }) =>
        sum(
          mul(
            form === "scatter"
              ? scatterContribution(p.vals, indices, take(reshape(p.V, [Fd * C, H]), slots, 0), fan)
              : gathered(p.vals, indices, p.V, c, Fup),
            W,
          ),
        );
      const [ys, gs] = valueAndGrad(loss("scatter"))({ vals, V }) as [
        Tensor,
        Record<string, Tensor>,
      ];
      const [yg, gg] = valueAndGrad(loss("gather"))({ vals, V }) as [
        Tensor,
        Record<string, Tensor>,
      ];
      await close(ys, yg, "value");
      await close(gs.vals, gg.vals, "∂values");
      await close(gs.V, gg.V, "∂V");
      assert(
        ys.dtype === dtype && gs.vals.dtype === dtype,
        `computed in ${ys.dtype}, not ${dtype}`,
      );
      // Padded slots carry no gradient at all, exactly.
      const dV = await gs.V.data();
      for (let s = 0; s < Fd * C; s++) {
        if (ids[s] < 0) {
          for (let h = 0; h < H; h++) assert(dV[s * H + h] === 0, `∂V at padded ${s}`);
        }
      }
    }),
    { numRuns: 60 },
  );
  // Not vacuous: the runs did meet padding, repeated ids and zero codes.
  assert(
    padded > 0 && repeats > 0 && zeros > 0,
    `padded ${padded} repeats ${repeats} zeros ${zeros}`,
  );
});

test("scae scatter: fanOut inverts a table (−1 dropped, repeats kept, grouped by upstream id; empty)", () => {
  const f = fanOut({ rows: 3, C: 2, ids: Int32Array.from([2, -1, 0, 2, 2, 2]) });
  // Connected slots (row-major): 0 (id 2), 2 (id 0), 3, 4, 5 (id 2).
  assert(Array.from(f.slots).join() === "0,2,3,4,5", `slots ${Array.from(f.slots)}`);
  assert(Array.from(f.ids).join() === "2,0,2,2,2", `ids ${Array.from(f.ids)}`);
  assert(Array.from(f.start).join() === "0,1,1,5", `start ${Array.from(f.start)}`);
  assert(Array.from(f.down).join() === "1,0,1,2,2", `down ${Array.from(f.down)}`);
  assert(Array.from(f.slot).join() === "1,0,2,3,4", `slot ${Array.from(f.slot)}`);
  // A table with every slot padded: no entries, and the op adds nothing.
  const none = fanOut({ rows: 2, C: 2, ids: Int32Array.from([-1, -1, -1, -1]) });
  assert(none.slots.length === 0 && none.start.length === 1, "empty fan-out");
  const y = scatterContribution(
    tensor([[1, 2]]),
    tensor([[0, 1]], { dtype: "i32" }),
    tensor(new Float32Array(0), { shape: [0, 3] }),
    none,
  );
  assert(y.shape.join() === "3,1,2", `shape ${y.shape}`);
  assert(Array.from(y.dataSync()).every((v) => v === 0), "zeros");
});

for (const family of ["gpt2", "gpt_neox"] as const) {
  test(`scae scatter (${family}): the pruned pass and its gradients equal the gather form`, async () => {
    const { suite, conns, ctx, params } = await setup(family);
    const { cfgs, frozen } = ctx;
    const scatter = connIndices(conns);
    const gather = Object.fromEntries(
      Object.entries(scatter).map(([d, ups]) => [
        d,
        Object.fromEntries(Object.entries(ups).map(([u, c]) => [u, { ...c, fan: undefined }])),
      ]),
    );
    // Not vacuous: the rule picks scatter for every table of this suite.
    let tables = 0;
    for (const [d, ups] of Object.entries(scatter)) {
      for (const [u, c] of Object.entries(ups)) {
        const k = cfgs[u].k;
        const probe = scatterRule(
          c,
          tensor(new Float32Array(k), { shape: [1, k] }),
          params[u].W_dec,
        );
        assert(probe, `scatter rule refused ${d}<-${u}`);
        tables++;
      }
    }
    assert(tables > 0, "the suite has connection tables");
    const loss = (idx: typeof scatter) => (p: SuiteParams) => {
      const out = prunedForward(p, ctx, idx);
      return {
        out,
        total: suite.modules.map((m) => fvu(frozen.targets[m.name], out.recon[m.name])).reduce(add),
      };
    };
    const a = loss(scatter)(params), b = loss(gather)(params);
    for (const m of suite.modules) {
      await close(a.out.pre[m.name], b.out.pre[m.name], `pre ${m.name}`);
      await close(a.out.recon[m.name], b.out.recon[m.name], `recon ${m.name}`);
    }
    const [, ga] = valueAndGrad((p: SuiteParams) => loss(scatter)(p).total)(params) as [
      Tensor,
      SuiteParams,
    ];
    const [, gb] = valueAndGrad((p: SuiteParams) => loss(gather)(p).total)(params) as [
      Tensor,
      SuiteParams,
    ];
    for (const m of suite.modules) {
      for (const k of ["W_enc", "W_dec", "b_dec", "b_enc"] as const) {
        await close(ga[m.name][k]!, gb[m.name][k]!, `grad ${m.name}.${k}`, 1e-4, 1e-6);
      }
    }
  });
}
