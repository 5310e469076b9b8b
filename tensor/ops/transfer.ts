/** Moving a tensor to another backend: the one step between backends, asynchronous like readback. */
import type { Backend } from "../backend.ts";
import { encode16, type StorageArray } from "../dtype.ts";
import { findBackend } from "../registry.ts";
import { wrap } from "../prims.ts";
import type { Tensor } from "../tensor.ts";

/** A copy of `x` on backend `to` (a name or a Backend); `x` itself when it already lives there. */
export async function toBackend(x: Tensor, to: Backend | string): Promise<Tensor> {
  const b = typeof to === "string" ? findBackend(to, "toBackend") : to;
  if (b === x.backend) return x;
  const values = await x.data();
  // data() widens f16/bf16 to f32 (exactly); the target stores raw 16-bit words.
  const storage =
    (x.dtype === "f16" || x.dtype === "bf16" ? encode16(x.dtype, values) : values) as StorageArray;
  return wrap(b, b.fromHost(x.dtype, storage), x.shape, x.dtype);
}
