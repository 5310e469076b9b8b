/**
 * Reductions over any set of axes, arg-reductions and scans. A reduction of many elements per
 * output runs one workgroup per output (strided partial folds, then a tree in workgroup memory);
 * short ones run one invocation per output. Accumulation is in the storage type (f32 for floats).
 */
import type { ArgReduceOp, ReduceOp, View } from "../backend.ts";
import type { DType } from "../dtype.ts";
import { contiguousStrides, sizeOf } from "../shape.ts";
import { ENTRY_ARGS, type GBuf, GROUP_ID, type Runtime, WG } from "./runtime.ts";
import { bindings, convert, ld, wty } from "./wgsl.ts";

/** WGSL that turns `idx` (row-major over meta's shape at `at`, `nd` axes) into an offset `off`. */
function unravel(idx: string, nd: string, shapeAt: string, stridesAt: string, off: string): string {
  return `{
    var rem = ${idx};
    for (var d = i32(${nd}) - 1; d >= 0; d--) {
      let sz = prm[${shapeAt} + u32(d)];
      ${off} = ${off} + (rem % sz) * prm[${stridesAt} + u32(d)];
      rem = rem / sz;
    }
  }`;
}

function identity(op: ReduceOp, t: string): string {
  if (op === "sum") return `${t}(0)`;
  if (t === "f32") return op === "max" ? "-inf_()" : "inf_()";
  if (t === "i32") return op === "max" ? "i32(-2147483647 - 1)" : "2147483647";
  return op === "max" ? "0u" : "0xffffffffu";
}

function fold(op: ReduceOp, t: string, acc: string, a: string): string {
  if (op === "sum") return `${acc} + ${a}`;
  const cmp = op === "max" ? ">" : "<";
  return t === "f32"
    ? `select(${acc}, ${a}, (${a} ${cmp} ${acc} && !isnan_(${acc})) || isnan_(${a}))`
    : `${op}(${acc}, ${a})`;
}

// meta: [nOut, nKeep, nRed, redSize, offset, keepShape, keepStrides, redShape, redStrides]
const KS = "5u", KT = "(5u + nk)", RS = "(5u + 2u * nk)", RT = "(5u + 2u * nk + nr)";

function reduceShader(op: ReduceOp, dt: DType, outDtype: DType, perGroup: boolean): string {
  const t = wty(dt);
  const head = `${bindings([dt], [outDtype])}
${perGroup ? `var<workgroup> part: array<${t}, ${WG}>;` : ""}
@compute @workgroup_size(${perGroup ? WG : 64})
fn main(${ENTRY_ARGS}) {
  let nk = prm[1]; let nr = prm[2]; let total = prm[3];
  let o = ${perGroup ? GROUP_ID : `${GROUP_ID} * 64u + lid.x`};
  ${perGroup ? "" : "if (o >= prm[0]) { return; }"}
  var base = prm[4];
  ${unravel("o", "nk", KS, KT, "base")}
  var acc = ${identity(op, t)};
  for (var j = ${perGroup ? "lid.x" : "0u"}; j < total; j = j + ${perGroup ? `${WG}u` : "1u"}) {
    var off = base;
    ${unravel("j", "nr", RS, RT, "off")}
    let a = ${ld(dt, "in0[off]")};
    acc = ${fold(op, t, "acc", "a")};
  }`;
  if (!perGroup) return `${head}\n  out0[o] = ${convert("acc", dt, outDtype)};\n}`;
  return `${head}
  part[lid.x] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid.x < s) { let a = part[lid.x + s]; let b = part[lid.x]; part[lid.x] = ${
    fold(op, t, "b", "a")
  }; }
    workgroupBarrier();
  }
  if (lid.x == 0u && o < prm[0]) { out0[o] = ${convert("part[0]", dt, outDtype)}; }
}`;
}

export function reduce(
  rt: Runtime,
  op: ReduceOp,
  x: View,
  axes: readonly number[],
  outDtype: DType,
): GBuf {
  const keep = x.shape.map((_, d) => d).filter((d) => !axes.includes(d));
  const nOut = sizeOf(keep.map((d) => x.shape[d]));
  const total = sizeOf(axes.map((d) => x.shape[d]));
  const out = rt.alloc(nOut, outDtype);
  if (nOut === 0) return out;
  const meta = [
    nOut,
    keep.length,
    axes.length,
    total,
    x.offset,
    ...keep.map((d) => x.shape[d]),
    ...keep.map((d) => x.strides[d]),
    ...axes.map((d) => x.shape[d]),
    ...axes.map((d) => x.strides[d]),
  ];
  // A workgroup per output for long reductions, unless there are many outputs and the reduced
  // axis is not the contiguous one (a column sum): there one invocation per output reads
  // neighbouring addresses across invocations.
  const innerReduced = x.strides[axes[axes.length - 1]] === 1;
  const perGroup = total > 64 && (nOut < 4096 || innerReduced);
  rt.dispatch(
    reduceShader(op, x.dtype, outDtype, perGroup),
    [x.buf as GBuf, out],
    meta,
    perGroup ? nOut : Math.ceil(nOut / 64),
  );
  return out;
}

// Lines along one axis: meta [nLines, len, stride, offset, nk, keepShape, keepStrides, outKeepStrides, outStride]
function lineMeta(x: View, axis: number): number[] {
  const keep = x.shape.map((_, d) => d).filter((d) => d !== axis);
  const os = contiguousStrides(x.shape);
  return [
    sizeOf(keep.map((d) => x.shape[d])),
    x.shape[axis],
    x.strides[axis],
    x.offset,
    keep.length,
    ...keep.map((d) => x.shape[d]),
    ...keep.map((d) => x.strides[d]),
    ...keep.map((d) => os[d]),
    os[axis],
  ];
}

const LINE_HEAD = `
  let r = ${GROUP_ID} * 64u + lid.x;
  if (r >= prm[0]) { return; }
  let len = prm[1]; let st = prm[2]; let nk = prm[4];
  var base = prm[3];
  var ob = 0u;
  {
    var rem = r;
    for (var d = i32(nk) - 1; d >= 0; d--) {
      let sz = prm[5u + u32(d)];
      let c = rem % sz;
      rem = rem / sz;
      base = base + c * prm[5u + nk + u32(d)];
      ob = ob + c * prm[5u + 2u * nk + u32(d)];
    }
  }
  let ost = prm[5u + 3u * nk];`;

export function argReduce(rt: Runtime, op: ArgReduceOp, x: View, axis: number): GBuf {
  const meta = lineMeta(x, axis);
  const out = rt.alloc(meta[0], "i32");
  const t = wty(x.dtype), cmp = op === "argmax" ? ">" : "<";
  const nan = t === "f32" ? "isnan_(v)" : "false";
  const code = `${bindings([x.dtype], ["i32"])}
@compute @workgroup_size(64)
fn main(${ENTRY_ARGS}) {${LINE_HEAD}
  var best = 0u;
  var bv = ${ld(x.dtype, "in0[base]")};
  if (!${nan.replace("v", "bv")}) {
    for (var j = 1u; j < len; j++) {
      let v = ${ld(x.dtype, "in0[base + j * st]")};
      if (${nan} || v ${cmp} bv) { best = j; bv = v; if (${nan}) { break; } }
    }
  }
  out0[r] = i32(best);
}`;
  rt.dispatch(code, [x.buf as GBuf, out], meta, Math.ceil(meta[0] / 64));
  return out;
}

export function cumsum(rt: Runtime, x: View, axis: number, reverse: boolean): GBuf {
  const meta = lineMeta(x, axis);
  const out = rt.alloc(sizeOf(x.shape), x.dtype);
  const t = wty(x.dtype);
  const code = `${bindings([x.dtype], [x.dtype])}
@compute @workgroup_size(64)
fn main(${ENTRY_ARGS}) {${LINE_HEAD}
  var acc = ${t}(0);
  for (var s = 0u; s < len; s++) {
    let j = ${reverse ? "len - 1u - s" : "s"};
    acc = acc + ${ld(x.dtype, "in0[base + j * st]")};
    out0[ob + j * ost] = ${convert("acc", x.dtype, x.dtype)};
  }
}`;
  rt.dispatch(code, [x.buf as GBuf, out], meta, Math.ceil(meta[0] / 64));
  return out;
}
