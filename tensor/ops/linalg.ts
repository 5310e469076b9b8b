/** Matrix products. Transposed operands are strided views that reach BLAS as trans flags, not copies. */
import { isFloat, promote } from "../dtype.ts";
import { broadcastShapes, fmt, ShapeError } from "../shape.ts";
import { bind1 } from "../prims.ts";
import type { Tensor } from "../tensor.ts";
import { broadcastTo, cast } from "./elementwise.ts";
import { reshape } from "./shape.ts";

/** NumPy matmul: 1-D operands are promoted to matrices and squeezed back; batch dims broadcast. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.ndim === 0 || b.ndim === 0) {
    throw new ShapeError(
      `matmul: operands must have at least one axis, got ${fmt(a.shape)} and ${fmt(b.shape)}`,
    );
  }
  const x = a.ndim === 1 ? reshape(a, [1, a.shape[0]]) : a;
  const y = b.ndim === 1 ? reshape(b, [b.shape[0], 1]) : b;
  const K = x.shape[x.ndim - 1];
  if (y.shape[y.ndim - 2] !== K) {
    throw new ShapeError(
      `matmul: shapes ${fmt(a.shape)} and ${fmt(b.shape)} do not align (${K} vs ${
        y.shape[y.ndim - 2]
      })`,
    );
  }
  // Broadcast the batch dims, but report the operands' full shapes: the batch shapes alone confuse.
  const ba = x.shape.slice(0, -2), bb = y.shape.slice(0, -2);
  let batch: number[];
  try {
    batch = broadcastShapes("matmul", ba, bb);
  } catch {
    throw new ShapeError(
      `matmul: batch dimensions of ${fmt(a.shape)} and ${
        fmt(b.shape)
      } cannot be broadcast together (${fmt(ba)} vs ${fmt(bb)})`,
    );
  }
  let dt = promote(x.dtype, y.dtype);
  if (!isFloat(dt)) dt = dt === "bool" ? "i32" : dt;
  const M = x.shape[x.ndim - 2], N = y.shape[y.ndim - 1];
  const out = bind1("matmul", [
    broadcastTo(cast(x, dt), [...batch, M, K]),
    broadcastTo(cast(y, dt), [...batch, K, N]),
  ], {});
  if (a.ndim === 1 && b.ndim === 1) return reshape(out, [...batch]);
  if (a.ndim === 1) return reshape(out, [...batch, N]);
  if (b.ndim === 1) return reshape(out, [...batch, M]);
  return out;
}

/** Dot product of two vectors, or matmul for higher ranks. */
export const dot = matmul;
