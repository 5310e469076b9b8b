/**
 * The CUDA runtime of this process, opened on first use: libraries, device 0 (or
 * $SPARSECODER_CUDA_DEVICE, or this rank's own GPU under MPI: deviceOrdinal), its primary context, one non-blocking stream, the caching allocator,
 * cuBLAS on that stream, and the kernel modules, each compiled by NVRTC once and cached. When any
 * piece is missing, `cudaRuntime()` returns null and `cudaUnavailableReason()` says why.
 */
import { readEnv } from "../platform/env.ts";
import { getFfi } from "../platform/ffi.ts";
import { ATTR, type Driver, loadDriver } from "./driver.ts";
import { loadNvrtc, type Nvrtc } from "./nvrtc.ts";
import { type Cublas, loadCublas, type MatmulPrecision } from "./cublas.ts";
import { type Allocator, type Block, cachingAllocator } from "./allocator.ts";
import { CudaError } from "./errors.ts";
import { type KernelArg, packParams } from "./params.ts";
import { mainSource } from "./kernels/main.ts";
import { cacheDir, cacheGet, cachePut, hash64 } from "./module_cache.ts";

export interface CudaRuntime {
  driver: Driver;
  nvrtc: Nvrtc;
  cublas: Cublas;
  stream: bigint;
  allocator: Allocator;
  /** Four i32s on the device: the first index error a kernel found (code, index, size). */
  errWord: Block;
  device: { name: string; cc: number; sms: number; memory: number };
  precision: MatmulPrecision;
  /** Launch `name` from the module built from `source` (compiled and loaded on first use). */
  launch(
    source: () => string,
    moduleKey: string,
    name: string,
    grid: [number, number?, number?],
    block: number,
    args: KernelArg[],
  ): void;
  /** Modules compiled so far (the main module counts once). */
  compiled(): string[];
}

type Probe = { rt: CudaRuntime; reason: null } | { rt: null; reason: string };
let probe: Probe | undefined;

const env = (n: string) => readEnv(n);

function parsePrecision(v: string | undefined): MatmulPrecision {
  if (v === undefined || v === "" || v === "f32") return "f32";
  if (v === "tf32" || v === "bf16") return v;
  throw new Error(`SPARSECODER_CUDA_MATMUL=${v}: expected f32, tf32 or bf16`);
}

/**
 * $SPARSECODER_CUDA_DEVICE, else this rank's local index on its node modulo the GPUs (one GPU
 * per rank when an MPI launcher or Slurm started several ranks per node), else 0.
 */
export function deviceOrdinal(count: number, get = env): number {
  const forced = get("SPARSECODER_CUDA_DEVICE");
  if (forced !== undefined && forced !== "") return Number(forced);
  for (const v of ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]) {
    const local = Number(get(v));
    if (get(v) !== undefined && Number.isInteger(local) && local >= 0) return local % count;
  }
  return 0;
}

function open(): Probe {
  if (env("SPARSECODER_NO_CUDA") === "1") {
    return { rt: null, reason: "disabled by SPARSECODER_NO_CUDA=1" };
  }
  const ffi = getFfi();
  if (!ffi) return { rt: null, reason: "no FFI: the runtime is neither Deno nor Bun" };
  const d = loadDriver(ffi, env);
  if (!d.driver) return { rt: null, reason: d.reason };
  const driver = d.driver;
  let ordinal = 0, name: string, cc: number, sms: number, memory: number, stream: bigint;
  try {
    driver.init();
    const count = driver.deviceCount();
    ordinal = deviceOrdinal(count);
    if (count === 0) return { rt: null, reason: `${driver.path}: no CUDA device` };
    if (!(ordinal >= 0 && ordinal < count)) {
      return { rt: null, reason: `SPARSECODER_CUDA_DEVICE=${ordinal}: only ${count} device(s)` };
    }
    const dev = driver.device(ordinal);
    name = driver.deviceName(dev);
    cc = driver.attribute(dev, ATTR.COMPUTE_CAPABILITY_MAJOR) * 10 +
      driver.attribute(dev, ATTR.COMPUTE_CAPABILITY_MINOR);
    sms = driver.attribute(dev, ATTR.MULTIPROCESSOR_COUNT);
    memory = driver.totalMem(dev);
    driver.setCurrent(driver.retainPrimaryContext(dev));
    stream = driver.createStream();
  } catch (e) {
    return { rt: null, reason: `${driver.path}: ${(e as Error).message}` };
  }
  const n = loadNvrtc(ffi, env);
  if (!n.nvrtc) return { rt: null, reason: n.reason };
  const c = loadCublas(ffi, env, stream);
  if (!c.cublas) return { rt: null, reason: c.reason };
  const nvrtc = n.nvrtc;
  const allocator = cachingAllocator(
    { alloc: (b) => driver.memAlloc(b), free: (p) => driver.memFree(p) },
    (e) => e instanceof CudaError && e.code === 2,
  );
  const errWord = allocator.alloc(16);
  driver.memsetD8(errWord.ptr, 0, 16, stream);
  const modules = new Map<string, { module: bigint; fns: Map<string, bigint> }>();
  const disk = cacheDir(env);
  const getFn = (source: () => string, key: string, fname: string): bigint => {
    let m = modules.get(key);
    if (!m) {
      const src = source();
      const diskKey = `${hash64(`${nvrtc.version.join(".")}|sm_${cc}|${src}`)}.bin`;
      let image = cacheGet(disk, diskKey);
      if (!image) {
        image = nvrtc.compile(src, `${key.slice(0, 40).replace(/[^\w.-]/g, "_")}.cu`, cc).image;
        cachePut(disk, diskKey, image);
      }
      m = { module: driver.loadModule(image), fns: new Map() };
      modules.set(key, m);
    }
    let f = m.fns.get(fname);
    if (f === undefined) {
      f = driver.getFunction(m.module, fname);
      m.fns.set(fname, f);
    }
    return f;
  };
  const rt: CudaRuntime = {
    driver,
    nvrtc,
    cublas: c.cublas,
    stream,
    allocator,
    errWord,
    device: { name, cc, sms, memory },
    precision: parsePrecision(env("SPARSECODER_CUDA_MATMUL")),
    launch(source, key, fname, grid, block, args) {
      const f = getFn(source, key, fname);
      driver.launch(
        f,
        { x: grid[0], y: grid[1], z: grid[2] },
        { x: block },
        0,
        stream,
        packParams(ffi, args),
        fname,
      );
    },
    compiled: () => [...modules.keys()],
  };
  return { rt, reason: null };
}

/** The runtime, opened once; null when CUDA cannot be used here. */
export function cudaRuntime(): CudaRuntime | null {
  if (!probe) {
    try {
      probe = open();
    } catch (e) {
      probe = { rt: null, reason: `CUDA setup failed: ${(e as Error).message}` };
    }
  }
  return probe.rt;
}

/** Why the cuda backend cannot run here, or null when it can. */
export function cudaUnavailableReason(): string | null {
  cudaRuntime();
  return probe!.reason;
}

/** The runtime or an error saying why there is none. */
export function requireRuntime(): CudaRuntime {
  const rt = cudaRuntime();
  if (!rt) throw new Error(`cuda backend unavailable: ${probe!.reason}`);
  return rt;
}

/**
 * Replace the probed runtime (null: probe again on next use). For tests and tools that run the
 * backend's host side against a recording runtime, which needs no GPU.
 */
export function installRuntime(r: CudaRuntime | null): void {
  probe = r ? { rt: r, reason: null } : undefined;
}

/** The fixed kernels' module key and source. */
export const MAIN = { key: "main", source: mainSource };
