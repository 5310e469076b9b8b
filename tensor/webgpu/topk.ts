/**
 * Top-k along the last axis, sorted descending, the lower index first on ties, NaN highest (the
 * CPU's order). Values become order-preserving u32 keys. For k ≤ 1024 one workgroup owns a row:
 * a 4-pass radix select (8 bits a pass, histogram in workgroup memory) finds the k-th key, the
 * keys above it and the lowest-indexed ties are gathered, and a bitonic sort orders those k in
 * workgroup memory. Larger k (batch top-k takes k·B of a flattened batch) sorts each padded row
 * with a global bitonic network, one dispatch per stage.
 */
import type { View } from "../backend.ts";
import type { DType } from "../dtype.ts";
import { sizeOf } from "../shape.ts";
import { ENTRY_ARGS, type GBuf, GROUP_ID, type Runtime, WG } from "./runtime.ts";
import { bindings, ld, wty } from "./wgsl.ts";

export const ROW_K_MAX = 1024;

function keyFn(dt: DType): string {
  const t = wty(dt);
  const body = t === "f32"
    ? `if (isnan_(v)) { return 0xffffffffu; }
  var b = bitcast<u32>(v);
  if (b == 0x80000000u) { b = 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);`
    : t === "i32"
    ? "return bitcast<u32>(v) ^ 0x80000000u;"
    : "return v;";
  return `fn key_(v: ${t}) -> u32 {\n  ${body}\n}`;
}

/** meta head shared by both paths: [rows, n, stride, offset, k, nLead, leadShape, leadStrides, ...]. */
function headMeta(x: View, k: number): number[] {
  const r = x.shape.length;
  const lead = x.shape.slice(0, r - 1);
  return [
    sizeOf(lead),
    x.shape[r - 1],
    x.strides[r - 1],
    x.offset,
    k,
    lead.length,
    ...lead,
    ...x.strides.slice(0, r - 1),
  ];
}

const ROW_BASE = `
  let n = prm[1]; let st = prm[2]; let k = prm[4]; let nl = prm[5];
  var base = prm[3];
  {
    var rem = row;
    for (var d = i32(nl) - 1; d >= 0; d--) {
      let sz = prm[6u + u32(d)];
      base = base + (rem % sz) * prm[6u + nl + u32(d)];
      rem = rem / sz;
    }
  }`;

function rowShader(dt: DType, k2: number): string {
  return `${bindings([dt], [dt, "i32"])}
${keyFn(dt)}
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> scan: array<u32, 256>;
var<workgroup> skey: array<u32, ${k2}>;
var<workgroup> sidx: array<u32, ${k2}>;
var<workgroup> sel: array<u32, 3>;
var<workgroup> cnt: atomic<u32>;
fn better(a: u32, b: u32) -> bool {
  return skey[a] > skey[b] || (skey[a] == skey[b] && sidx[a] < sidx[b]);
}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {
  let row = ${GROUP_ID};
  if (row >= prm[0]) { return; }
  ${ROW_BASE}
  var prefix = 0u; var mask = 0u; var want = k;
  for (var ps = 0u; ps < 4u; ps++) {
    let shift = 24u - 8u * ps;
    atomicStore(&hist[lid.x], 0u);
    workgroupBarrier();
    for (var j = lid.x; j < n; j = j + ${WG}u) {
      let key = key_(${ld(dt, "in0[base + j * st]")});
      if ((key & mask) == prefix) { atomicAdd(&hist[(key >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    if (lid.x == 0u) {
      var above = 0u;
      var dg = 255u;
      loop {
        let c = atomicLoad(&hist[dg]);
        if (above + c >= want || dg == 0u) { break; }
        above = above + c;
        dg = dg - 1u;
      }
      sel[0] = prefix | (dg << shift);
      sel[1] = mask | (255u << shift);
      sel[2] = want - above;
    }
    workgroupBarrier();
    prefix = sel[0]; mask = sel[1]; want = sel[2];
    workgroupBarrier();
  }
  // prefix is now the k-th largest key; 'want' of the keys equal to it are taken, lowest index first.
  if (lid.x == 0u) { atomicStore(&cnt, 0u); }
  for (var t = lid.x; t < ${k2}u; t = t + ${WG}u) { skey[t] = 0u; sidx[t] = 0xffffffffu; }
  workgroupBarrier();
  let chunk = (n + ${WG - 1}u) / ${WG}u;
  let lo = min(n, lid.x * chunk); let hi = min(n, lo + chunk);
  var eq = 0u;
  for (var j = lo; j < hi; j++) {
    let key = key_(${ld(dt, "in0[base + j * st]")});
    if (key > prefix) { let s = atomicAdd(&cnt, 1u); skey[s] = key; sidx[s] = j; }
    if (key == prefix) { eq = eq + 1u; }
  }
  scan[lid.x] = eq;
  workgroupBarrier();
  if (lid.x == 0u) {
    var run = 0u;
    for (var t = 0u; t < ${WG}u; t++) { let c = scan[t]; scan[t] = run; run = run + c; }
  }
  workgroupBarrier();
  var rank = scan[lid.x];
  let above = k - want;
  for (var j = lo; j < hi && rank < want; j++) {
    let key = key_(${ld(dt, "in0[base + j * st]")});
    if (key == prefix) { skey[above + rank] = key; sidx[above + rank] = j; rank = rank + 1u; }
  }
  workgroupBarrier();
  for (var size = 2u; size <= ${k2}u; size = size << 1u) {
    for (var stride = size >> 1u; stride > 0u; stride = stride >> 1u) {
      for (var t = lid.x; t < ${k2 / 2}u; t = t + ${WG}u) {
        let i = 2u * stride * (t / stride) + t % stride;
        let j = i + stride;
        let swap = select(better(i, j), better(j, i), (i & size) == 0u);
        if (swap) {
          let a = skey[i]; skey[i] = skey[j]; skey[j] = a;
          let b = sidx[i]; sidx[i] = sidx[j]; sidx[j] = b;
        }
      }
      workgroupBarrier();
    }
  }
  for (var t = lid.x; t < k; t = t + ${WG}u) {
    let j = sidx[t];
    out0[row * k + t] = in0[base + j * st];
    out1[row * k + t] = i32(j);
  }
}`;
}

// Global path: keys/indices in scratch buffers of rows × P (P = next power of two ≥ n).
function initShader(dt: DType): string {
  return `${bindings([dt], ["bool", "bool"])}
${keyFn(dt)}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {
  let t = ${GROUP_ID} * ${WG}u + lid.x;
  let P = prm[prm[5] * 2u + 6u];
  if (t >= prm[0] * P) { return; }
  let row = t / P; let j = t % P;
  ${ROW_BASE}
  if (j < n) { out0[t] = key_(${
    ld(dt, "in0[base + j * st]")
  }); out1[t] = j; } else { out0[t] = 0u; out1[t] = 0xffffffffu; }
  _ = k;
}`;
}

const STEP = `${bindings([], ["bool", "bool"])}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {
  let t = ${GROUP_ID} * ${WG}u + lid.x;
  let P = prm[1]; let size = prm[2]; let stride = prm[3];
  let half = P / 2u;
  if (t >= prm[0] * half) { return; }
  let r = t / half; let tt = t % half;
  let i = r * P + 2u * stride * (tt / stride) + tt % stride;
  let j = i + stride;
  let ka = out0[i]; let kb = out0[j]; let ia = out1[i]; let ib = out1[j];
  let jBetter = kb > ka || (kb == ka && ib < ia);
  let iBetter = ka > kb || (ka == kb && ia < ib);
  if (select(iBetter, jBetter, ((i - r * P) & size) == 0u)) {
    out0[i] = kb; out0[j] = ka; out1[i] = ib; out1[j] = ia;
  }
}`;

function writeShader(dt: DType): string {
  return `${bindings([dt, "bool"], [dt, "i32"])}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {
  let t = ${GROUP_ID} * ${WG}u + lid.x;
  let P = prm[prm[5] * 2u + 6u];
  let kk = prm[4];
  if (t >= prm[0] * kk) { return; }
  let row = t / kk; let c = t % kk;
  ${ROW_BASE}
  let j = in1[row * P + c];
  out0[t] = in0[base + j * st];
  out1[t] = i32(j);
  _ = n; _ = k;
}`;
}

export function topk(rt: Runtime, x: View, k: number): [GBuf, GBuf] {
  const meta = headMeta(x, k);
  const rows = meta[0], n = meta[1];
  const vals = rt.alloc(rows * k, x.dtype), idx = rt.alloc(rows * k, "i32");
  if (rows * k === 0) return [vals, idx];
  if (k <= ROW_K_MAX) {
    const k2 = Math.max(2, 2 ** Math.ceil(Math.log2(k)));
    rt.dispatch(rowShader(x.dtype, k2), [x.buf as GBuf, vals, idx], meta, rows);
    return [vals, idx];
  }
  const P = 2 ** Math.ceil(Math.log2(n));
  const keys = rt.alloc(rows * P), ids = rt.alloc(rows * P);
  rt.dispatch(
    initShader(x.dtype),
    [x.buf as GBuf, keys, ids],
    [...meta, P],
    Math.ceil((rows * P) / WG),
  );
  const steps = [];
  for (let size = 2; size <= P; size *= 2) {
    for (let stride = size / 2; stride > 0; stride /= 2) {
      steps.push({
        code: STEP,
        bufs: [keys, ids],
        meta: [rows, P, size, stride],
        groups: Math.ceil((rows * P) / 2 / WG),
      });
    }
  }
  rt.dispatchAll(steps);
  rt.dispatch(
    writeShader(x.dtype),
    [x.buf as GBuf, ids, vals, idx],
    [...meta, P],
    Math.ceil((rows * k) / WG),
  );
  rt.free(keys);
  rt.free(ids);
  return [vals, idx];
}
