/**
 * Where the CUDA libraries are looked for, and opening them with a reason when they are absent.
 * An explicit path in the environment is honoured exactly (no silent fallback); otherwise the
 * bare sonames go through the dynamic loader (LD_LIBRARY_PATH, ldconfig) and then the usual
 * install folders: the toolkit, the driver mounts of container images, and the NVIDIA wheels
 * that PyTorch installs.
 */
import {
  type Ffi,
  type FfiFn,
  type FfiLib,
  type FfiSig,
  openFirst as openCandidate,
} from "../platform/ffi.ts";

export type CudaLib = "driver" | "nvrtc" | "cublas" | "nccl";

/** The environment variable that forces one library's path. */
export const PATH_ENV: Record<CudaLib, string> = {
  driver: "SPARSECODER_CUDA_DRIVER",
  nvrtc: "SPARSECODER_NVRTC",
  cublas: "SPARSECODER_CUBLAS",
  nccl: "SPARSECODER_NCCL",
};

const SONAMES: Record<CudaLib, string[]> = {
  driver: ["libcuda.so.1"],
  nvrtc: ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"],
  cublas: ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"],
  nccl: ["libnccl.so.2", "libnccl.so"],
};

const SYSTEM_DIRS = [
  "/usr/local/cuda/lib64",
  "/usr/local/cuda/targets/x86_64-linux/lib",
  "/usr/lib/x86_64-linux-gnu",
];
const DRIVER_DIRS = [
  "/usr/local/nvidia/lib64",
  "/usr/lib/x86_64-linux-gnu",
  "/usr/lib64",
  "/usr/lib/wsl/lib",
];
// pip's NVIDIA wheels (CUDA 13 puts everything under nvidia/cu13/lib; CUDA 12 one folder per library).
const WHEEL_ROOTS = [
  "/opt/torch/.venv/lib/python3.12/site-packages",
  "/usr/local/lib/python3.12/dist-packages",
  "/usr/lib/python3/dist-packages",
];
const WHEEL_SUBDIRS: Record<CudaLib, string[]> = {
  driver: [],
  nvrtc: ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"],
  cublas: ["nvidia/cu13/lib", "nvidia/cublas/lib"],
  nccl: ["nvidia/cu13/lib", "nvidia/nccl/lib"],
};

/**
 * Candidate paths for one library, in the order they are tried. `env` reads variables:
 * the forcing variable, SPARSECODER_CUDA_LIBDIRS (colon-separated folders tried first), CUDA_HOME and CUDA_PATH.
 */
export function libraryCandidates(
  lib: CudaLib,
  env: (name: string) => string | undefined,
): string[] {
  const forced = env(PATH_ENV[lib]);
  if (forced) return [forced];
  const extra = (env("SPARSECODER_CUDA_LIBDIRS") ?? "").split(":").filter((d) => d);
  const homes = [env("CUDA_HOME"), env("CUDA_PATH")].filter((d): d is string => !!d).map((h) =>
    `${h}/lib64`
  );
  const dirs = lib === "driver" ? [...extra, ...DRIVER_DIRS] : [
    ...extra,
    ...homes,
    ...SYSTEM_DIRS,
    ...WHEEL_ROOTS.flatMap((r) => WHEEL_SUBDIRS[lib].map((s) => `${r}/${s}`)),
  ];
  const out: string[] = [];
  const add = (p: string) => {
    if (!out.includes(p)) out.push(p);
  };
  // Extra folders come before the loader's own search, so an explicit choice wins.
  for (const d of extra) for (const n of SONAMES[lib]) add(`${d}/${n}`);
  for (const n of SONAMES[lib]) add(n);
  for (const d of dirs) for (const n of SONAMES[lib]) add(`${d}/${n}`);
  return out;
}

const LABEL: Record<CudaLib, string> = {
  driver: "NVIDIA driver library libcuda.so.1",
  nvrtc: "NVRTC (libnvrtc.so)",
  cublas: "cuBLAS (libcublas.so)",
  nccl: "NCCL (libnccl.so.2)",
};

export interface Opened {
  lib: FfiLib | null;
  /** "loaded <path>", or why nothing could be opened (each path tried and its error). */
  reason: string;
}

/** Open the first candidate that loads with every required symbol; never throws. */
export function openFirst(
  ffi: Ffi,
  lib: CudaLib,
  candidates: readonly string[],
  sigs: Record<string, FfiSig>,
): Opened {
  const o = openCandidate(ffi, candidates, sigs);
  if (o.lib) return { lib: o.lib, reason: `loaded ${o.lib.path}` };
  if (o.tried[0]?.denied) return { lib: null, reason: `${lib}: ${o.tried[0].error}` };
  const errors = o.tried.map((t) => `${t.path}: ${t.error}`);
  // "No such file" for every path is the common case: say so once, with the paths tried.
  const missing = errors.filter((e) => /cannot open shared object|No such file/i.test(e));
  const other = errors.filter((e) => !missing.includes(e));
  const tried = candidates.length > 4
    ? `${candidates.slice(0, 4).join(", ")} and ${candidates.length - 4} more`
    : candidates.join(", ");
  const what = `${LABEL[lib]} not found`;
  return {
    lib: null,
    reason: other.length
      ? `${what}: ${other.slice(0, 2).join("; ")}`
      : `${what} (tried ${tried}; set ${PATH_ENV[lib]} or SPARSECODER_CUDA_LIBDIRS)`,
  };
}

/**
 * Open one library and wrap it (`make` may call into it and throw); never throws: `value` is null
 * and `reason` says why when either step fails.
 */
export function loadLibrary<T>(
  ffi: Ffi,
  lib: CudaLib,
  env: (n: string) => string | undefined,
  sigs: Record<string, FfiSig>,
  make: (path: string, fns: Record<string, FfiFn | null>) => T,
): { value: T | null; reason: string } {
  const o = openFirst(ffi, lib, libraryCandidates(lib, env), sigs);
  if (!o.lib) return { value: null, reason: o.reason };
  try {
    return { value: make(o.lib.path, o.lib.fns), reason: o.reason };
  } catch (e) {
    return { value: null, reason: `${o.lib.path}: ${(e as Error).message}` };
  }
}
