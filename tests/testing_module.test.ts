// The `testing` module users import (testing/mod.ts, or `sparsecoder/testing`): its arbitraries
// produce what they promise (shapes, dtypes, ranges, every architecture's parameter records, valid
// partitions), and the README's example properties run as written.
import fc from "fast-check";
import * as t from "../mod.ts";
import * as testing from "../testing/mod.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { ARCHS } from "../sae/arch/registry.ts";

const { sae } = t;

test("testing: tensorArb gives the shape and dtype asked for, values in range; shapeArb respects its bounds", () => {
  fc.assert(
    fc.property(
      testing.shapeArb({ minRank: 1, maxRank: 3, maxDim: 4 }).chain((s) =>
        fc.tuple(
          fc.constant(s),
          fc.constantFrom("f32", "f64", "i32", "bool", "f16", "bf16") as fc.Arbitrary<t.DType>,
        )
      ).chain(([s, dt]) =>
        fc.tuple(
          fc.constant(s),
          fc.constant(dt),
          testing.tensorArb(s, { dtype: dt, min: -2, max: 3 }),
        )
      ),
      ([shape, dtype, x]) => {
        assert(
          shape.length >= 1 && shape.length <= 3 && shape.every((d) => d >= 1 && d <= 4),
          `shape ${shape}`,
        );
        assertEquals([x.shape, x.dtype], [shape, dtype]);
        const v = x.dataSync();
        for (const e of v) {
          assert(
            dtype === "bool" ? e === 0 || e === 1 : e >= -2.01 && e <= 3.01,
            `${dtype} value ${e}`,
          );
        }
        x.dispose();
      },
    ),
    { numRuns: 100 },
  );
  fc.assert(
    fc.property(testing.tensorArb(testing.shapeArb({ allowEmpty: true, maxRank: 2 })), (x) => {
      assert(x.size === x.shape.reduce((a, b) => a * b, 1));
      x.dispose();
    }),
    { numRuns: 30 },
  );
});

test("testing: saeConfigArb and paramsArb cover every architecture with its init's shapes; DFC records keep their partition", async () => {
  const seen = new Set<string>();
  await fc.assert(
    fc.asyncProperty(
      testing.saeConfigArb().chain((cfg) => fc.tuple(fc.constant(cfg), testing.paramsArb(cfg))),
      async ([cfg, p]) => {
        seen.add(cfg.arch);
        const ref = sae.architecture(cfg.arch).init(t.random.key(0), cfg);
        assertEquals(Object.keys(p).sort(), Object.keys(ref).sort(), `${cfg.arch} leaves`);
        for (const k of Object.keys(ref) as (keyof typeof ref)[]) {
          assertEquals(p[k]!.shape, ref[k]!.shape, `${cfg.arch}.${k}`);
        }
        if (p.threshold) assert(p.threshold.dataSync().every((v) => v >= 0), "JumpReLU θ ≥ 0");
        if (cfg.arch === "dfc") await testing.assertPartitionIntact(p, sae.dfcPartition(cfg)!);
        t.dispose([p, ref]);
      },
    ),
    { numRuns: 120 },
  );
  for (const a of ARCHS) assert(seen.has(a), `saeConfigArb never drew ${a}`);
});

test("testing: partitionArb gives partitions checkPartition accepts", () => {
  fc.assert(
    fc.property(testing.partitionArb(), ({ partition, shares }) => {
      sae.checkPartition(partition, partition.features, shares.length);
    }),
    { numRuns: 200 },
  );
});

// ---- the README's example properties ----------------------------------------------------------

test("README example: a DFC's masked gradient is exactly zero on forbidden entries, for random configs, params and data", async () => {
  const cases = testing.dfcConfigArb().chain((cfg) =>
    fc.tuple(
      fc.constant(cfg),
      testing.paramsArb(cfg),
      testing.tensorArb(fc.integer({ min: 1, max: 8 }).map((b) => [b, cfg.n_inputs!, cfg.d_in])),
    )
  );
  await fc.assert(
    fc.asyncProperty(cases, async ([cfg, params, x]) => {
      const partition = sae.dfcPartition(cfg)!;
      const loss = (p: t.sae.SaeParams) => sae.architecture("dfc").loss(p, { x }, cfg, {})[0];
      const { grads } = await testing.assertGradMask(loss, params, partition, {
        transform: (g) => sae.maskGradients(g, partition),
      });
      t.dispose([grads, params, x]);
    }),
    { numRuns: 20 },
  );
});

test("README example: a variant that masks inside its forward pass gets zero forbidden gradients with no transform at all", async () => {
  // Random configs and params, and a partition drawn for each config's F and L.
  const fitted = testing.saeConfigArb("batchtopk-crosscoder").chain((cfg) =>
    fc.tuple(
      fc.constant(cfg),
      testing.paramsArb(cfg),
      fc.array(fc.double({ min: 0, max: 0.45, noNaN: true }), {
        minLength: cfg.n_inputs!,
        maxLength: cfg.n_inputs!,
      }).map((s) => sae.makePartition(cfg.d_sae, s.map((v) => v / cfg.n_inputs!))),
    )
  );
  await fc.assert(
    fc.asyncProperty(fitted, async ([cfg, params, partition]) => {
      const x = t.random.normal(t.random.key(1), [6, cfg.n_inputs!, cfg.d_in]);
      const loss = (p: t.sae.SaeParams) =>
        sae.architecture(cfg.arch).loss(sae.maskParams(p, partition), { x }, cfg, {})[0];
      const { grads } = await testing.assertGradMask(loss, params, partition);
      t.dispose([grads, params, x]);
    }),
    { numRuns: 20 },
  );
});
