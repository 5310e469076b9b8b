// Golden values: every architecture's code, reconstruction, loss terms and parameter gradients
// against the independent PyTorch reference in tests/golden/sae_reference.py (float64). Only the
// committed JSON fixtures are read, so PyTorch is not needed here. f64 must agree to rtol 1e-5
// (it agrees to ~1e-15); f32 runs the same fixtures at rtol 1e-5 / atol 1e-6.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as t from "../mod.ts";
import type { Batch, LossAux, LossContext } from "../sae/arch/architecture.ts";
import { ARCHITECTURES } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { resolveConfig, type SaeConfig, type SaeConfigInput } from "../sae/config.ts";
import type { SaeParams } from "../sae/params.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

interface Arr {
  shape: number[];
  data: number[];
}
interface Fixture {
  case: string;
  arch: SaeConfig["arch"];
  config: SaeConfigInput;
  assumed: Record<string, unknown>;
  context: { dead?: boolean[]; numDead?: number; l1Scale?: number };
  inputs: { x: Arr; y?: Arr };
  params: Record<string, Arr>;
  expected: {
    code: Arr;
    xhat: Arr;
    terms: Record<string, number>;
    total: number;
    grads: Record<string, Arr>;
  };
}

const TERMS = ["recon", "sparsity", "auxk", "gatedAux"] as const;
const dir = fileURLToPath(new URL("./golden/fixtures/", import.meta.url));
const fixtures: Fixture[] = readdirSync(dir).filter((f) => f.endsWith(".json")).sort()
  .map((f) => JSON.parse(readFileSync(dir + f, "utf8")) as Fixture);

/**
 * Worst error per dtype: relative where |expected| > 1e-6, absolute below it (exact zeros), and
 * the largest share of the allowed error |a − e| / (atol + rtol·|e|) used anywhere.
 */
const worst: Record<
  string,
  { rel: number; relAt: string; abs: number; absAt: string; used: number; usedAt: string }
> = {};

function compare(
  dtype: "f64" | "f32",
  what: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
): void {
  const tol = dtype === "f64" ? { rtol: 1e-5, atol: 1e-12 } : { rtol: 1e-5, atol: 1e-6 };
  assertClose(actual, expected, { ...tol, msg: `${dtype} ${what}` });
  const w = (worst[dtype] ??= { rel: 0, relAt: "", abs: 0, absAt: "", used: 0, usedAt: "" });
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]), e = Math.abs(expected[i]);
    if (d / (tol.atol + tol.rtol * e) > w.used) {
      [w.used, w.usedAt] = [d / (tol.atol + tol.rtol * e), `${what}[${i}]`];
    }
    if (e > 1e-6) {
      if (d / e > w.rel) [w.rel, w.relAt] = [d / e, `${what}[${i}]`];
    } else if (d > w.abs) [w.abs, w.absAt] = [d, `${what}[${i}]`];
  }
}

const tensorOf = (a: Arr, dtype: "f64" | "f32") => t.tensor(a.data, { dtype, shape: a.shape });

for (const fx of fixtures) {
  for (const dtype of ["f64", "f32"] as const) {
    test(`sae golden ${fx.case} (${dtype}) matches the PyTorch reference`, () => {
      const cfg = resolveConfig(fx.config);
      // The reference assumed these resolved defaults; a changed default must fail here, not later.
      for (const [k, v] of Object.entries(fx.assumed)) {
        assertEquals((cfg as unknown as Record<string, unknown>)[k], v, `config ${k}`);
      }

      const params = Object.fromEntries(
        Object.entries(fx.params).map(([k, a]) => [k, tensorOf(a, dtype)]),
      ) as unknown as SaeParams;
      const batch: Batch = {
        x: tensorOf(fx.inputs.x, dtype),
        y: fx.inputs.y ? tensorOf(fx.inputs.y, dtype) : undefined,
      };
      const ctx: LossContext = {};
      if (fx.context.dead) {
        ctx.dead = t.tensor(fx.context.dead, { dtype: "bool" });
        ctx.numDead = fx.context.numDead;
      }
      if (fx.context.l1Scale !== undefined) ctx.l1Scale = fx.context.l1Scale;

      const arch = ARCHITECTURES[fx.arch];
      const [[total, aux], grads] = t.valueAndGrad(
        (p: SaeParams): [t.Tensor, LossAux] => arch.loss(p, batch, cfg, ctx),
        { hasAux: true },
      )(params);

      const ex = fx.expected;
      const code = toDense(aux.code, cfg.d_sae);
      assertEquals(code.shape, ex.code.shape, "code shape");
      compare(dtype, `${fx.case}.code`, code.dataSync(), ex.code.data);
      assertEquals(aux.xhat.shape, ex.xhat.shape, "xhat shape");
      assertEquals(aux.xhat.dtype, dtype, "xhat dtype");
      compare(dtype, `${fx.case}.xhat`, aux.xhat.dataSync(), ex.xhat.data);
      for (const term of TERMS) {
        const got = aux[term];
        if (!(term in ex.terms)) {
          assert(got === undefined, `${fx.case}: unexpected loss term ${term}`);
          continue;
        }
        assert(got !== undefined, `${fx.case}: missing loss term ${term}`);
        compare(dtype, `${fx.case}.${term}`, got.dataSync(), [ex.terms[term]]);
      }
      assertEquals(total.dtype, dtype, "loss dtype");
      compare(dtype, `${fx.case}.total`, total.dataSync(), [ex.total]);

      assertEquals(Object.keys(grads).sort(), Object.keys(ex.grads).sort(), "gradient keys");
      for (const [k, g] of Object.entries(ex.grads)) {
        const gk = grads[k as keyof SaeParams]!;
        assertEquals(gk.shape, g.shape, `grad ${k} shape`);
        assertEquals(gk.dtype, dtype, `grad ${k} dtype`);
        compare(dtype, `${fx.case}.grad.${k}`, gk.dataSync(), g.data);
      }
    });
  }
}

test("sae golden: every architecture is covered (and a summary of the worst errors)", () => {
  const archs = new Set(fixtures.map((f) => f.arch));
  for (const a of Object.keys(ARCHITECTURES)) {
    assert(archs.has(a as SaeConfig["arch"]), `no golden fixture for ${a}`);
  }
  for (const a of ["topk", "batchtopk", "matryoshka", "transcoder", "mlsae"]) {
    assert(fixtures.some((f) => f.arch === a && f.context.dead), `no AuxK golden fixture for ${a}`);
  }
  for (const [d, w] of Object.entries(worst)) {
    console.log(
      `sae golden ${d}: worst relative error ${
        w.rel.toExponential(2)
      } (${w.relAt}); worst absolute error where |expected| <= 1e-6: ` +
        `${w.abs.toExponential(2)} (${w.absAt || "-"}); largest share of the tolerance used ${
          w.used.toFixed(3)
        } (${w.usedAt})`,
    );
  }
});
