/**
 * The webgpu backend: the backend contract over a WebGPU device. Kernels are generated WGSL
 * (elementwise.ts, reduce.ts, matmul.ts, indexing.ts, topk.ts, fused.ts), compiled once per
 * source text and cached; every call records its work (runtime.ts submits it in batches) and
 * returns its output buffer at once, so the only waiting is in `read`. f64 is refused with a
 * clear error: WGSL has no f64.
 */
import type { Backend, View } from "../backend.ts";
import { decode16, type DType, encode16, type StorageArray } from "../dtype.ts";
import { sizeOf } from "../shape.ts";
import type { DeviceInfo } from "./device.ts";
import { type GBuf, Runtime } from "./runtime.ts";
import { elemBytes, setHalfStorage, sty, wty } from "./wgsl.ts";
import * as E from "./elementwise.ts";
import * as R from "./reduce.ts";
import { matmul } from "./matmul.ts";
import * as I from "./indexing.ts";
import { topk } from "./topk.ts";
import * as F from "./fused.ts";

export interface WebGPUBackend extends Backend {
  readonly runtime: Runtime;
  readonly device: DeviceInfo;
  /** Bytes held by live and pooled device buffers, and by the pool alone. */
  gpuMemory(): { allocatedBytes: number; pooledBytes: number; pipelines: number };
  /** Destroy the pooled (released) buffers. */
  trimPool(): void;
  /** Validation/shader errors the device reported so far (also printed); tests assert none. */
  readonly errors: string[];
}

/** Host storage → device layout (32-bit words; raw f16 words where the device stores f16). */
function toWords(
  dtype: DType,
  data: StorageArray,
): Float32Array | Int32Array | Uint32Array | Uint16Array {
  if (sty(dtype) === "f16") return data as Uint16Array;
  if (dtype === "f16" || dtype === "bf16") return decode16(dtype, data as Uint16Array);
  if (dtype === "bool") return Uint32Array.from(data as Uint8Array);
  return data as Float32Array | Int32Array;
}

function fromWords(dtype: DType, raw: ArrayBuffer, size: number): StorageArray {
  if (sty(dtype) === "f16") return new Uint16Array(raw, 0, size);
  switch (dtype) {
    case "f32":
      return new Float32Array(raw, 0, size);
    case "i32":
      return new Int32Array(raw, 0, size);
    case "bool":
      return Uint8Array.from(new Uint32Array(raw, 0, size));
    case "f16":
    case "bf16":
      return encode16(dtype, new Float32Array(raw, 0, size));
    default:
      throw new TypeError(`webgpu: cannot read back ${dtype}`);
  }
}

/** Every view a kernel gets must be of a dtype the device stores. */
function check(op: string, ...views: (View | null)[]): void {
  for (const v of views) {
    if (v && v.dtype === "f64") {
      throw new TypeError(
        `webgpu ${op}: f64 is not supported (WGSL has no 64-bit floats); cast to f32 or use the cpu backend`,
      );
    }
  }
}

export function createWebGPUBackend(
  info: DeviceInfo,
  opts: { maxPooledBytes?: number } = {},
): WebGPUBackend {
  setHalfStorage(info.f16);
  const rt = new Runtime(info.device, opts.maxPooledBytes);
  // Validation and shader errors arrive asynchronously; make them visible rather than silent zeros.
  const errors: string[] = [];
  info.device.addEventListener?.("uncapturederror", (e: { error: { message: string } }) => {
    errors.push(e.error.message);
    console.error(`webgpu error: ${e.error.message}`);
  });
  return {
    name: "webgpu",
    hostMemory: false,
    runtime: rt,
    device: info,
    errors,
    info: () =>
      `webgpu: ${info.description}${
        info.fallback ? " (software fallback adapter)" : ""
      } via ${info.via}; ${
        info.f16 ? "f16 stored as WGSL f16 (shader-f16)" : "f16 in 32-bit words (no shader-f16)"
      }, bf16 in 32-bit words, both computed in f32; no f64`,
    gpuMemory: () => ({
      allocatedBytes: rt.pool.allocated,
      pooledBytes: rt.pool.pooled,
      pipelines: rt.pipelines,
    }),
    trimPool: () => {
      rt.flush();
      rt.pool.clear();
    },

    alloc(dtype, size) {
      wty(dtype);
      return rt.zeros(size, dtype);
    },
    free: (buf) => rt.free(buf as GBuf),
    fromHost(dtype, data) {
      wty(dtype); // refuses f64 with the reason
      return rt.upload(toWords(dtype, data));
    },
    async read(buf, dtype, size) {
      wty(dtype);
      return fromWords(dtype, await rt.read(buf as GBuf, size * elemBytes(dtype)), size);
    },

    unary(op, x, outDtype) {
      check(op, x);
      return E.unary(rt, op, x, outDtype);
    },
    binary(op, a, b, outDtype) {
      check(op, a, b);
      return E.binary(rt, op, a, b, outDtype);
    },
    where(c, a, b, outDtype) {
      check("where", a, b);
      return E.where(rt, c, a, b, outDtype);
    },
    cast(x, dtype) {
      check("cast", x, { dtype } as View);
      return E.cast(rt, x, dtype);
    },
    reduce(op, x, axes, outDtype) {
      check(op, x);
      return R.reduce(rt, op, x, axes, outDtype);
    },
    argReduce(op, x, axis) {
      check(op, x);
      return R.argReduce(rt, op, x, axis);
    },
    matmul(a, b, outDtype) {
      check("matmul", a, b);
      return matmul(rt, a, b, outDtype);
    },
    gather(x, idx, axis) {
      check("gather", x);
      return I.gather(rt, x, idx, axis);
    },
    scatterAdd(base, idx, upd, axis) {
      check("scatterAdd", base, upd);
      return I.scatterAdd(rt, base, idx, upd, axis);
    },
    topk(x, k) {
      check("topk", x);
      return topk(rt, x, k);
    },
    cumsum(x, axis, reverse) {
      check("cumsum", x);
      return R.cumsum(rt, x, axis, reverse);
    },
    concat(xs, axis, outShape) {
      check("concat", ...xs);
      const out = rt.alloc(sizeOf(outShape), xs[0].dtype);
      let at = 0;
      for (const x of xs) {
        E.copyInto(rt, x, out, outShape, outShape.map((_, d) => (d === axis ? at : 0)));
        at += x.shape[axis];
      }
      return out;
    },
    pad(x, widths, outShape) {
      check("pad", x);
      const out = rt.zeros(sizeOf(outShape), x.dtype);
      E.copyInto(rt, x, out, outShape, widths.map((w) => w[0]));
      return out;
    },
    spmm(rows, cols, vals, dense, transpose, outRows) {
      check("spmm", vals, dense);
      return I.spmm(rt, rows, cols, vals, dense, transpose, outRows);
    },
    sddmm(a, b, rows, cols) {
      check("sddmm", a, b);
      return I.sddmm(rt, a, b, rows, cols);
    },
    fused: {
      adam(g, mu, nu, param, h) {
        check("adam", g, mu, nu, param);
        return F.adam(rt, g, mu, nu, param, h);
      },
      unitRows(w) {
        check("unitRows", w);
        return F.unitRows(rt, w);
      },
      projectOutRows(g, w) {
        check("projectOutRows", g, w);
        return F.projectOutRows(rt, g, w);
      },
    },
  };
}
