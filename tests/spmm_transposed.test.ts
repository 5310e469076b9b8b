/**
 * The sparse product written transposed (fusedSpmmTransposed: ∂W_enc in W_enc's [d, F] layout)
 * gives the bits of spmmT then a copy of its transpose, on shapes whose output rows do and do not
 * fill its 8-row blocks, with zero weights and infinities (a skipped zero weight keeps them out),
 * on one thread and several; the TopK encoder's ∂W_enc is the same with and without it.
 */
import fc from "fast-check";
import * as t from "../mod.ts";
import { loadNative } from "../tensor/cpu/native.ts";
import { fusedSpmmTransposed } from "../tensor/fused.ts";
import { topkEncode } from "../sae/arch/topk_encode.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { cpuHas, runs } from "./ref.ts";

const status = loadNative();
if (!status.native) {
  if (readEnv("REQUIRE_NATIVE") === "1") {
    throw new Error(`REQUIRE_NATIVE=1 but the native kernels did not load: ${status.reason}`);
  }
  console.log(`skip: transposed sparse product: ${status.reason}`);
}
// The kernel is AVX2 code: elsewhere it declines and the composition runs (still checked below).
const avx2 = status.native !== null && cpuHas("avx2");

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assertEquals(a.length, b.length, `${what} length`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${what}[${i}]: fused ${a[i]}, composed ${b[i]}`);
  }
}

test("fusedSpmmTransposed gives the bits of transpose(spmmT(...))", async () => {
  if (!status.native) return;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 45 }),
      fc.constantFrom(32, 64, 96, 40),
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      async (B, F, d, nnz, threads, seed) => {
        let s = seed;
        const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
        const rows = t.tensor(Array.from({ length: nnz }, () => Math.floor(rnd() * B)), {
          dtype: "i32",
        });
        const cols = t.tensor(Array.from({ length: nnz }, () => Math.floor(rnd() * F)), {
          dtype: "i32",
        });
        const values = t.tensor(
          Array.from({ length: nnz }, () => (rnd() < 0.1 ? 0 : (rnd() - 0.5) * 4)),
        );
        const x = t.tensor(
          Array.from({ length: B * d }, () => (rnd() < 0.01 ? Infinity : (rnd() - 0.5) * 8)),
          { shape: [B, d] },
        );
        const coo = { rows, cols, values };
        const before = t.setCpuThreads(threads);
        try {
          const got = fusedSpmmTransposed(coo, x, F);
          const want = t.contiguous(t.transpose(t.spmmT(coo, x, F)));
          // (It declines where spmm sums source-major: dense rows ≥ 2·F and nnz ≥ 2·B.)
          const srcMajor = B >= 2 * F && nnz >= 2 * B;
          if (avx2 && d % 32 === 0 && !srcMajor) assert(got !== null, `declined d = ${d}`);
          if (got) sameBits(await got.data(), await want.data(), `[${d}, ${F}]`);
          t.dispose([got, want]);
        } finally {
          t.setCpuThreads(before);
        }
        t.dispose([rows, cols, values, x]);
      },
    ),
    { numRuns: runs(60) },
  );
});

test("the TopK encoder's ∂W_enc is the same with the transposed product and without", async () => {
  const x = t.random.normal(t.random.key(1), [96, 64]);
  const W = t.random.normal(t.random.key(2), [64, 200]);
  const b = t.random.normal(t.random.key(3), [200]);
  const bd = t.random.normal(t.random.key(4), [64]);
  const grads = () =>
    t.grad((p: { W: t.Tensor }) => {
      const code = topkEncode(x, p.W, b, bd, 8);
      return t.sum(t.mul(code.values, code.values));
    })({ W }).W;
  // deno-lint-ignore no-explicit-any
  const table = t.getBackend().fused as Record<string, any>;
  let ran = 0;
  const k = table.spmmTransposed;
  table.spmmTransposed = (...a: unknown[]) => {
    const r = k?.(...a);
    if (r) ran++;
    return r;
  };
  const fused = grads();
  table.spmmTransposed = undefined;
  const composed = grads();
  table.spmmTransposed = k;
  if (avx2) assert(ran > 0, "the kernel never ran");
  assert(fused.isContiguous() || !avx2, "∂W_enc comes out in W_enc's layout");
  sameBits(await fused.data(), await composed.data(), "∂W_enc");
});
