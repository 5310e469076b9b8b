import fc from "fast-check";
import { assert, assertClose, test } from "./harness.ts";
import * as t from "../mod.ts";
import { loadBlas } from "../tensor/cpu/blas.ts";
import { matmul as kernelMatmul, type NumView } from "../tensor/cpu/kernels.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { cStringBuf, getFfi } from "../tensor/platform/ffi.ts";

const blas = loadBlas();
if (!blas.blas) {
  if (readEnv("REQUIRE_BLAS") === "1") {
    throw new Error(`REQUIRE_BLAS=1 but OpenBLAS did not load: ${blas.reason}`);
  }
  console.log(`skip: BLAS-vs-TypeScript matmul comparison: ${blas.reason}`);
}

/** The op's result (BLAS when loaded) and the TypeScript kernel's on the same strided views. */
function bothPaths(a: t.Tensor, b: t.Tensor): [Float32Array, Float32Array] {
  const viaOp = t.matmul(a, b).dataSync() as Float32Array;
  const nv = (x: t.Tensor): NumView & { arr: Float32Array } => ({
    arr: x.view().buf as Float32Array,
    shape: x.shape,
    strides: x.strides,
    offset: x.offset,
  });
  const r = a.ndim;
  const out = new Float32Array(a.shape.slice(0, r - 1).reduce((s, d) => s * d, 1) * b.shape[r - 1]);
  kernelMatmul(nv(a), nv(b), out, true);
  return [viaOp, out];
}

test("matmul: the BLAS path and the TypeScript kernel agree on random shapes, transposes and batches", () => {
  if (!blas.blas) return;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 3 }),
      fc.boolean(),
      fc.boolean(),
      fc.integer({ min: 0, max: 1000 }),
      (M, K, N, batch, ta, tb, seed) => {
        const [k1, k2] = t.random.split(t.random.key(seed));
        // Transposed operands arrive as strided views (column-major), exercising the trans flags.
        const a = ta
          ? t.mT(t.random.normal(k1, [batch, K, M]))
          : t.random.normal(k1, [batch, M, K]);
        const b = tb
          ? t.mT(t.random.normal(k2, [batch, N, K]))
          : t.random.normal(k2, [batch, K, N]);
        const [x, y] = bothPaths(a, b);
        assertClose(x, y, { rtol: 1e-4, atol: 1e-4 });
      },
    ),
    { numRuns: 60 },
  );
});

test("matmul: a 1024-wide product goes through BLAS and matches TypeScript", () => {
  if (!blas.blas) return;
  assert(t.backendInfo().backends.cpu.includes("OpenBLAS"), "backendInfo names OpenBLAS");
  const [k1, k2] = t.random.split(t.random.key(1));
  const [x, y] = bothPaths(t.random.normal(k1, [96, 1024]), t.mT(t.random.normal(k2, [80, 1024])));
  assertClose(x, y, { rtol: 1e-3, atol: 1e-3 });
});

test("OpenBLAS's idle threads are told to sleep at once, in the C environment it reads (under Bun too)", () => {
  if (!blas.blas) return;
  // The library reads OPENBLAS_THREAD_TIMEOUT from the C environment when it loads; Bun's
  // process.env does not reach that, and spinning BLAS threads took a core from every native
  // kernel (a TopK step 88 ms under Bun against 65 ms under Deno).
  const ffi = getFfi()!;
  const libc = ffi.open("libc.so.6", { getenv: { args: ["buf"], ret: "addr" } });
  const seen = ffi.cString(libc.fns.getenv!(cStringBuf("OPENBLAS_THREAD_TIMEOUT")) as bigint);
  assert(seen !== "", "OPENBLAS_THREAD_TIMEOUT is set in the C environment");
  assert(seen === readEnv("OPENBLAS_THREAD_TIMEOUT"), `C environment ${seen}, runtime's the same`);
});
