/**
 * Every CUDA kernel source compiles with nvcc (the fixed module and the elementwise generator for
 * every op and dtype), and every launch the backend makes names a kernel that exists with exactly
 * the parameters it packs: the backend's host side runs against a recording runtime (no GPU), and
 * each recorded launch is checked against the .param list nvcc wrote in the PTX.
 */
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import type { View } from "../tensor/backend.ts";
import type { DType } from "../tensor/dtype.ts";
import { contiguousStrides } from "../tensor/shape.ts";
import { cuda } from "../tensor/cuda/backend.ts";
import { type CudaRuntime, installRuntime } from "../tensor/cuda/runtime.ts";
import { cachingAllocator } from "../tensor/cuda/allocator.ts";
import type { Driver } from "../tensor/cuda/driver.ts";
import type { Cublas, GemmCall } from "../tensor/cuda/cublas.ts";
import type { KernelArg } from "../tensor/cuda/params.ts";
import { mainSource } from "../tensor/cuda/kernels/main.ts";
import { everySpec, ewKernels, ewKey } from "../tensor/cuda/kernels/elementwise.ts";
import { PRELUDE } from "../tensor/cuda/kernels/prelude.ts";
import { join, removeDir, run, runAsync, skip, tempDir, which, writeText } from "./cuda_tools.ts";

/** Entry name → PTX parameter types (".u64", ".f32", ".b8[64]", …). */
function ptxEntries(ptx: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const m of ptx.matchAll(/\.entry\s+(\w+)\s*\(([^)]*)\)/g)) {
    const params = [...m[2].matchAll(/\.param\s+(?:\.align\s+\d+\s+)?(\.\w+)\s+\w+(\[\d+\])?/g)]
      .map((p) => p[1] + (p[2] ?? ""));
    out.set(m[1], params);
  }
  return out;
}

const PTX_OF: Record<KernelArg["t"], string> = {
  ptr: ".u64",
  i64: ".u64",
  i32: ".u32",
  u32: ".u32",
  f32: ".f32",
  f64: ".f64",
  dims: ".b8[64]",
};

interface Launch {
  module: string;
  name: string;
  args: KernelArg[];
  grid: number[];
  block: number;
}

/** A runtime that records launches and gemm calls; memory is fake addresses from a caching allocator. */
function recordingRuntime() {
  const launches: Launch[] = [], gemms: GemmCall[] = [];
  let next = 0x10000n, errWordPtr = 0n, pendingError: number[] | null = null;
  const allocator = cachingAllocator(
    { alloc: (b) => (next += BigInt(b) + 256n), free: () => {} },
    () => false,
  );
  const errWord = allocator.alloc(16);
  errWordPtr = errWord.ptr;
  const driver = {
    memsetD8: () => {},
    copyHtoD: () => {},
    copyDtoH: (dst: ArrayBufferView, src: bigint) => {
      if (src === errWordPtr && pendingError) {
        new Int32Array(dst.buffer, dst.byteOffset, 4).set(pendingError), pendingError = null;
      }
    },
    streamSync: () => {},
    memInfo: () => ({ free: 0, total: 0 }),
  } as unknown as Driver;
  const cublas = {
    gemm: (c: GemmCall) => void gemms.push(c),
    version: 0,
    path: "fake",
    handle: 0n,
    destroy: () => {},
  } as Cublas;
  const rt: CudaRuntime = {
    driver,
    nvrtc: {
      path: "fake",
      version: [0, 0],
      archs: [],
      compile: () => {
        throw new Error("no compile in the recording runtime");
      },
    },
    cublas,
    stream: 0n,
    allocator,
    errWord,
    device: { name: "recording", cc: 90, sms: 132, memory: 0 },
    precision: "f32",
    launch: (_src, module, name, grid, block, args) =>
      void launches.push({ module, name, args, grid: grid.map((g) => g ?? 1), block }),
    compiled: () => [],
  };
  return { rt, launches, gemms, setError: (e: number[]) => (pendingError = e) };
}

function view(shape: number[], dtype: DType, strides = contiguousStrides(shape), offset = 0): View {
  const n = Math.max(1, ...shape.map((d, i) => d * Math.abs(strides[i] || 1))) + offset;
  return { buf: cuda.alloc(dtype, n), dtype, shape, strides, offset };
}

/** Drive every backend entry point once or more through representative views. */
function exercise(): void {
  const x = view([4, 6], "f32"),
    xt = view([6, 4], "f32", [1, 6]),
    bias = view([4, 6], "f32", [0, 1]);
  cuda.unary("relu", x, "f32");
  cuda.unary("exp", xt, "f32");
  cuda.unary("not", view([4, 6], "bool"), "bool");
  cuda.binary("add", x, bias, "f32");
  cuda.binary("gt", x, xt, "bool");
  cuda.where(view([4, 6], "bool"), x, bias, "f32");
  cuda.cast(x, "bf16");
  cuda.cast(view([8], "bf16"), "i32");
  cuda.reduce("sum", x, [1], "f32");
  cuda.reduce("max", view([2048, 300], "f32"), [0], "f32");
  cuda.reduce("sum", view([30, 9000], "f32"), [0], "f32");
  cuda.reduce("sum", view([3, 4, 5], "bf16"), [0, 2], "bf16");
  cuda.reduce("min", view([10], "i32"), [0], "i32");
  cuda.reduce("sum", view([512, 8192], "f32"), [0, 1], "f32");
  cuda.argReduce("argmax", x, 1);
  cuda.argReduce("argmin", xt, 0);
  cuda.matmul(view([4, 6], "f32"), view([6, 5], "f32"), "f32");
  cuda.matmul(view([2, 4, 6], "f32"), view([2, 6, 5], "f32", [30, 1, 6]), "f32");
  cuda.matmul(view([4, 6], "bf16"), view([6, 5], "bf16"), "bf16");
  cuda.matmul(view([4, 6], "i32"), view([6, 5], "i32"), "i32");
  cuda.matmul(view([4, 6], "f32", [12, 2]), view([6, 5], "f32"), "f32");
  cuda.gather(x, view([4, 3], "i32"), 1);
  cuda.gather(view([5, 2], "bf16"), view([3, 2], "i32"), 0);
  cuda.scatterAdd(view([8], "f32"), view([5], "i32"), view([5], "f32"), 0);
  cuda.scatterAdd(view([4, 3], "bf16"), view([4, 2], "i32"), view([4, 2], "bf16"), 1);
  for (const dt of ["f32", "f64", "bf16", "f16", "i32", "bool"] as DType[]) {
    cuda.topk(view([16, 300], dt), 7);
  }
  cuda.topk(xt, 2);
  cuda.topk(view([1, 70_000], "f32"), 300);
  cuda.cumsum(x, 0, false);
  cuda.cumsum(view([3, 700], "f64"), 1, true);
  cuda.concat([x, view([4, 2], "f32")], 1, [4, 8]);
  cuda.pad(x, [[1, 0], [2, 3]], [5, 11]);
  const rows = view([12], "i32"), cols = view([12], "i32");
  cuda.spmm(rows, cols, view([12], "f32"), view([50, 9], "f32"), false, 4);
  cuda.spmm(rows, cols, view([12], "f32"), view([4, 9], "f32"), true, 50);
  cuda.spmm(rows, cols, view([12], "bf16"), view([50, 9], "bf16"), false, 4);
  cuda.sddmm(view([4, 9], "f32"), view([50, 9], "f32"), rows, cols);
  cuda.sddmm(view([4, 9], "f64"), view([50, 9], "f64"), rows, cols);
  const h = { b1: 0.9, b2: 0.999, eps: 1e-8, c2: 0.5, scale: -1e-3, decay: 0.01 };
  cuda.fused!.adam!(x, x, x, x, h);
  cuda.fused!.adam!(view([7], "f64"), view([7], "f64"), view([7], "f64"), null, h);
  const p64 = view([6, 4], "f32"), scale = view([1], "f32");
  cuda.fused!.adamApply!(p64, xt, p64, p64, scale, h, { decay: true, unitRows: true });
  cuda.fused!.adamApply!(
    view([7], "f64"),
    view([7], "f64"),
    view([7], "f64"),
    view([7], "f64"),
    null,
    h,
    {
      decay: false,
      unitRows: false,
    },
  );
  cuda.fused!.sumSquares!(view([5000], "f32"));
  cuda.fused!.unitRows!(x);
  cuda.fused!.projectOutRows!(x, x);
}

test("cuda kernels: every source compiles with nvcc, and every launch matches its kernel's parameters", async () => {
  const nvcc = which("nvcc");
  if (!nvcc) {
    return skip("nvcc compile check", "nvcc not on PATH (install the CUDA toolkit to run it)");
  }
  const version = run(nvcc, ["--version"]).stdout.match(/release ([\d.]+)/)?.[1] ?? "?";
  const rec = recordingRuntime();
  installRuntime(rec.rt);
  try {
    exercise();
  } finally {
    installRuntime(null);
  }
  const specs = everySpec();
  const prefix = new Map(specs.map((s, i) => [ewKey(s), `k${i}`]));
  const dir = tempDir();
  try {
    writeText(join(dir, "main.cu"), mainSource());
    writeText(
      join(dir, "ew.cu"),
      PRELUDE + specs.map((s) => ewKernels(s, prefix.get(ewKey(s))!)).join(""),
    );
    // The two translation units compile side by side.
    const files = ["main", "ew"];
    const results = await Promise.all(
      files.map((f) =>
        runAsync(nvcc, ["--ptx", "-arch=sm_90", "-o", join(dir, `${f}.ptx`), join(dir, `${f}.cu`)])
      ),
    );
    results.forEach((r, i) =>
      assert(r.code === 0, `nvcc ${version} failed on ${files[i]}.cu:\n${r.stderr.slice(0, 4000)}`)
    );
    const ptx = files.map((f) => ptxEntries(run("cat", [join(dir, `${f}.ptx`)]).stdout));
    const [main, ew] = ptx;
    assertEquals(ew.size, specs.length * 3, "three kernels per elementwise spec");
    console.log(
      `nvcc ${version}: ${main.size} fixed kernels and ${ew.size} elementwise kernels (${specs.length} specs) compiled for sm_90; ${rec.launches.length} launches checked`,
    );
    const launchedMain = new Set<string>();
    for (const l of rec.launches) {
      let params: string[] | undefined;
      if (l.module === "main") {
        params = main.get(l.name);
        launchedMain.add(l.name);
      } else {
        const key = l.module.slice("ew:".length), p = prefix.get(key);
        assert(p !== undefined, `elementwise spec ${key} is missing from the compiled set`);
        params = ew.get(`${p}_${l.name.slice("ew_".length)}`);
      }
      assert(params !== undefined, `launch of ${l.name} (${l.module}): no such kernel`);
      assertEquals(l.args.map((a) => PTX_OF[a.t]), params, `parameters of ${l.name}`);
      assert(
        l.grid.every((g) => g >= 1 && g <= 2 ** 31 - 1) && (l.grid[1] ?? 1) <= 65535 &&
          l.block >= 32 && l.block <= 1024,
        `launch shape of ${l.name}`,
      );
    }
    // The exercise reaches every family of fixed kernels.
    for (
      const fam of [
        "reduce_warp",
        "reduce_thread",
        "reduce_split",
        "reduce_parts",
        "arg_reduce",
        "cumsum",
        "topk_init",
        "topk_hist",
        "topk_pick",
        "topk_collect",
        "topk_rank",
        "gather",
        "scatter_add",
        "spmm",
        "sddmm",
        "adam",
        "adam_apply",
        "sum_squares_split",
        "unit_rows",
        "project_out_rows",
      ]
    ) {
      assert(
        [...launchedMain].some((n) => n === fam || n.startsWith(fam + "_")),
        `no launch of ${fam}`,
      );
    }
    assertEquals(rec.gemms.map((g) => `${g.dtype}:${g.plan.batch}`), [
      "f32:1",
      "f32:2",
      "bf16:1",
      "f64:1",
      "f32:1",
    ]);
  } finally {
    removeDir(dir);
  }
});

test("cuda backend host side: temporaries are released, index errors surface at readback", async () => {
  const rec = recordingRuntime();
  installRuntime(rec.rt);
  try {
    const x = view([64, 1000], "f32");
    const before = rec.rt.allocator.stats().inUse;
    const [v, i] = cuda.topk(x, 16) as [{ bytes: number }, { bytes: number }];
    assertEquals(
      rec.rt.allocator.stats().inUse - before,
      v.bytes + i.bytes,
      "top-k keeps only its outputs",
    );
    const s0 = rec.rt.allocator.stats().inUse;
    const sa = cuda.scatterAdd(
      view([4, 3], "bf16"),
      view([4, 2], "i32"),
      view([4, 2], "bf16"),
      1,
    ) as { bytes: number };
    assertEquals(
      rec.rt.allocator.stats().inUse - s0,
      sa.bytes + 3 * 512,
      "scatter-add through f32 keeps only its output (and the three views it was given)",
    );
    rec.setError([1, 70000, 65536, 0]);
    let err: Error | null = null;
    try {
      await cuda.read(cuda.alloc("f32", 4), "f32", 4);
    } catch (e) {
      err = e as Error;
    }
    assert(
      err instanceof RangeError &&
        err.message.includes("gather: index 70000 is out of range for an axis of size 65536"),
      String(err),
    );
    const deep = Array(10).fill(2);
    assertThrows(
      () => cuda.unary("neg", view(deep, "f32", deep.map((_, d) => 3 ** (9 - d))), "f32"),
      "10 dimensions",
      "limit of 8",
    );
  } finally {
    installRuntime(null);
  }
});
