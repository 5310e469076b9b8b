/**
 * A CudaRuntime that runs the backend's real kernels on the CPU: the kernel sources are compiled
 * by g++ against emu.h into shared libraries (cached in .cache/cuda-emu), "device memory" is host
 * memory from libc's malloc, copies are memcpy, and cuBLAS is a reference column-major GEMM over
 * the same plan the backend hands to cuBLAS. Everything else — the backend, its launch planning,
 * parameter packing, the allocator — is the code a GPU runs.
 */
import { readFileSync } from "node:fs";
import { decode16, encode16 } from "../../tensor/dtype.ts";
import { cStringBuf, type FfiFn, getFfi } from "../../tensor/platform/ffi.ts";
import { cachingAllocator } from "../../tensor/cuda/allocator.ts";
import type { Driver } from "../../tensor/cuda/driver.ts";
import type { Cublas, GemmCall } from "../../tensor/cuda/cublas.ts";
import type { CudaRuntime } from "../../tensor/cuda/runtime.ts";
import { packParams } from "../../tensor/cuda/params.ts";
import { hash64 } from "../../tensor/cuda/module_cache.ts";
import { mainSource } from "../../tensor/cuda/kernels/main.ts";
import { everySpec, ewKernels, ewKey } from "../../tensor/cuda/kernels/elementwise.ts";
import { PRELUDE } from "../../tensor/cuda/kernels/prelude.ts";
import { colMajorGemm } from "./gemm.ts";
import { join, run, writeText } from "../cuda_tools.ts";

const HERE = new URL(".", import.meta.url).pathname;
const CACHE = new URL("../../.cache/cuda-emu/", import.meta.url).pathname;

/** A dispatcher `emu_launch_by_name` over every extern "C" kernel in `source`. */
export function dispatcher(source: string): string {
  const cases: string[] = [];
  for (const m of source.matchAll(/extern "C" __global__ void (\w+)\(([^)]*)\)/g)) {
    const types = m[2].split(",").map((p) => p.trim()).filter((p) => p).map((p) =>
      p.replace(/__restrict__/g, "").replace(/\w+$/, "").trim()
    );
    const args = types.map((ty, i) => `*(${ty}*)p[${i}]`).join(", ");
    cases.push(
      `  if (!strcmp(name, "${m[1]}")) { emu_launch(gx, gy, gz, bx, [&] { ${
        m[1]
      }(${args}); }); return 0; }`,
    );
  }
  return `${source}\nextern "C" int emu_launch_by_name(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, void** p) {\n${
    cases.join("\n")
  }\n  return 1;\n}\n`;
}

/** Compile (or reuse) a shared library of `source`; returns its path. */
function build(source: string, opt: string): string {
  const header = readFileSync(join(HERE, "emu.h"), "utf8");
  const full = dispatcher(source);
  const lib = join(CACHE, `${hash64(header + opt + full)}.so`);
  if (run("test", ["-f", lib]).code === 0) return lib;
  run("mkdir", ["-p", CACHE]);
  const src = `${lib}.cc`;
  writeText(src, full);
  const r = run("g++", [
    "-std=c++20",
    opt,
    "-shared",
    "-fPIC",
    "-w",
    "-include",
    join(HERE, "emu.h"),
    "-o",
    `${lib}.tmp`,
    src,
  ]);
  if (r.code !== 0) {
    throw new Error(`g++ failed on the emulated kernels:\n${r.stderr.slice(0, 3000)}`);
  }
  run("mv", [`${lib}.tmp`, lib]);
  return lib;
}

export function emulatedRuntime(): CudaRuntime {
  const ffi = getFfi()!;
  const libc = ffi.open("libc.so.6", {
    malloc: { args: ["u64"], ret: "u64" },
    free: { args: ["u64"], ret: "void" },
    memset: { args: ["u64", "i32", "u64"], ret: "u64" },
  }).fns as Record<string, FfiFn>;
  const toHost = ffi.open("libc.so.6", { memcpy: { args: ["buf", "u64", "u64"], ret: "u64" } }).fns
    .memcpy!;
  const toDev = ffi.open("libc.so.6", { memcpy: { args: ["u64", "buf", "u64"], ret: "u64" } }).fns
    .memcpy!;
  const devDev = ffi.open("libc.so.6", { memcpy: { args: ["u64", "u64", "u64"], ret: "u64" } }).fns
    .memcpy!;
  const allocator = cachingAllocator({
    alloc: (b) => BigInt(libc.malloc(BigInt(b)) as bigint),
    free: (p) => void libc.free(p),
  }, () => false);
  const errWord = allocator.alloc(16);
  libc.memset(errWord.ptr, 0, 16n);

  // Every kernel in two libraries: the fixed module, and every elementwise spec under a prefix.
  const specs = everySpec();
  const prefix = new Map(specs.map((s, i) => [ewKey(s), `k${i}`]));
  const open = (path: string) =>
    ffi.open(path, {
      emu_launch_by_name: { args: ["buf", "u32", "u32", "u32", "u32", "buf"], ret: "i32" },
    }).fns.emu_launch_by_name!;
  const mainLib = open(build(mainSource(), "-O1"));
  const ewLib = open(
    build(PRELUDE + specs.map((s) => ewKernels(s, prefix.get(ewKey(s))!)).join(""), "-O0"),
  );

  const driver = {
    memsetD8: (p: bigint, v: number, bytes: number) => void libc.memset(p, v, BigInt(bytes)),
    copyHtoD: (dst: bigint, src: ArrayBufferView) => void toDev(dst, src, BigInt(src.byteLength)),
    copyDtoH: (dst: ArrayBufferView, src: bigint) => void toHost(dst, src, BigInt(dst.byteLength)),
    copyDtoD: (dst: bigint, src: bigint, bytes: number) => void devDev(dst, src, BigInt(bytes)),
    streamSync: () => {},
    memInfo: () => ({ free: 0, total: 0 }),
    version: 0,
  } as unknown as Driver;

  const ELEM = { f32: 4, f64: 8, f16: 2, bf16: 2 } as const;
  /** Elements of an operand the plan touches, read into f64. */
  const readOperand = (addr: bigint, dtype: GemmCall["dtype"], n: number): Float64Array => {
    const raw = dtype === "f32"
      ? new Float32Array(n)
      : dtype === "f64"
      ? new Float64Array(n)
      : new Uint16Array(n);
    if (n > 0) toHost(raw, addr, BigInt(n * ELEM[dtype]));
    return Float64Array.from(
      raw instanceof Uint16Array ? decode16(dtype as "f16" | "bf16", raw) : raw,
    );
  };
  const cublas = {
    path: "emulated",
    version: 0,
    handle: 0n,
    destroy: () => {},
    gemm(c: GemmCall) {
      const p = {
        ...c.plan,
        first: { ...c.plan.first, offset: 0 },
        second: { ...c.plan.second, offset: 0 },
      };
      // Elements an operand reaches: op(X) is R×C, element (i, j) at i + j·ld (or j + i·ld transposed).
      const need = (o: typeof p.first, R: number, C: number) =>
        (p.batch - 1) * o.batchStride +
        (o.trans ? C - 1 + (R - 1) * o.ld : R - 1 + (C - 1) * o.ld) + 1;
      const B = readOperand(c.b, c.dtype, need(p.first, p.m, p.k));
      const A = readOperand(c.a, c.dtype, need(p.second, p.k, p.n));
      const C = new Float64Array(p.batch * p.strideC);
      colMajorGemm(p, A, B, C);
      const out = c.dtype === "f64"
        ? C
        : c.dtype === "f32"
        ? Float32Array.from(C)
        : encode16(c.dtype, Float32Array.from(C));
      if (out.length > 0) toDev(c.c, out, BigInt(out.byteLength));
    },
  } as Cublas;

  return {
    driver,
    nvrtc: {
      path: "emulated",
      version: [0, 0],
      archs: [],
      compile: () => {
        throw new Error("the emulated runtime compiles with g++");
      },
    },
    cublas,
    stream: 0n,
    allocator,
    errWord,
    device: { name: "CPU emulation", cc: 90, sms: 1, memory: 0 },
    precision: "f32",
    launch(_source, key, name, grid, block, args) {
      const fn = key === "main" ? mainLib : ewLib;
      const kernel = key === "main"
        ? name
        : `${prefix.get(key.slice("ew:".length))}_${name.slice("ew_".length)}`;
      const params = packParams(ffi, args);
      const rc = fn(
        cStringBuf(kernel),
        grid[0],
        grid[1] ?? 1,
        grid[2] ?? 1,
        block,
        params.pointers,
      );
      if (rc !== 0) throw new Error(`emulator: no kernel ${kernel} (${key})`);
    },
    compiled: () => ["main", "ew"],
  };
}
