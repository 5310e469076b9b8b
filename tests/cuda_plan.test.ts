/**
 * The cuda backend's host-side planning, checked without a GPU: the row-major → column-major
 * cuBLAS plan (run through a column-major reference GEMM on the host), dimension merging for
 * elementwise kernels and reductions (same element offsets as the original views), and the
 * caching allocator (flat over 10,000 steps, OOM retry).
 */
import fc from "fast-check";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import { planGemm, type StridedLike } from "../tensor/cuda/gemm_plan.ts";
import { collapse, planElementwise, planReduce } from "../tensor/cuda/plan.ts";
import { cachingAllocator, roundSize } from "../tensor/cuda/allocator.ts";
import { indexDigits } from "../tensor/cuda/kernels/select.ts";
import { CudaError } from "../tensor/cuda/errors.ts";
import { colMajorGemm } from "./cuda_emu/gemm.ts";

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Offsets of a strided view in row-major order of its shape. */
function offsets(shape: readonly number[], strides: readonly number[], offset: number): number[] {
  const out: number[] = [];
  const n = prod(shape);
  for (let i = 0; i < n; i++) {
    let r = i, o = offset;
    for (let d = shape.length - 1; d >= 0; d--) {
      o += (r % shape[d]) * strides[d];
      r = Math.floor(r / shape[d]);
    }
    out.push(o);
  }
  return out;
}

/** A random view of logical shape `shape` inside a larger buffer: permuted storage, broadcast batch, offset. */
const viewArb = (shape: number[], nb: number) =>
  fc.record({
    transposed: fc.boolean(),
    broadcastBatch: fc.boolean(),
    pad: fc.nat(3),
    offset: fc.nat(5),
  }).map(({ transposed, broadcastBatch, pad, offset }) => {
    const r = shape.length, [R, Cc] = shape.slice(r - 2);
    const strides = new Array<number>(r);
    const inner = transposed ? { row: 1, col: R + pad } : { row: Cc + pad, col: 1 };
    strides[r - 2] = inner.row;
    strides[r - 1] = inner.col;
    let span = transposed ? (R + pad) * Cc : R * (Cc + pad);
    for (let d = nb - 1; d >= 0; d--) {
      strides[d] = broadcastBatch ? 0 : span;
      if (!broadcastBatch) span *= shape[d];
    }
    const size = offset + offsets(shape, strides, 0).reduce((a, b) => Math.max(a, b), 0) + 1;
    return { shape, strides, offset, size } as StridedLike & { size: number };
  });

test("cuda gemm plan: the column-major call computes the row-major product of any plannable views", () => {
  fc.assert(
    fc.property(
      fc.record({
        batch: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
        M: fc.integer({ min: 1, max: 4 }),
        K: fc.integer({ min: 1, max: 4 }),
        N: fc.integer({ min: 1, max: 4 }),
      })
        .chain(({ batch, M, K, N }) =>
          fc.tuple(
            viewArb([...batch, M, K], batch.length),
            viewArb([...batch, K, N], batch.length),
            fc.constant({ batch, M, K, N }),
          )
        ),
      ([a, b, { batch, M, K, N }]) => {
        const A = Float64Array.from({ length: a.size }, (_, i) => ((i * 7) % 11) - 5);
        const B = Float64Array.from({ length: b.size }, (_, i) => ((i * 5) % 13) - 6);
        const p = planGemm(a, b);
        // Broadcast batches flatten to stride 0 only when every batch dim is broadcast; else a copy is asked for.
        if ("copy" in p) {
          assert(
            batch.filter((d) => d > 1).length > 1,
            `only mixed broadcast batches need a copy, got copy of ${p.copy}`,
          );
          return;
        }
        const C = new Float64Array(prod(batch) * M * N);
        colMajorGemm(p.plan, A, B, C);
        const ao = offsets(a.shape, a.strides, a.offset),
          bo = offsets(b.shape, b.strides, b.offset);
        for (let t = 0; t < prod(batch); t++) {
          for (let i = 0; i < M; i++) {
            for (let j = 0; j < N; j++) {
              let s = 0;
              for (let l = 0; l < K; l++) {
                s += A[ao[t * M * K + i * K + l]] * B[bo[t * K * N + l * N + j]];
              }
              assertEquals(C[t * M * N + i * N + j], s, `batch ${t} (${i}, ${j})`);
            }
          }
        }
      },
    ),
    { numRuns: 300 },
  );
});

test("cuda gemm plan: neither axis unit-strided → that operand is copied", () => {
  const a = { shape: [2, 3], strides: [6, 2], offset: 0 },
    b = { shape: [3, 2], strides: [2, 1], offset: 0 };
  assertEquals("copy" in planGemm(a, b) && planGemm(a, b), { copy: "a" });
  const t = planGemm({ shape: [4, 3], strides: [1, 4], offset: 2 }, {
    shape: [3, 5],
    strides: [5, 1],
    offset: 0,
  });
  assert(
    "plan" in t && t.plan.second.trans && t.plan.second.ld === 4 && !t.plan.first.trans &&
      t.plan.first.ld === 5,
    "a transposed view becomes a trans flag",
  );
});

const viewsArb = fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 5 }).chain((shape) =>
  fc.tuple(
    fc.constant(shape),
    fc.array(
      fc.tuple(
        fc.shuffledSubarray(shape.map((_, i) => i), {
          minLength: shape.length,
          maxLength: shape.length,
        }),
        fc.array(fc.boolean(), { minLength: shape.length, maxLength: shape.length }),
        fc.nat(4),
      ),
      { minLength: 1, maxLength: 3 },
    ),
  )
).map(([shape, specs]) => ({
  shape,
  views: specs.map(([perm, bcast, offset]) => {
    // Storage laid out in `perm` order, some axes broadcast.
    const strides = new Array<number>(shape.length).fill(0);
    let span = 1;
    for (let i = perm.length - 1; i >= 0; i--) {
      const d = perm[i];
      strides[d] = bcast[d] ? 0 : span;
      if (!bcast[d]) span *= shape[d];
    }
    return { strides, offset };
  }),
}));

test("cuda elementwise plan: merged dims reach exactly the same offsets in every view", () => {
  fc.assert(
    fc.property(viewsArb, ({ shape, views }) => {
      const [out, ...ins] = views;
      const p = planElementwise(shape, out, ins);
      assertEquals(p.n, prod(shape));
      assert(p.shape.length <= shape.length && p.shape.every((d) => d > 1), "size-1 dims dropped");
      [out, ...ins].forEach((v, i) => {
        const q = i === 0 ? p.out : p.inputs[i - 1];
        assertEquals(
          offsets(p.shape, q.strides, q.offset),
          offsets(shape, v.strides, v.offset),
          `view ${i}`,
        );
      });
      if (p.kernel === "ew_flat") {
        assert([p.out, ...p.inputs].every((q) => p.shape.length === 0 || q.strides[0] === 1));
      }
    }),
    { numRuns: 300 },
  );
  // Contiguous views of any rank collapse to one flat loop; ranks beyond the limit still run once merged.
  assertEquals(
    planElementwise([2, 3, 4], { strides: [12, 4, 1], offset: 0 }, [{
      strides: [12, 4, 1],
      offset: 5,
    }]).kernel,
    "ew_flat",
  );
  const deep = Array(10).fill(2), cs = deep.map((_, i) => 2 ** (9 - i));
  assertEquals(
    planElementwise(deep, { strides: cs, offset: 0 }, [{ strides: cs, offset: 0 }]).shape,
    [1024],
  );
  assertEquals(
    planElementwise([2, 3], { strides: [3, 1], offset: 0 }, [{ strides: [0, 1], offset: 0 }])
      .kernel,
    "ew_strided32",
  );
  assertEquals(
    planElementwise([2 ** 16, 2 ** 16], { strides: [2 ** 16, 1], offset: 0 }, [{
      strides: [1, 2 ** 16],
      offset: 0,
    }]).kernel,
    "ew_strided64",
  );
  assertThrows(
    () =>
      planElementwise(deep, { strides: cs, offset: 0 }, [{
        strides: deep.map((_, i) => (i % 2 ? 0 : cs[i])),
        offset: 0,
      }]),
    "exceeds the kernels' limit of 8",
  );
  assertEquals(collapse([3, 1, 4], [[4, 99, 1]]), { shape: [12], strides: [[1]] });
});

test("cuda reduce plan: kept and reduced axes enumerate the input exactly once, in output order", () => {
  fc.assert(
    fc.property(
      viewsArb,
      fc.array(fc.boolean(), { minLength: 5, maxLength: 5 }),
      ({ shape, views }, pick) => {
        const axes = shape.map((_, d) => d).filter((d) => pick[d]);
        const v = views[0];
        const p = planReduce(shape, v.strides, axes, 132);
        const kept = offsets(p.kept.shape, p.kept.strides, v.offset),
          red = offsets(p.reduced.shape, p.reduced.strides, 0);
        assertEquals(kept.length, p.nOut);
        assertEquals(red.length, p.rn);
        // A split leaves every chunk 1024 elements or more (never an empty one).
        assert(p.parts === 1 || (p.warp && p.rn / p.parts >= 1024), `parts ${p.parts} of ${p.rn}`);
        // Expected: for each output (kept axes in order), the offsets of its reduced elements.
        const keptAxes = shape.map((_, d) => d).filter((d) => !pick[d]);
        const all = offsets(shape, v.strides, v.offset);
        const groups = new Map<string, number[]>();
        all.forEach((o, i) => {
          let r = i;
          const idx = new Array<number>(shape.length);
          for (let d = shape.length - 1; d >= 0; d--) {
            (idx[d] = r % shape[d]), (r = Math.floor(r / shape[d]));
          }
          const key = keptAxes.map((d) => idx[d]).join(",");
          groups.set(key, [...(groups.get(key) ?? []), o]);
        });
        const expected = [...groups.values()].map((g) => g.sort((a, b) => a - b));
        const got = kept.map((k) => red.map((r) => k + r).sort((a, b) => a - b));
        assertEquals(got, expected);
      },
    ),
    { numRuns: 300 },
  );
  assert(planReduce([64, 4096], [4096, 1], [1], 132).warp, "row sums: a warp per row");
  assert(
    !planReduce([512, 65536], [65536, 1], [0], 132).warp,
    "column sums over many outputs: a thread per output",
  );
  assert(
    planReduce([65536, 512], [512, 1], [0], 132).warp,
    "few outputs: a warp each, for parallelism",
  );
  // Too few outputs to fill the GPU even a warp each: each output's elements in chunks.
  assertEquals(
    planReduce([8192, 512], [512, 1], [0, 1], 132).parts,
    1024,
    "a full sum: 1024 chunks",
  );
  assertEquals(planReduce([64, 4096], [4096, 1], [1], 132).parts, 4, "64 rows of 4096: 4 each");
  assertEquals(planReduce([65536, 512], [512, 1], [1], 132).parts, 1, "many rows: no split");
  assertEquals(planReduce([512, 65536], [65536, 1], [0], 132).parts, 1, "a thread per output");
});

test("cuda allocator: blocks reused by rounded size; 10,000 steps hold flat memory; OOM empties the cache once", () => {
  let next = 0x1000n, live = 0, allocs = 0;
  const raw = {
    alloc: (b: number) => (allocs++, live += b, (next += BigInt(b))),
    free: (_p: bigint) => void (live -= 0),
  };
  const a = cachingAllocator(raw, (e) => e instanceof CudaError && e.code === 2);
  assertEquals([
    roundSize(0),
    roundSize(1),
    roundSize(512),
    roundSize(513),
    roundSize(1 << 20),
    roundSize((1 << 20) + 1),
  ], [0, 512, 512, 1024, 2 << 20, 2 << 20]);
  const sizes = [4, 2048 * 4, 8192 * 512 * 4, 3, 100_000];
  for (let step = 0; step < 10_000; step++) {
    const blocks = sizes.map((s) => a.alloc(s));
    const tmp = a.alloc(777);
    a.free(tmp);
    blocks.forEach((b) => a.free(b));
  }
  const s = a.stats();
  assertEquals(s.driverAllocs, sizes.length + 1, "only the first step reached the driver");
  assertEquals(s.inUse, 0);
  assertEquals(s.cached, sizes.reduce((t, b) => t + roundSize(b), 0) + roundSize(777));
  assertEquals(Number(a.alloc(0).ptr), 0);
  // Out of memory: cached blocks go back to the driver and the request is tried once more.
  let fail = 1;
  const freed: bigint[] = [];
  const b = cachingAllocator({
    alloc: (n) => {
      if (n > 4096 && fail-- > 0) {
        throw new CudaError("cuMemAlloc_v2", 2, "CUDA_ERROR_OUT_OF_MEMORY");
      }
      return BigInt(n);
    },
    free: (p) => void freed.push(p),
  }, (e) => e instanceof CudaError && e.code === 2);
  b.free(b.alloc(1024));
  assertEquals(b.alloc(8192).bytes, 8192);
  assertEquals(freed.length, 1);
  assertEquals(b.stats().cached, 0);
  assertThrows(() =>
    cachingAllocator({
      alloc: () => {
        throw new CudaError("cuMemAlloc_v2", 1, "CUDA_ERROR_INVALID_VALUE");
      },
      free: () => {},
    }, () => false).alloc(10), "cuMemAlloc_v2 failed");
  assert(live > 0 && allocs === sizes.length + 1);
});

test("cuda top-k: index digits cover every row length", () => {
  assertEquals([1, 256, 257, 65536, 65537, 2 ** 24, 2 ** 24 + 1, 2 ** 31 - 1].map(indexDigits), [
    1,
    1,
    2,
    2,
    3,
    3,
    4,
    4,
  ]);
});

test("cuda module cache: keys differ with the source, entries round-trip, a bad folder only misses", async () => {
  const { cacheGet, cachePut, hash64, cacheDir } = await import("../tensor/cuda/module_cache.ts");
  const { tempDir, removeDir } = await import("./cuda_tools.ts");
  assert(hash64("a") !== hash64("b") && hash64("x").length === 16, "distinct 64-bit keys");
  assertEquals(cacheDir((n) => (n === "SPARSECODER_CUDA_CACHE" ? "0" : undefined)), null);
  const dir = tempDir();
  try {
    assertEquals(cacheGet(dir, "k.bin"), null);
    cachePut(dir, "k.bin", new Uint8Array([1, 2, 3]));
    assertEquals([...cacheGet(dir, "k.bin")!], [1, 2, 3]);
    cachePut("/proc/no/such/dir", "k.bin", new Uint8Array([1]));
    assertEquals(cacheGet("/proc/no/such/dir", "k.bin"), null);
  } finally {
    removeDir(dir);
  }
});
