/**
 * The CPU backend's worker threads: every threaded kernel gives the same bits as on one thread
 * (each slice runs the same per-type loop on disjoint outputs), and an error raised in a
 * worker's slice reaches the caller with its message.
 */
import { assertEquals, assertThrows, test } from "./harness.ts";
import * as t from "../mod.ts";
import { setThreads, threadsReady } from "../tensor/cpu/threads.ts";
import { loadNative, setNativeKernels } from "../tensor/cpu/native.ts";
import { unitRows } from "../sae/params.ts";
import { projectDecoderGrad } from "../sae/train/step.ts";

/**
 * Results of `f` with threads, then on one thread, in the TypeScript kernels; then (when the
 * native kernels load) with the native kernels on threads and on one thread, which must give
 * the same bits again. The threaded TypeScript run must have used the workers.
 */
async function bothWays(
  f: () => t.Tensor[],
  /**
   * Outputs whose native kernel sums in another order than TypeScript's (f32 sparse products in
   * AVX2 registers: within the f32 summation bound, tests/native.test.ts): native results are then
   * compared across thread counts only, not with TypeScript's.
   */
  ownOrder: number[] = [],
): Promise<[Float32Array[] | Float64Array[], Float32Array[] | Float64Array[]]> {
  const n = await threadsReady();
  if (n < 2) {
    console.log(
      `threads.test: ${n} thread on this machine; the comparison runs one-threaded both ways`,
    );
  }
  const read = () => f().map((x) => x.dataSync() as Float32Array);
  const nativeWas = setNativeKernels(false);
  try {
    const many = read();
    const prev = setThreads(1);
    let one: Float32Array[];
    try {
      one = read();
    } finally {
      setThreads(prev);
    }
    if (loadNative().native) {
      setNativeKernels(true);
      const nativeMany = read();
      setThreads(1);
      let nativeOne: Float32Array[];
      try {
        nativeOne = read();
      } finally {
        setThreads(prev);
      }
      assertSameBits(nativeMany, nativeOne, "native kernels on threads against one thread");
      const typescript = (xs: Float32Array[]) => xs.filter((_, i) => !ownOrder.includes(i));
      assertSameBits(
        typescript(nativeOne),
        typescript(one),
        "native kernels against TypeScript",
      );
    } else {console.log(
        `threads.test: native kernels absent (${loadNative().reason}); TypeScript kernels only`,
      );}
    return [many, one];
  } finally {
    setNativeKernels(nativeWas);
  }
}

function assertSameBits(a: ArrayLike<number>[], b: ArrayLike<number>[], what: string): void {
  assertEquals(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) {
    assertEquals(a[i].length, b[i].length, `${what}[${i}] length`);
    for (let j = 0; j < a[i].length; j++) {
      if (!Object.is(a[i][j], b[i][j])) {
        throw new Error(`${what}[${i}][${j}]: threaded ${a[i][j]}, one thread ${b[i][j]}`);
      }
    }
  }
}

const key = t.random.key(7);
const [k1, k2, k3, k4] = t.random.split(key, 4);

test("threaded elementwise kernels and reductions match one thread bit for bit", async () => {
  const x = t.random.normal(k1, [1024, 640]);
  const row = t.random.normal(k2, [640]);
  const [a, b] = await bothWays(() => [
    t.add(x, row), // row broadcast
    t.mul(t.transpose(x), 3), // strided input
    t.relu(x),
    t.sum(x, 0), // reduced over the outer axis: slices take column ranges
    t.sum(x, 1),
    t.max(x, 0),
    t.exp(t.cast(x, "f64")),
  ]);
  assertSameBits(a, b, "elementwise");
});

test("threaded sparse products, top-k and fused kernels match one thread bit for bit", async () => {
  const B = 512, F = 2048, d = 256, k = 16;
  const pre = t.random.normal(k1, [B, F]);
  const W = t.random.normal(k2, [F, d]), G = t.random.normal(k3, [B, d]);
  const [many, one] = await bothWays(() => {
    const [v, idx] = t.topk(pre, k);
    const coo = t.cooFromRows(idx, v);
    const g = t.random.normal(k4, [F, d]);
    const opt = t.adamw({ lr: 1e-3 });
    const [u, s] = opt.update(g, opt.update(W, opt.init(W), W)[1], W);
    const st = s as { mu: t.Tensor; nu: t.Tensor };
    // f64 too: there a different summation order would show in the last bits.
    const [G64, W64] = [t.cast(G, "f64"), t.cast(W, "f64")];
    const wide = [
      t.spmm(coo, W64, B),
      t.spmmT(coo, G64, F),
      t.sddmm(G64, W64, coo.rows, coo.cols),
      t.topk(t.cast(pre, "f64"), k)[0],
    ];
    return [
      v,
      t.cast(idx, "f32"),
      t.spmm(coo, W, B),
      t.spmmT(coo, G, F),
      t.sddmm(G, W, coo.rows, coo.cols),
      unitRows(W),
      projectDecoderGrad(g, W),
      u,
      st.mu,
      st.nu,
      ...wide,
    ];
  }, [2, 3]); // f32 spmm and spmmT
  assertSameBits(many, one, "sparse/top-k/fused");
});

test("an index error inside a worker's slice reaches the caller", async () => {
  await threadsReady();
  const W = t.random.normal(k2, [64, 4096]);
  const rows = t.tensor(Array.from({ length: 128 }, (_, i) => (i === 127 ? 999 : i % 32)), {
    dtype: "i32",
  });
  const cols = t.tensor(Array.from({ length: 128 }, (_, i) => i % 64), { dtype: "i32" });
  const call = () => t.sddmm(t.random.normal(k3, [32, 4096]), W, rows, cols).dataSync();
  const was = setNativeKernels(false);
  try {
    assertThrows(call, "999 is out of range");
  } finally {
    setNativeKernels(was);
  }
  // The native kernels check indices up front and raise the same error.
  assertThrows(call, "sddmm: index 999 is out of range for 32 rows");
  const coo = { rows, cols, values: t.ones([128]) };
  assertThrows(
    () => t.spmm(coo as never, W, 32).dataSync(),
    "spmm: index 999 is out of range for 32 rows",
  );
});

test("top-k of a few long rows (BatchTopK) splits columns and merges to the one-thread answer", async () => {
  // Repeated values and NaNs exercise the merge's tie rule (lower index first, NaN highest).
  const x = t.floor(t.mul(t.random.normal(k1, [2, 300_000]), 4));
  const withNan = t.where(t.eq(t.mod(t.arange(600_000), 99991), 5), NaN, t.reshape(x, [-1]));
  for (const k of [1, 100, 5000]) {
    const [many, one] = await bothWays(() => {
      const [v, i] = t.topk(withNan, k);
      const [v2, i2] = t.topk(x, k);
      return [v, t.cast(i, "f32"), v2, t.cast(i2, "f32")];
    });
    assertSameBits(many, one, `topk k=${k}`);
  }
});
