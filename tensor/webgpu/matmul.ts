/**
 * Batched matmul tiled through workgroup memory: each workgroup computes a 64×64 output tile,
 * 256 invocations holding 4×4 accumulators each, stepping through K in slices of 16 staged in
 * workgroup memory. Operands are read through their strides, so transposed views (and broadcast
 * batch dims, stride 0) are used in place.
 */
import type { View } from "../backend.ts";
import type { DType } from "../dtype.ts";
import { ENTRY_ARGS, type GBuf, GROUP_ID, type Runtime } from "./runtime.ts";
import { bindings, convert, ld, wty } from "./wgsl.ts";

const TILE = 64, BK = 16;

// meta: [M, N, K, nb, batches, offA, offB, saM, saK, sbK, sbN, batchShape, batchStridesA, batchStridesB]
function shader(dt: DType, outDtype: DType): string {
  const t = wty(dt);
  // The 4×4 block is unrolled into scalars: indexed local arrays can end up in memory.
  const ij = [0, 1, 2, 3].flatMap((i) => [0, 1, 2, 3].map((j) => [i, j]));
  const decl = ij.map(([i, j]) => `  var c${i}${j} = ${t}(0);`).join("\n");
  const body =
    [0, 1, 2, 3].map((i) =>
      `      let a${i} = As[kk * ${TILE}u + ty * 4u + ${i}u];\n      let b${i} = Bs[kk * ${TILE}u + tx * 4u + ${i}u];`
    ).join("\n") + "\n" +
    ij.map(([i, j]) => `      c${i}${j} = c${i}${j} + a${i} * b${j};`).join("\n");
  const store = ij.map(([i, j]) =>
    `  if (m0 + ty * 4u + ${i}u < M && n0 + tx * 4u + ${j}u < N) { out0[ob + (m0 + ty * 4u + ${i}u) * N + n0 + tx * 4u + ${j}u] = ${
      convert(`c${i}${j}`, dt, outDtype)
    }; }`
  ).join("\n");
  return `${bindings([dt, dt], [outDtype])}
var<workgroup> As: array<${t}, ${TILE * BK}>;
var<workgroup> Bs: array<${t}, ${TILE * BK}>;
@compute @workgroup_size(256)
fn main(${ENTRY_ARGS}) {
  let M = prm[0]; let N = prm[1]; let K = prm[2]; let nb = prm[3];
  let tm = (M + ${TILE - 1}u) / ${TILE}u; let tn = (N + ${TILE - 1}u) / ${TILE}u;
  let g = ${GROUP_ID};
  let per = tm * tn;
  let bi = g / per;
  if (bi >= prm[4]) { return; }
  let tile = g % per;
  let m0 = (tile / tn) * ${TILE}u; let n0 = (tile % tn) * ${TILE}u;
  var offA = prm[5]; var offB = prm[6];
  let saM = prm[7]; let saK = prm[8]; let sbK = prm[9]; let sbN = prm[10];
  {
    var rem = bi;
    for (var d = i32(nb) - 1; d >= 0; d--) {
      let sz = prm[11u + u32(d)];
      let c = rem % sz;
      rem = rem / sz;
      offA = offA + c * prm[11u + nb + u32(d)];
      offB = offB + c * prm[11u + 2u * nb + u32(d)];
    }
  }
  let tx = lid.x % 16u; let ty = lid.x / 16u;
${decl}
  for (var k0 = 0u; k0 < K; k0 = k0 + ${BK}u) {
    for (var l = 0u; l < 4u; l++) {
      let e = lid.x + l * 256u;
      let am = e / ${BK}u; let ak = e % ${BK}u;
      let gm = m0 + am; let gk = k0 + ak;
      var va = ${t}(0);
      if (gm < M && gk < K) { va = ${ld(dt, "in0[offA + gm * saM + gk * saK]")}; }
      As[ak * ${TILE}u + am] = va;
      let bk = e / ${TILE}u; let bn = e % ${TILE}u;
      let hk = k0 + bk; let gn = n0 + bn;
      var vb = ${t}(0);
      if (hk < K && gn < N) { vb = ${ld(dt, "in1[offB + hk * sbK + gn * sbN]")}; }
      Bs[bk * ${TILE}u + bn] = vb;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk++) {
${body}
    }
    workgroupBarrier();
  }
  let ob = bi * M * N;
${store}
}`;
}

export function matmul(rt: Runtime, a: View, b: View, outDtype: DType): GBuf {
  const r = a.shape.length;
  const M = a.shape[r - 2], K = a.shape[r - 1], N = b.shape[r - 1];
  const batch = a.shape.slice(0, r - 2);
  const batches = batch.reduce((s, d) => s * d, 1);
  const out = rt.alloc(batches * M * N, outDtype);
  if (batches * M * N === 0) return out;
  if (K === 0) {
    rt.free(out);
    return rt.zeros(batches * M * N, outDtype);
  }
  const meta = [
    M,
    N,
    K,
    batch.length,
    batches,
    a.offset,
    b.offset,
    a.strides[r - 2],
    a.strides[r - 1],
    b.strides[r - 2],
    b.strides[r - 1],
    ...batch,
    ...a.strides.slice(0, r - 2),
    ...b.strides.slice(0, r - 2),
  ];
  const groups = Math.ceil(M / TILE) * Math.ceil(N / TILE) * batches;
  rt.dispatch(shader(a.dtype, outDtype), [a.buf as GBuf, b.buf as GBuf, out], meta, groups);
  return out;
}
