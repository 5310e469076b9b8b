/**
 * Gather (take_along_axis) over strided views, and scatter-add into a contiguous copy of the base
 * with atomics (f32, f64, i32; the backend widens 16-bit floats to f32 around it). An index out
 * of range is recorded in the error word and reported at the next readback, since a kernel cannot
 * throw; the element is skipped (gather writes 0).
 */
import type { DType } from "../../dtype.ts";
import { instantiateAll } from "./prelude.ts";

export const GATHER_DTYPES: readonly DType[] = ["f32", "f64", "f16", "bf16", "i32", "bool"];
export const SCATTER_DTYPES: readonly DType[] = ["f32", "f64", "i32"];

/** Codes written to the error word; the backend turns them into messages. */
export const ERR_CODES = { gather: 1, scatterAdd: 2, spmm: 3, sddmm: 4 } as const;

const BODY = String.raw`
// Element i of a view of 'shape': its offset through strides 'a' and through strides 'b'
// (with the axis coordinate returned separately).
template <class T>
__device__ void gather_impl(ll n, int nd, Dims shape, Dims istr, ll ioff, const int* idx, Dims xstr, ll xoff, int axis, ll axisLen, const T* x, T* out, int* err) {
  for (ll i = gtid(); i < n; i += gstride()) {
    ll r = i, pi = ioff, px = xoff;
    for (int d = nd - 1; d >= 0; d--) {
      ll e = shape.d[d], q = r / e, c = r - q * e;
      r = q; pi += c * istr.d[d];
      if (d != axis) px += c * xstr.d[d];
    }
    ll j = idx[pi];
    if (j < 0 || j >= axisLen) { report(err, 1, j, axisLen); out[i] = T(); continue; }
    out[i] = x[px + j * xstr.d[axis]];
  }
}

// 'out' is contiguous with 'oshape'; idx and upd are strided views of one shape.
template <class T>
__device__ void scatter_add_impl(ll n, int nd, Dims shape, Dims istr, ll ioff, const int* idx, Dims ustr, ll uoff, const T* upd, Dims ostr, int axis, ll axisLen, T* out, int* err) {
  for (ll i = gtid(); i < n; i += gstride()) {
    ll r = i, pi = ioff, pu = uoff, po = 0;
    for (int d = nd - 1; d >= 0; d--) {
      ll e = shape.d[d], q = r / e, c = r - q * e;
      r = q; pi += c * istr.d[d]; pu += c * ustr.d[d];
      if (d != axis) po += c * ostr.d[d];
    }
    ll j = idx[pi];
    if (j < 0 || j >= axisLen) { report(err, 2, j, axisLen); continue; }
    atomicAdd(out + po + j * ostr.d[axis], upd[pu]);
  }
}
`;

export function indexSource(): string {
  return BODY + instantiateAll(GATHER_DTYPES, [
    [
      "gather",
      "ll n, int nd, Dims shape, Dims istr, ll ioff, const int* idx, Dims xstr, ll xoff, int axis, ll axisLen, const T* x, T* out, int* err",
      "gather_impl<T>(n, nd, shape, istr, ioff, idx, xstr, xoff, axis, axisLen, x, out, err)",
    ],
  ]) + instantiateAll(SCATTER_DTYPES, [
    [
      "scatter_add",
      "ll n, int nd, Dims shape, Dims istr, ll ioff, const int* idx, Dims ustr, ll uoff, const T* upd, Dims ostr, int axis, ll axisLen, T* out, int* err",
      "scatter_add_impl<T>(n, nd, shape, istr, ioff, idx, ustr, uoff, upd, ostr, axis, axisLen, out, err)",
    ],
  ]);
}
