/**
 * The CUDA binding layer without a GPU: our FFI against libc (addresses, C strings, out-params),
 * kernel-parameter packing into the void** array, status codes → errors naming the call, the
 * constants and driver signatures against cuda.h (compiled with gcc when present), library
 * search paths, NVRTC target choice.
 */
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import { cStringArray, cStringBuf, getFfi } from "../tensor/platform/ffi.ts";
import { arg, layout, MAX_DIMS, packParams } from "../tensor/cuda/params.ts";
import {
  CUBLAS_STATUS,
  CudaError,
  DRIVER_STATUS,
  makeCheck,
  statusName,
} from "../tensor/cuda/errors.ts";
import { ATTR, DRIVER_SIGS, STREAM_NON_BLOCKING } from "../tensor/cuda/driver.ts";
import { COMPUTE, DATA_TYPE, gemmRoute } from "../tensor/cuda/cublas.ts";
import { libraryCandidates, openFirst } from "../tensor/cuda/libs.ts";
import { targetFor } from "../tensor/cuda/nvrtc.ts";
import { join, removeDir, run, skip, tempDir, which, writeText } from "./cuda_tools.ts";

const ffi = getFfi()!;
const libc = ffi.open("libc.so.6", {
  memcpy: { args: ["buf", "u64", "u64"], ret: "u64" },
  strlen: { args: ["u64"], ret: "u64" },
  strerror: { args: ["i32"], ret: "addr" },
  no_such_symbol_here: { args: [], ret: "i32", optional: true },
}).fns;

/** Read `n` bytes at a host address through libc's memcpy. */
function peek(addr: bigint, n: number): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(n));
  libc.memcpy!(out, addr, BigInt(n));
  return out;
}

test("cuda ffi: addresses of typed arrays (byteOffset included) read back through libc", () => {
  const buf = new Uint8Array(new ArrayBuffer(32));
  buf.forEach((_, i) => (buf[i] = i * 3));
  const view = buf.subarray(5, 12);
  assertEquals([...peek(ffi.addressOf(view), 7)], [...view]);
  assertEquals(Number(ffi.addressOf(view) - ffi.addressOf(buf)), 5);
});

test("cuda ffi: C strings in and out, optional symbols absent as null", () => {
  const s = cStringBuf("héllo");
  assertEquals(Number(libc.strlen!(ffi.addressOf(s))), 6);
  assertEquals(ffi.cString(ffi.addressOf(s)), "héllo");
  assert(
    /No such file/.test(ffi.cString(libc.strerror!(2) as bigint)),
    "strerror(ENOENT) read back",
  );
  assertEquals(libc.no_such_symbol_here, null);
  const arr = cStringArray(ffi, ["--gpu-architecture=sm_90", "--std=c++17"]);
  assertEquals([...arr.ptrs].map((p) => ffi.cString(p)), [
    "--gpu-architecture=sm_90",
    "--std=c++17",
  ]);
});

test("cuda params: each kernel argument at its natural alignment, pointers into one buffer", () => {
  const args = [
    arg.i32(-7),
    arg.ptr(0x7f00_dead_beefn),
    arg.f32(1.5),
    arg.dims([3, 4, 5]),
    arg.i64(2 ** 40 + 3),
    arg.f64(-0.25),
    { t: "u32", v: 0xffffffff } as const,
  ];
  const { offsets, bytes } = layout(args);
  assertEquals(offsets, [0, 8, 16, 24, 88, 96, 104]);
  assertEquals(bytes, 112);
  const p = packParams(ffi, args);
  assertEquals(p.pointers.length, args.length);
  const dv = (i: number, n: number) => new DataView(peek(p.pointers[i], n).buffer);
  assertEquals(dv(0, 4).getInt32(0, true), -7);
  assert(dv(1, 8).getBigUint64(0, true) === 0x7f00_dead_beefn, "pointer argument");
  assertEquals(dv(2, 4).getFloat32(0, true), 1.5);
  const d = dv(3, 8 * MAX_DIMS);
  assertEquals([0, 1, 2, 3].map((j) => Number(d.getBigInt64(8 * j, true))), [3, 4, 5, 0]);
  assertEquals(Number(dv(4, 8).getBigInt64(0, true)), 2 ** 40 + 3);
  assertEquals(dv(5, 8).getFloat64(0, true), -0.25);
  assertEquals(dv(6, 4).getUint32(0, true), 0xffffffff);
  assertThrows(
    () => packParams(ffi, [arg.dims([1, 2, 3, 4, 5, 6, 7, 8, 9])]),
    "9 dimensions exceed",
    "limit of 8",
  );
});

test("cuda errors: a failing status becomes an error naming the call, the status and its code", () => {
  const check = makeCheck("driver");
  check("cuInit", 0);
  const e = assertThrows(
    () => check("cuMemAlloc_v2", 2, () => "1048576 bytes"),
    "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (2): 1048576 bytes",
  );
  assert(e instanceof CudaError && e.code === 2 && e.call === "cuMemAlloc_v2");
  assertThrows(
    () => makeCheck("cublas")("cublasSgemm_v2", 13),
    "cublasSgemm_v2 failed: CUBLAS_STATUS_EXECUTION_FAILED (13)",
  );
  assertThrows(
    () => makeCheck("nvrtc")("nvrtcCompileProgram", 6, () => "k.cu\nerror: x"),
    "NVRTC_ERROR_COMPILATION (6)",
    "error: x",
  );
  // The library's own name lookup wins; unknown codes still name the call.
  assertEquals(statusName("driver", 700, () => "FROM_DRIVER"), "FROM_DRIVER");
  assertThrows(
    () => makeCheck("driver")("cuLaunchKernel", 12345),
    "cuLaunchKernel failed: unknown driver status (12345)",
  );
  assertEquals(CUBLAS_STATUS[0], "CUBLAS_STATUS_SUCCESS");
});

test("cuda libs: search order, forced paths, and a reason naming what failed", () => {
  const env = (m: Record<string, string>) => (n: string) => m[n];
  const plain = libraryCandidates("nvrtc", env({}));
  assertEquals(plain.slice(0, 4), [
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11.2",
    "libnvrtc.so",
  ]);
  assert(plain.includes("/usr/local/cuda/lib64/libnvrtc.so.13"));
  assert(
    plain.includes("/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13"),
    "pip wheel folder",
  );
  assertEquals(new Set(plain).size, plain.length, "no duplicates");
  assertEquals(libraryCandidates("cublas", env({ SPARSECODER_CUBLAS: "/x/libcublas.so" })), [
    "/x/libcublas.so",
  ]);
  const extra = libraryCandidates(
    "driver",
    env({ SPARSECODER_CUDA_LIBDIRS: "/a:/b", CUDA_HOME: "/c" }),
  );
  assertEquals(extra.slice(0, 3), ["/a/libcuda.so.1", "/b/libcuda.so.1", "libcuda.so.1"]);
  assert(
    libraryCandidates("cublas", env({ CUDA_HOME: "/c" })).includes("/c/lib64/libcublas.so.13"),
  );
  const missing = openFirst(ffi, "driver", ["/nonexistent/libcuda.so.1"], DRIVER_SIGS);
  assert(
    missing.lib === null && missing.reason.includes("/nonexistent/libcuda.so.1") &&
      missing.reason.includes("SPARSECODER_CUDA_DRIVER"),
    missing.reason,
  );
  // A library that opens but lacks the symbols is reported with the loader's error, not as "not found".
  const wrong = openFirst(ffi, "driver", ["libc.so.6"], DRIVER_SIGS);
  assert(
    wrong.lib === null && wrong.reason.includes("libc.so.6") && /cu[A-Z]/.test(wrong.reason),
    wrong.reason,
  );
});

test("cuda nvrtc: a cubin for a known architecture, PTX for the newest older one otherwise", () => {
  assertEquals(targetFor(90, [75, 80, 86, 89, 90]), {
    option: "--gpu-architecture=sm_90",
    kind: "cubin",
    target: "sm_90",
  });
  assertEquals(targetFor(120, [75, 80, 90]), {
    option: "--gpu-architecture=compute_90",
    kind: "ptx",
    target: "compute_90",
  });
  assertEquals(targetFor(90, []).kind, "cubin");
  assertEquals(targetFor(90, [75, 90], true), {
    option: "--gpu-architecture=compute_90",
    kind: "ptx",
    target: "compute_90",
  });
  assertEquals(targetFor(86, [], true).target, "compute_86");
});

test("cuda cublas: entry point and types per dtype and precision", () => {
  assertEquals(gemmRoute("f32", "f32", false), { fn: "cublasSgemm_v2", scalar: "f32" });
  assertEquals(gemmRoute("f32", "f32", true).fn, "cublasSgemmStridedBatched");
  assertEquals(gemmRoute("f32", "tf32", false), {
    fn: "cublasGemmEx",
    scalar: "f32",
    dataType: DATA_TYPE.f32,
    compute: COMPUTE.f32FastTf32,
  });
  assertEquals(gemmRoute("f32", "bf16", true), {
    fn: "cublasGemmStridedBatchedEx",
    scalar: "f32",
    dataType: DATA_TYPE.f32,
    compute: COMPUTE.f32FastBf16,
  });
  assertEquals(gemmRoute("bf16", "f32", false), {
    fn: "cublasGemmEx",
    scalar: "f32",
    dataType: 14,
    compute: 68,
  });
  assertEquals(gemmRoute("f64", "tf32", true), { fn: "cublasDgemmStridedBatched", scalar: "f64" });
});

const CUDA_INCLUDE = "/usr/local/cuda/include";

test("cuda constants and driver signatures agree with cuda.h and library_types.h (gcc)", () => {
  const gcc = which("gcc");
  const hdr = run("test", ["-f", `${CUDA_INCLUDE}/cuda.h`]).code === 0;
  if (!gcc || !hdr) {
    return skip(
      "cuda.h check",
      !gcc ? "gcc not on PATH" : `${CUDA_INCLUDE}/cuda.h absent (no CUDA toolkit)`,
    );
  }
  const lines: string[] = [
    "#include <stdio.h>",
    "#include <cuda.h>",
    "#include <library_types.h>",
    "int main(void) {",
  ];
  const pr = (label: string, expr: string) =>
    lines.push(`  printf("${label} %lld\\n", (long long)(${expr}));`);
  for (const [code, name] of Object.entries(DRIVER_STATUS)) pr(`${name}=${code}`, name);
  for (const [k, v] of Object.entries(ATTR)) {
    pr(`CU_DEVICE_ATTRIBUTE_${k}=${v}`, `CU_DEVICE_ATTRIBUTE_${k}`);
  }
  pr(`CU_STREAM_NON_BLOCKING=${STREAM_NON_BLOCKING}`, "CU_STREAM_NON_BLOCKING");
  for (
    const [k, v] of Object.entries({
      CUDA_R_32F: DATA_TYPE.f32,
      CUDA_R_64F: DATA_TYPE.f64,
      CUDA_R_16F: DATA_TYPE.f16,
      CUDA_R_16BF: DATA_TYPE.bf16,
    })
  ) pr(`${k}=${v}`, k);
  pr("sizeof(CUdeviceptr)=8", "sizeof(CUdeviceptr)");
  pr("sizeof(CUresult)=4", "sizeof(CUresult)");
  // Calling each entry point with our argument count must compile: arity checked against the prototypes.
  for (const [name, s] of Object.entries(DRIVER_SIGS)) {
    lines.push(`  (void)sizeof(${name}(${s.args.map(() => "0").join(", ")}));`);
  }
  lines.push("  return 0;", "}");
  const dir = tempDir();
  try {
    writeText(join(dir, "c.c"), lines.join("\n"));
    const cc = run(gcc, ["-I", CUDA_INCLUDE, "-o", join(dir, "c"), join(dir, "c.c")]);
    assert(cc.code === 0, `gcc failed:\n${cc.stderr}`);
    const out = run(join(dir, "c"), []).stdout.trim().split("\n");
    assert(out.length > 30, "program ran");
    for (const l of out) {
      const [label, actual] = l.split(" ");
      assertEquals(`${label.split("=")[0]}=${actual}`, label, "constant");
    }
  } finally {
    removeDir(dir);
  }
});
