/**
 * Gather, scatter-add and the sparse-dense products. Accumulating kernels add into the output
 * with atomics (a compare-and-swap loop for f32, which WGSL lacks an atomic add for), so
 * repeated indices add up; the order of those additions, and so the last bits, may vary.
 * Out-of-range indices are skipped (gather reads 0): a kernel cannot raise an error.
 */
import type { View } from "../backend.ts";
import type { DType } from "../dtype.ts";
import { contiguousStrides, sizeOf } from "../shape.ts";
import { ENTRY_ARGS, type GBuf, GROUP_ID, type Runtime, WG } from "./runtime.ts";
import { bindings, convert, ld, sty, wty } from "./wgsl.ts";
import { cast, copyInto } from "./elementwise.ts";

/** WGSL statement adding `v` (a value of the storage type) to atomic slot `out0[at]`. */
function atomicAdd(dt: DType, at: string, v: string): string {
  if (wty(dt) !== "f32") return `atomicAdd(&out0[${at}], ${v});`;
  return `loop {
      let old = atomicLoad(&out0[${at}]);
      let r = atomicCompareExchangeWeak(&out0[${at}], old, bitcast<u32>(bitcast<f32>(old) + ${v}));
      if (r.exchanged) { break; }
    }`;
}

/** f16/bf16 sums are kept in f32 and rounded once at the end, as the CPU does. */
function round16(rt: Runtime, buf: GBuf, dtype: DType, shape: number[]): GBuf {
  if (dtype !== "f16" && dtype !== "bf16") return buf;
  const r = cast(
    rt,
    { buf, dtype: "f32", shape, strides: contiguousStrides(shape), offset: 0 },
    dtype,
  );
  rt.free(buf);
  return r;
}

// Shared index walk: meta [n, nd, axisLen, off0, off1, shape, strides0 (axis zeroed), strides1, strides2]
const WALK = `
  let i = ${GROUP_ID} * ${WG}u + lid.x;
  if (i >= prm[0]) { return; }
  let nd = prm[1]; let alen = prm[2];
  var o0 = 0u; var o1 = prm[3]; var o2 = prm[4];
  {
    var rem = i;
    for (var d = i32(nd) - 1; d >= 0; d--) {
      let ud = u32(d);
      let sz = prm[6u + ud];
      let c = rem % sz;
      rem = rem / sz;
      o0 = o0 + c * prm[6u + nd + ud];
      o1 = o1 + c * prm[6u + 2u * nd + ud];
      o2 = o2 + c * prm[6u + 3u * nd + ud];
    }
  }`;

export function gather(rt: Runtime, x: View, idx: View, axis: number): GBuf {
  const n = sizeOf(idx.shape);
  const out = rt.alloc(n, x.dtype);
  if (n === 0) return out;
  const xs = x.strides.map((s, d) => (d === axis ? 0 : s));
  // o1 walks idx, o2 walks x with the gathered axis held at 0; o0 is unused (contiguous output).
  const meta = [
    n,
    idx.shape.length,
    x.shape[axis],
    idx.offset,
    x.offset,
    x.strides[axis],
    ...idx.shape,
    ...xs.map(() => 0),
    ...idx.strides,
    ...xs,
  ];
  const code = `${bindings([x.dtype, "i32"], [x.dtype])}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {${WALK}
  let j = in1[o1];
  var v = ${sty(x.dtype)}(0);
  if (j >= 0 && u32(j) < alen) { v = in0[o2 + u32(j) * prm[5]]; }
  out0[i] = v;
}`;
  rt.dispatch(code, [x.buf as GBuf, idx.buf as GBuf, out], meta, Math.ceil(n / WG));
  return out;
}

export function scatterAdd(rt: Runtime, base: View, idx: View, upd: View, axis: number): GBuf {
  const outDtype = base.dtype === "f16" || base.dtype === "bf16" ? "f32" : base.dtype;
  const out = rt.alloc(sizeOf(base.shape), outDtype);
  copyInto(rt, base, out, base.shape, base.shape.map(() => 0), outDtype);
  const n = sizeOf(idx.shape);
  if (n > 0) {
    const os = contiguousStrides(base.shape);
    const meta = [
      n,
      idx.shape.length,
      base.shape[axis],
      idx.offset,
      upd.offset,
      os[axis],
      ...idx.shape,
      ...os.map((s, d) => (d === axis ? 0 : s)),
      ...idx.strides,
      ...upd.strides,
    ];
    const code = `${bindings(["i32", upd.dtype], [outDtype], true)}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {${WALK}
  let j = in0[o1];
  if (j < 0 || u32(j) >= alen) { return; }
  let at = o0 + u32(j) * prm[5];
  let v = ${ld(upd.dtype, "in1[o2]")};
  ${atomicAdd(outDtype, "at", "v")}
}`;
    rt.dispatch(code, [idx.buf as GBuf, upd.buf as GBuf, out], meta, Math.ceil(n / WG));
  }
  return round16(rt, out, base.dtype, [...base.shape]);
}

export function spmm(
  rt: Runtime,
  rows: View,
  cols: View,
  vals: View,
  dense: View,
  transpose: boolean,
  outRows: number,
): GBuf {
  const d = dense.shape[1], inRows = dense.shape[0];
  const n = sizeOf(vals.shape);
  const acc = dense.dtype === "f16" || dense.dtype === "bf16" ? "f32" : dense.dtype;
  const out = rt.zeros(outRows * d);
  if (n * d > 0) {
    const [dst, src] = transpose ? ["in1", "in0"] : ["in0", "in1"];
    const code = `${bindings(["i32", "i32", vals.dtype, dense.dtype], [acc], true)}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {
  let t = ${GROUP_ID} * ${WG}u + lid.x;
  let d = prm[1];
  if (t >= prm[0] * d) { return; }
  let e = t / d; let c = t % d;
  let o = ${dst}[prm[4] + e]; let s = ${src}[prm[5] + e];
  if (o < 0 || u32(o) >= prm[2] || s < 0 || u32(s) >= prm[3]) { return; }
  let w = ${ld(vals.dtype, "in2[prm[6] + e]")};
  if (w == ${wty(vals.dtype)}(0)) { return; }
  let v = w * ${ld(dense.dtype, "in3[prm[7] + u32(s) * d + c]")};
  let at = u32(o) * d + c;
  ${atomicAdd(acc, "at", "v")}
}`;
    const meta = [n, d, outRows, inRows, rows.offset, cols.offset, vals.offset, dense.offset];
    rt.dispatch(
      code,
      [rows.buf as GBuf, cols.buf as GBuf, vals.buf as GBuf, dense.buf as GBuf, out],
      meta,
      Math.ceil((n * d) / WG),
    );
  }
  return round16(rt, out, dense.dtype, [outRows, d]);
}

export function sddmm(rt: Runtime, a: View, b: View, rows: View, cols: View): GBuf {
  const n = sizeOf(rows.shape), d = a.shape[1];
  const out = rt.alloc(n, a.dtype);
  if (n === 0) return out;
  const t = wty(a.dtype);
  const code = `${bindings([a.dtype, b.dtype, "i32", "i32"], [a.dtype])}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {
  let i = ${GROUP_ID} * ${WG}u + lid.x;
  if (i >= prm[0]) { return; }
  let d = prm[1];
  let r = in2[prm[4] + i]; let c = in3[prm[5] + i];
  var s = ${t}(0);
  if (r >= 0 && u32(r) < prm[2] && c >= 0 && u32(c) < prm[3]) {
    let ab = prm[6] + u32(r) * d; let bb = prm[7] + u32(c) * d;
    for (var j = 0u; j < d; j++) { s = s + ${ld(a.dtype, "in0[ab + j]")} * ${
    ld(b.dtype, "in1[bb + j]")
  }; }
  }
  out0[i] = ${convert("s", a.dtype, a.dtype)};
}`;
  const meta = [n, d, a.shape[0], b.shape[0], rows.offset, cols.offset, a.offset, b.offset];
  rt.dispatch(
    code,
    [a.buf as GBuf, b.buf as GBuf, rows.buf as GBuf, cols.buf as GBuf, out],
    meta,
    Math.ceil(n / WG),
  );
  return out;
}
