/**
 * The CUDA driver API (libcuda.so.1) through our FFI: init, device, primary context, memory,
 * async copies on one stream, modules, kernel launches and events. Every call's status is checked
 * and a failure throws a CudaError naming the call. Handles and device pointers are bigints.
 */
import { cStringBuf, type Ffi, type FfiFn, type FfiSig, outI32, outU64 } from "../platform/ffi.ts";
import { makeCheck } from "./errors.ts";
import { loadLibrary } from "./libs.ts";
import type { PackedParams } from "./params.ts";

const I = "i32", U = "u32", P = "u64", B = "buf";
const sig = (args: FfiSig["args"], optional = false): FfiSig => ({ args, ret: I, optional });

/** Exported names (the _v2 entry points are the current ABI of the unversioned macros in cuda.h). */
export const DRIVER_SIGS: Record<string, FfiSig> = {
  cuInit: sig([U]),
  cuDriverGetVersion: sig([B]),
  cuGetErrorName: sig([I, B]),
  cuDeviceGetCount: sig([B]),
  cuDeviceGet: sig([B, I]),
  cuDeviceGetAttribute: sig([B, I, I]),
  cuDeviceGetName: sig([B, I, I]),
  cuDeviceTotalMem_v2: sig([B, I]),
  cuDevicePrimaryCtxRetain: sig([B, I]),
  cuCtxSetCurrent: sig([P]),
  cuCtxSynchronize: sig([]),
  cuStreamCreate: sig([B, U]),
  cuStreamSynchronize: sig([P]),
  cuMemAlloc_v2: sig([B, P]),
  cuMemFree_v2: sig([P]),
  cuMemGetInfo_v2: sig([B, B]),
  cuMemcpyHtoDAsync_v2: sig([P, B, P, P]),
  cuMemcpyDtoHAsync_v2: sig([B, P, P, P]),
  cuMemcpyDtoDAsync_v2: sig([P, P, P, P]),
  cuMemsetD8Async: sig([P, U, P, P]),
  cuModuleLoadData: sig([B, B]),
  cuModuleGetFunction: sig([B, P, B]),
  cuLaunchKernel: sig([P, U, U, U, U, U, U, U, P, B, B]),
  cuEventCreate: sig([B, U]),
  cuEventRecord: sig([P, P]),
  cuEventSynchronize: sig([P]),
  cuEventElapsedTime: sig([B, P, P]),
  cuEventDestroy_v2: sig([P]),
};

/** CUdevice_attribute values used here (cuda.h). */
export const ATTR = {
  MAX_THREADS_PER_BLOCK: 1,
  MULTIPROCESSOR_COUNT: 16,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
} as const;
/** CU_STREAM_NON_BLOCKING: no implicit synchronisation with the legacy default stream. */
export const STREAM_NON_BLOCKING = 1;

export interface Dims3 {
  x: number;
  y?: number;
  z?: number;
}

export interface Driver {
  path: string;
  version: number;
  init(): void;
  deviceCount(): number;
  device(ordinal: number): number;
  attribute(dev: number, attr: number): number;
  deviceName(dev: number): string;
  totalMem(dev: number): number;
  retainPrimaryContext(dev: number): bigint;
  setCurrent(ctx: bigint): void;
  synchronize(): void;
  createStream(flags?: number): bigint;
  streamSync(stream: bigint): void;
  memAlloc(bytes: number): bigint;
  memFree(ptr: bigint): void;
  memInfo(): { free: number; total: number };
  copyHtoD(dst: bigint, src: ArrayBufferView, stream: bigint): void;
  copyDtoH(dst: ArrayBufferView, src: bigint, stream: bigint): void;
  copyDtoD(dst: bigint, src: bigint, bytes: number, stream: bigint): void;
  memsetD8(dst: bigint, value: number, bytes: number, stream: bigint): void;
  loadModule(image: Uint8Array): bigint;
  getFunction(module: bigint, name: string): bigint;
  launch(
    fn: bigint,
    grid: Dims3,
    block: Dims3,
    sharedBytes: number,
    stream: bigint,
    params: PackedParams,
    name?: string,
  ): void;
  createEvent(): bigint;
  record(ev: bigint, stream: bigint): void;
  eventSync(ev: bigint): void;
  elapsedMs(start: bigint, end: bigint): number;
  destroyEvent(ev: bigint): void;
}

const bytesOf = (v: ArrayBufferView) => BigInt(v.byteLength);

/** Wrap an opened libcuda into checked calls. */
export function makeDriver(ffi: Ffi, path: string, fns: Record<string, FfiFn | null>): Driver {
  const f = fns as Record<string, FfiFn>;
  const nameOut = outU64();
  const lookup = (code: number): string | null => {
    if (Number(f.cuGetErrorName(code, nameOut)) !== 0) return null;
    return ffi.cString(nameOut[0]);
  };
  const check = makeCheck("driver", lookup);
  const call = (name: string, ...args: unknown[]) => check(name, f[name](...args));
  const i32 = outI32(), u64 = outU64(), u64b = outU64();
  const getI = (name: string, ...rest: unknown[]) => (call(name, i32, ...rest), i32[0]);
  const getH = (name: string, ...rest: unknown[]) => (call(name, u64, ...rest), u64[0]);
  const versionOut = outI32();
  const version = Number(f.cuDriverGetVersion(versionOut)) === 0 ? versionOut[0] : 0;
  return {
    path,
    version,
    init: () => call("cuInit", 0),
    deviceCount: () => getI("cuDeviceGetCount"),
    device: (ordinal) => getI("cuDeviceGet", ordinal),
    attribute: (dev, attr) => getI("cuDeviceGetAttribute", attr, dev),
    deviceName(dev) {
      const buf = new Uint8Array(new ArrayBuffer(256));
      call("cuDeviceGetName", buf, 256, dev);
      return new TextDecoder().decode(buf.subarray(0, buf.indexOf(0)));
    },
    totalMem: (dev) => Number(getH("cuDeviceTotalMem_v2", dev)),
    retainPrimaryContext: (dev) => getH("cuDevicePrimaryCtxRetain", dev),
    setCurrent: (ctx) => call("cuCtxSetCurrent", ctx),
    synchronize: () => call("cuCtxSynchronize"),
    createStream: (flags = STREAM_NON_BLOCKING) => getH("cuStreamCreate", flags),
    streamSync: (stream) => call("cuStreamSynchronize", stream),
    memAlloc(bytes) {
      check("cuMemAlloc_v2", f.cuMemAlloc_v2(u64, BigInt(bytes)), () => `${bytes} bytes`);
      return u64[0];
    },
    memFree: (ptr) => call("cuMemFree_v2", ptr),
    memInfo() {
      call("cuMemGetInfo_v2", u64, u64b);
      return { free: Number(u64[0]), total: Number(u64b[0]) };
    },
    copyHtoD: (dst, src, stream) => call("cuMemcpyHtoDAsync_v2", dst, src, bytesOf(src), stream),
    copyDtoH: (dst, src, stream) => call("cuMemcpyDtoHAsync_v2", dst, src, bytesOf(dst), stream),
    copyDtoD: (dst, src, bytes, stream) =>
      call("cuMemcpyDtoDAsync_v2", dst, src, BigInt(bytes), stream),
    memsetD8: (dst, value, bytes, stream) =>
      call("cuMemsetD8Async", dst, value, BigInt(bytes), stream),
    loadModule: (image) => getH("cuModuleLoadData", image),
    getFunction(module, name) {
      check(
        "cuModuleGetFunction",
        f.cuModuleGetFunction(u64, module, cStringBuf(name)),
        () => `kernel ${name}`,
      );
      return u64[0];
    },
    launch(fn, grid, block, sharedBytes, stream, params, name = "kernel") {
      const st = f.cuLaunchKernel(
        fn,
        grid.x,
        grid.y ?? 1,
        grid.z ?? 1,
        block.x,
        block.y ?? 1,
        block.z ?? 1,
        sharedBytes,
        stream,
        params.pointers,
        null,
      );
      check(
        "cuLaunchKernel",
        st,
        () =>
          `${name} grid (${grid.x}, ${grid.y ?? 1}, ${grid.z ?? 1}) block (${block.x}, ${
            block.y ?? 1
          }, ${block.z ?? 1})`,
      );
    },
    createEvent: () => getH("cuEventCreate", 0),
    record: (ev, stream) => call("cuEventRecord", ev, stream),
    eventSync: (ev) => call("cuEventSynchronize", ev),
    elapsedMs(start, end) {
      const ms = new Float32Array(new ArrayBuffer(4));
      call("cuEventElapsedTime", ms, start, end);
      return ms[0];
    },
    destroyEvent: (ev) => call("cuEventDestroy_v2", ev),
  };
}

/** Open libcuda; never throws (`driver` null and `reason` saying why). */
export function loadDriver(
  ffi: Ffi,
  env: (n: string) => string | undefined,
): { driver: Driver | null; reason: string } {
  const r = loadLibrary(ffi, "driver", env, DRIVER_SIGS, (path, fns) => makeDriver(ffi, path, fns));
  return { driver: r.value, reason: r.reason };
}
