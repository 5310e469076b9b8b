/**
 * A test backend that runs every kernel twice: on the CPU, whose result it returns (so the op
 * tests' synchronous reads and assertions work unchanged), and on the webgpu backend with the
 * same input values uploaded, whose result is read back asynchronously and compared with the CPU
 * reference. Each GPU kernel is thus checked on exactly the inputs the op suite produces (values,
 * gradients, strided views). WGSL has no f64: f64 kernels run in f32 on the GPU and are compared
 * with the CPU kernel re-run on the f32-rounded inputs, so exact ops stay exact.
 */
import type { Backend, View } from "../tensor/backend.ts";
import { cpu } from "../tensor/cpu/backend.ts";
import { decode16, type DType, type StorageArray } from "../tensor/dtype.ts";
import type { WebGPUBackend } from "../tensor/webgpu/backend.ts";
import type { GBuf } from "../tensor/webgpu/runtime.ts";

type Tier = "exact" | "ulp" | "fn" | "acc";

const EXACT_UNARY = new Set(["neg", "abs", "sign", "relu", "step", "floor", "ceil", "not", "copy"]);
const ULP_OPS = new Set(["div", "sqrt", "rsqrt", "floordiv", "mod"]);
const EXACT_BINARY = new Set([
  "add",
  "sub",
  "mul",
  "max",
  "min",
  "gt",
  "ge",
  "lt",
  "le",
  "eq",
  "ne",
  "and",
  "or",
]);

function tierOf(method: string, args: unknown[]): Tier {
  const op = args[0] as string;
  switch (method) {
    case "unary":
      return EXACT_UNARY.has(op) ? "exact" : ULP_OPS.has(op) ? "ulp" : "fn";
    case "binary":
      return EXACT_BINARY.has(op) ? "exact" : ULP_OPS.has(op) ? "ulp" : "fn";
    case "reduce":
      return op === "sum" ? "acc" : "exact";
    case "where":
    case "cast":
    case "argReduce":
    case "gather":
    case "topk":
    case "concat":
    case "pad":
      return "exact";
    default:
      return "acc";
  }
}

const isView = (v: unknown): v is View =>
  typeof v === "object" && v !== null && "buf" in v && "strides" in v;

function maxAbs(v: View): number {
  const a =
    (v.dtype === "f16" || v.dtype === "bf16"
      ? decode16(v.dtype, v.buf as Uint16Array)
      : v.buf) as ArrayLike<number>;
  let m = 0;
  for (let i = 0; i < a.length; i++) if (Number.isFinite(a[i])) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** A bound on the magnitude of the summed terms, for the absolute tolerance of accumulating ops. */
function accBound(method: string, views: View[]): number {
  const m = views.map(maxAbs);
  const dims = (v: View) => v.shape;
  switch (method) {
    case "matmul":
      return m[0] * m[1] * dims(views[0]).at(-1)!;
    case "sddmm":
      return m[0] * m[1] * dims(views[0])[1];
    case "spmm":
      return m[2] * m[3] * views[2].shape[0];
    case "scatterAdd":
      return m[0] + m[2] * views[2].shape.reduce((s, d) => s * d, 1);
    case "reduce":
    case "cumsum":
      return m[0] * views[0].shape.reduce((s, d) => s * d, 1);
    default:
      return Math.max(1, ...m);
  }
}

/** One rounding step of a 16-bit float: relative to the value (2⁻¹⁰ f16, 2⁻⁷ bf16), and the smallest subnormal. */
const STEP16: Partial<Record<DType, [number, number]>> = {
  f16: [2 ** -10, 2 ** -24],
  bf16: [2 ** -7, 2 ** -133],
};

/**
 * [rtol, atol] for a tier's f32 results; 16-bit outputs are computed in f32 by both backends and
 * rounded once on the write. Exact ops then agree exactly, whatever the width. Elsewhere the two
 * f32 results differ by at most the f32 tolerance, and rounding each to 16 bits can add at most
 * one 16-bit step, so that is all a 16-bit output is allowed beyond it.
 */
function tolerance(tier: Tier, dtype: DType, bound: number): [number, number] {
  const [rtol, atol] = tier === "exact"
    ? [0, 0]
    : tier === "ulp"
    ? [2e-6, 1e-30]
    : tier === "fn"
    ? [1e-5, 1e-6]
    : [1e-5, 2e-6 * bound + 1e-30];
  const step = STEP16[dtype];
  return step && tier !== "exact" ? [rtol + step[0], atol + step[1]] : [rtol, atol];
}

/** The dtype of a kernel's (first) output, from its arguments as the contract defines them. */
function outputDtype(method: string, args: unknown[]): DType {
  const v = (i: number) => args[i] as View;
  switch (method) {
    case "unary":
    case "binary":
      return args[2 + (method === "binary" ? 1 : 0)] as DType;
    case "where":
      return args[3] as DType;
    case "cast":
      return args[1] as DType;
    case "reduce":
      return args[3] as DType;
    case "matmul":
      return args[2] as DType;
    case "argReduce":
      return "i32";
    case "concat":
      return (args[0] as View[])[0].dtype;
    case "spmm":
      return v(3).dtype;
    default:
      return v(0).dtype; // gather, scatterAdd, topk values, cumsum, pad, sddmm, fused
  }
}

export interface Mirror extends Backend {
  /** Wait for every pending comparison; the mismatches since the last call (empty when all agree). */
  settle(): Promise<string[]>;
  /** How many kernels were compared in total. */
  readonly compared: number;
}

export function createMirror(gpu: WebGPUBackend, name = "webgpu-mirror"): Mirror {
  const rt = gpu.runtime;
  let pending: Promise<void>[] = [];
  let failures: string[] = [];
  let compared = 0;

  const f32View = (
    v: View,
  ): View => (v.dtype === "f64"
    ? { ...v, buf: Float32Array.from(v.buf as Float64Array), dtype: "f32" }
    : v);
  const narrow = (
    a: unknown,
  ): unknown => (a === "f64"
    ? "f32"
    : isView(a)
    ? f32View(a)
    : Array.isArray(a) && a.length > 0 && a.every(isView)
    ? a.map(f32View)
    : a);

  function run(method: string, args: unknown[]): unknown {
    const cpuFn = (cpu as unknown as Record<string, (...a: unknown[]) => unknown>)[method] ??
      (cpu.fused as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
    const gpuFn = (gpu as unknown as Record<string, (...a: unknown[]) => unknown>)[method] ??
      (gpu.fused as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
    const out = cpuFn(...args);
    const views = args.flatMap((
      a,
    ) => (isView(a) ? [a] : Array.isArray(a) && a.every(isView) ? a : []));
    const wide = views.some((v) => v.dtype === "f64") || args.includes("f64");
    const narrowed = wide ? args.map(narrow) : args;
    const ref = wide ? cpuFn(...narrowed) : out;
    const uploads: GBuf[] = [];
    const up = (v: View): View => {
      const g = gpu.fromHost(v.dtype, v.buf as StorageArray) as GBuf;
      uploads.push(g);
      return { ...v, buf: g };
    };
    const gargs = narrowed.map((
      a,
    ) => (isView(a) ? up(a) : Array.isArray(a) && a.length > 0 && a.every(isView) ? a.map(up) : a));
    const gout = gpuFn(...gargs);
    for (const u of uploads) rt.free(u);
    const outDtype = outputDtype(method, narrowed);
    const refs = (Array.isArray(ref) ? ref : [ref]) as StorageArray[];
    const gouts = (Array.isArray(gout) ? gout : [gout]) as GBuf[];
    const tier = tierOf(method, args);
    const bound = tier === "acc" ? accBound(method, views.map(f32View)) : 0;
    const desc = `${method}${typeof args[0] === "string" ? ` ${args[0]}` : ""} on ${
      views.map((v) => `${v.dtype}[${v.shape.join(",")}]`).join(", ")
    }`;
    refs.forEach((r, k) => {
      const dtype: DType = method === "topk" && k === 1 ? "i32" : outDtype;
      const g = gouts[k];
      compared++;
      pending.push(
        gpu.read(g, dtype, r.length).then((raw) => {
          rt.free(g);
          const small = dtype === "f16" || dtype === "bf16";
          const got: ArrayLike<number> = small ? decode16(dtype, raw as Uint16Array) : raw;
          const want: ArrayLike<number> = small ? decode16(dtype, r as Uint16Array) : r;
          const [rtol, atol] = tolerance(tier, dtype, bound);
          for (let i = 0; i < want.length; i++) {
            const a = got[i], e = want[i];
            if (a === e || (Number.isNaN(a) && Number.isNaN(e))) continue;
            if (Number.isFinite(e) && Math.abs(a - e) <= atol + rtol * Math.abs(e)) continue;
            failures.push(
              `webgpu ${desc}${
                refs.length > 1 ? ` (output ${k})` : ""
              }: element ${i} of ${want.length}: gpu ${a}, cpu ${e} (tier ${tier}, rtol ${rtol}, atol ${
                atol.toExponential(2)
              })`,
            );
            return;
          }
        }),
      );
    });
    return out;
  }

  const kernels = [
    "unary",
    "binary",
    "where",
    "cast",
    "reduce",
    "argReduce",
    "matmul",
    "gather",
    "scatterAdd",
    "topk",
    "cumsum",
    "concat",
    "pad",
    "spmm",
    "sddmm",
  ];
  const b: Record<string, unknown> = {
    ...cpu,
    name,
    info: () => `webgpu-mirror: cpu results, every kernel compared with ${gpu.info()}`,
    fused: Object.fromEntries(
      ["adam", "unitRows", "projectOutRows"].map((m) => [m, (...a: unknown[]) => run(m, a)]),
    ),
    async settle() {
      await Promise.all(pending);
      pending = [];
      // Errors are reported asynchronously; a readback above has let them arrive.
      const f = [...failures, ...gpu.errors.splice(0).map((e) => `webgpu device error: ${e}`)];
      failures = [];
      return f;
    },
    get compared() {
      return compared;
    },
  };
  for (const m of kernels) b[m] = (...a: unknown[]) => run(m, a);
  return b as unknown as Mirror;
}
