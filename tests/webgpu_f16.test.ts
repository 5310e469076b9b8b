// f16 on the GPU against the CPU backend's f16: matmul, top-k, scatter-add and the sparse
// products. Both backends compute 16-bit floats in f32 and round once on the write, so on inputs
// whose products and sums are exact in f32 (multiples of 1/8, below) the results must be equal
// bit for bit, rounding included; each case checks that some outputs did need rounding, so it
// could catch a wrong or double rounding. Matmul on ordinary values is also checked, within one
// f16 step plus the f32 accumulation error. The mirror (tests/webgpu_ops.test.ts) covers the other
// ops on f16.
import * as t from "../mod.ts";
import { ROW_K_MAX } from "../tensor/webgpu/topk.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";
import { f16Ref } from "./ref.ts";
import { adapterOrSkip, on } from "./webgpu_adapter.ts";

const r = await adapterOrSkip("webgpu f16");

/** A deterministic stream of integers in [lo, hi]. */
function ints(n: number, seed: number, lo: number, hi: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return lo + ((s >>> 8) % (hi - lo + 1));
  });
}
/** Multiples of 1/8 in [-8, 8] (+ shift): exact in f16, and small sums of their products are exact in f32. */
const eighths = (n: number, seed: number, shift = 0) =>
  ints(n, seed, -64, 64).map((v) => v / 8 + shift);

/** `fn`'s outputs computed on cpu and on webgpu from the same host inputs. */
async function onBoth(fn: () => t.Tensor[]): Promise<{ cpu: number[][]; gpu: number[][] }> {
  const cpu = fn().map((x) => Array.from(x.dataSync()));
  const gpu = await on(
    "webgpu",
    () => Promise.all(fn().map(async (x) => Array.from(await x.data()))),
  );
  return { cpu, gpu };
}

/** Equal bit for bit (±0 told apart, NaN equal to NaN). */
function sameValues(got: number[], want: number[], what: string): void {
  assertEquals(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) {
      throw new Error(`${what}: element ${i}: webgpu ${got[i]}, cpu ${want[i]}`);
    }
  }
}

/** Checks webgpu = cpu = the exact values rounded once to f16, and that rounding was needed somewhere. */
function exactlyRounded(
  res: { cpu: number[][]; gpu: number[][] },
  exact: number[],
  what: string,
): void {
  sameValues(res.gpu[0], res.cpu[0], what);
  sameValues(res.cpu[0], exact.map(f16Ref), `${what}: cpu vs the exact value rounded once`);
  assert(
    exact.some((v) => f16Ref(v) !== v),
    `${what}: no output needed rounding, so the case cannot tell a wrong rounding`,
  );
}

const f16 = (data: number[], shape: number[]) => t.tensor(data, { shape, dtype: "f16" });

if (r.ok) {
  const storage = r.backend.device.f16
    ? "stored as WGSL f16"
    : "stored in 32-bit words (no shader-f16)";

  test(`webgpu f16 (${storage}): batched matmul, with a transposed operand, equals the cpu's bit for bit on exact-in-f32 inputs`, async () => {
    const [nb, M, K, N] = [2, 33, 70, 45];
    const a = eighths(nb * M * K, 1), bT = eighths(nb * N * K, 2); // b given as [nb, N, K], used transposed
    const res = await onBoth(() => [t.matmul(f16(a, [nb, M, K]), t.mT(f16(bT, [nb, N, K])))]);
    const exact: number[] = [];
    for (let z = 0; z < nb; z++) {
      for (let i = 0; i < M; i++) {
        for (let j = 0; j < N; j++) {
          let s = 0;
          for (let q = 0; q < K; q++) s += a[(z * M + i) * K + q] * bT[(z * N + j) * K + q];
          exact.push(s);
        }
      }
    }
    exactlyRounded(res, exact, "matmul");
  });

  test(`webgpu f16 (${storage}): matmul on ordinary values is within one f16 step of the cpu's (f32 sums in another order)`, async () => {
    const [M, K, N] = [40, 300, 24];
    const a = ints(M * K, 3, -1000, 1000).map((v) => v / 333),
      b = ints(K * N, 4, -1000, 1000).map((v) => v / 777);
    const res = await onBoth(() => [t.matmul(f16(a, [M, K]), f16(b, [K, N]))]);
    // The f32 sums differ by at most ~K·2⁻²⁴ of Σ|a·b| ≤ K·max|a|·max|b|; rounding each to f16 adds up to one step (2⁻¹⁰ relative).
    const bound = K * (1000 / 333) * (1000 / 777);
    assertClose(res.gpu[0], res.cpu[0], {
      rtol: 2 ** -10,
      atol: K * 2 ** -24 * bound,
      msg: "matmul",
    });
  });

  for (const [rows, n, k] of [[5, 700, 33], [2, 3000, ROW_K_MAX + 476]] as const) {
    test(`webgpu f16 (${storage}): topk k=${k} of ${rows}×${n} (${k <= ROW_K_MAX ? "workgroup radix select" : "global bitonic sort"}) with ties, NaN, ±0 and ±inf equals the cpu's`, async () => {
      const x = ints(rows * n, 5, -40, 40).map((v) => v / 4); // many ties
      x[1] = NaN, x[2] = -0, x[3] = 0, x[7] = Infinity, x[n + 4] = -Infinity, x[n + 5] = 65504;
      const res = await onBoth(() => t.topk(f16(x, [rows, n]), k));
      sameValues(res.gpu[1], res.cpu[1], "topk indices");
      sameValues(res.gpu[0], res.cpu[0], "topk values");
    });
  }

  test(`webgpu f16 (${storage}): scatterAdd with repeated indices equals the cpu's bit for bit on exact-in-f32 inputs`, async () => {
    const [rows, n, w] = [8, 200, 6]; // ~25 updates of ~100 per slot: sums past 2048, where f16 steps are 2 and more
    const base = eighths(rows * w, 6),
      idx = ints(n * w, 7, 0, rows - 1),
      upd = eighths(n * w, 8, 100);
    const res = await onBoth(
      () => [
        t.scatterAdd(
          f16(base, [rows, w]),
          t.tensor(idx, { shape: [n, w], dtype: "i32" }),
          f16(upd, [n, w]),
          0,
        ),
      ],
    );
    const exact = [...base];
    idx.forEach((row, i) => (exact[row * w + (i % w)] += upd[i]));
    exactlyRounded(res, exact, "scatterAdd");
  });

  test(`webgpu f16 (${storage}): spmm, spmmT and sddmm with repeated entries equal the cpu's bit for bit on exact-in-f32 inputs`, async () => {
    const [B, F, d, nnz] = [6, 20, 16, 300];
    const rows = ints(nnz, 9, 0, B - 1),
      cols = ints(nnz, 10, 0, F - 1),
      vals = eighths(nnz, 11, 100);
    const W = eighths(F * d, 12), G = eighths(B * d, 13);
    const coo = () => ({
      rows: t.tensor(rows, { dtype: "i32" }),
      cols: t.tensor(cols, { dtype: "i32" }),
      values: f16(vals, [nnz]),
    });
    const products = (): [number[], number[], number[]] => {
      const dec = new Array(B * d).fill(0),
        decT = new Array(F * d).fill(0),
        sampled = new Array(nnz).fill(0);
      for (let e = 0; e < nnz; e++) {
        for (let c = 0; c < d; c++) {
          dec[rows[e] * d + c] += vals[e] * W[cols[e] * d + c];
          decT[cols[e] * d + c] += vals[e] * G[rows[e] * d + c];
          sampled[e] += G[rows[e] * d + c] * W[cols[e] * d + c];
        }
      }
      return [dec, decT, sampled];
    };
    const [dec, decT, sampled] = products();
    exactlyRounded(await onBoth(() => [t.spmm(coo(), f16(W, [F, d]), B)]), dec, "spmm");
    exactlyRounded(await onBoth(() => [t.spmmT(coo(), f16(G, [B, d]), F)]), decT, "spmmT");
    exactlyRounded(
      await onBoth(
        () => [
          t.sddmm(
            f16(G, [B, d]),
            f16(W, [F, d]),
            t.tensor(rows, { dtype: "i32" }),
            t.tensor(cols, { dtype: "i32" }),
          ),
        ],
      ),
      sampled,
      "sddmm",
    );
  });
}
