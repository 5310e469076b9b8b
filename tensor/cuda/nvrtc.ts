/**
 * NVRTC (libnvrtc): CUDA C++ compiled at run time for the device's architecture. A cubin for
 * the exact sm_XY when this NVRTC knows the architecture, PTX for the newest one it knows
 * otherwise (the driver JIT-compiles PTX forward). A failed compile throws with the log.
 */
import {
  cStringArray,
  cStringBuf,
  type Ffi,
  type FfiFn,
  type FfiLib,
  type FfiSig,
  outI32,
  outU64,
} from "../platform/ffi.ts";
import { makeCheck } from "./errors.ts";
import { loadLibrary } from "./libs.ts";

const I = "i32", P = "u64", B = "buf";
const sig = (args: FfiSig["args"], optional = false): FfiSig => ({ args, ret: I, optional });

export const NVRTC_SIGS: Record<string, FfiSig> = {
  nvrtcVersion: sig([B, B]),
  nvrtcGetErrorString: { args: [I], ret: "addr" },
  nvrtcCreateProgram: sig([B, B, B, I, B, B]),
  nvrtcCompileProgram: sig([P, I, B]),
  nvrtcGetProgramLogSize: sig([P, B]),
  nvrtcGetProgramLog: sig([P, B]),
  nvrtcGetPTXSize: sig([P, B]),
  nvrtcGetPTX: sig([P, B]),
  nvrtcGetCUBINSize: sig([P, B]),
  nvrtcGetCUBIN: sig([P, B]),
  nvrtcDestroyProgram: sig([B]),
  nvrtcGetNumSupportedArchs: sig([B], true),
  nvrtcGetSupportedArchs: sig([B], true),
};

export interface Compiled {
  /** A cubin, or NUL-terminated PTX text; either loads with cuModuleLoadData. */
  image: Uint8Array;
  kind: "cubin" | "ptx";
  /** The target named to NVRTC, e.g. sm_90 or compute_90. */
  target: string;
  log: string;
}

export interface Nvrtc {
  path: string;
  version: [number, number];
  /** Architectures this NVRTC can target (e.g. [75, 80, ..., 120]); empty if it cannot say. */
  archs: number[];
  /** `ptx`: stop at PTX for compute_XY (no machine code; the driver JIT-compiles it when loaded). */
  compile(
    source: string,
    name: string,
    cc: number,
    opts?: { ptx?: boolean; options?: readonly string[] },
  ): Compiled;
}

/** The option list and artifact kind for compute capability `cc` (e.g. 90). */
export function targetFor(
  cc: number,
  archs: readonly number[],
  ptx = false,
): { option: string; kind: "cubin" | "ptx"; target: string } {
  if (!ptx && (archs.length === 0 || archs.includes(cc))) {
    return { option: `--gpu-architecture=sm_${cc}`, kind: "cubin", target: `sm_${cc}` };
  }
  const older = archs.filter((a) => a <= cc);
  const best = archs.length === 0 ? cc : older.length ? Math.max(...older) : Math.min(...archs);
  return { option: `--gpu-architecture=compute_${best}`, kind: "ptx", target: `compute_${best}` };
}

export function makeNvrtc(ffi: Ffi, path: string, fns: Record<string, FfiFn | null>): Nvrtc {
  const f = fns as Record<string, FfiFn>;
  const check = makeCheck(
    "nvrtc",
    (code) => ffi.cString(f.nvrtcGetErrorString(code) as bigint) || null,
  );
  const maj = outI32(), min = outI32();
  check("nvrtcVersion", f.nvrtcVersion(maj, min));
  let archs: number[] = [];
  if (fns.nvrtcGetNumSupportedArchs && fns.nvrtcGetSupportedArchs) {
    const n = outI32();
    check("nvrtcGetNumSupportedArchs", f.nvrtcGetNumSupportedArchs(n));
    const a = outI32(n[0]);
    check("nvrtcGetSupportedArchs", f.nvrtcGetSupportedArchs(a));
    archs = [...a];
  }
  const size = outU64();
  return {
    path,
    version: [maj[0], min[0]],
    archs,
    compile(source, name, cc, { ptx = false, options = [] } = {}) {
      const prog = outU64();
      check(
        "nvrtcCreateProgram",
        f.nvrtcCreateProgram(prog, cStringBuf(source), cStringBuf(name), 0, null, null),
        () => name,
      );
      const p = prog[0];
      try {
        const t = targetFor(cc, archs, ptx);
        const opts = cStringArray(ffi, [t.option, "--std=c++17", ...options]);
        const status = f.nvrtcCompileProgram(p, opts.keep.length, opts.ptrs);
        check("nvrtcGetProgramLogSize", f.nvrtcGetProgramLogSize(p, size));
        const logBuf = new Uint8Array(new ArrayBuffer(Math.max(1, Number(size[0]))));
        check("nvrtcGetProgramLog", f.nvrtcGetProgramLog(p, logBuf));
        const log = new TextDecoder().decode(logBuf.subarray(0, Math.max(0, logBuf.indexOf(0))))
          .trim();
        check("nvrtcCompileProgram", status, () => `${name} for ${t.target}\n${log}`);
        const [sizeFn, getFn] = t.kind === "cubin"
          ? ["nvrtcGetCUBINSize", "nvrtcGetCUBIN"]
          : ["nvrtcGetPTXSize", "nvrtcGetPTX"];
        check(sizeFn, f[sizeFn](p, size));
        const image = new Uint8Array(new ArrayBuffer(Number(size[0])));
        check(getFn, f[getFn](p, image));
        return { image, kind: t.kind, target: t.target, log };
      } finally {
        f.nvrtcDestroyProgram(prog);
      }
    },
  };
}

/**
 * NVRTC dlopens its builtins library by soname at compile time, which fails when NVRTC was found
 * in a folder outside the loader's path. Opening the sibling first makes that lookup succeed
 * (a loaded library answers to its soname). Best effort: absent siblings are left to the loader.
 */
const preloaded: FfiLib[] = [];

function preloadBuiltins(ffi: Ffi, path: string, [major, minor]: [number, number]): void {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return;
  for (const name of [`libnvrtc-builtins.so.${major}.${minor}`, `libnvrtc-builtins.so.${major}`]) {
    try {
      // bun:ffi wants one symbol at least: libc's strlen resolves through the library's dependencies.
      preloaded.push(
        ffi.open(`${path.slice(0, slash)}/${name}`, { strlen: { args: ["u64"], ret: "u64" } }),
      );
      return;
    } catch {
      // try the next spelling
    }
  }
}

/** Open NVRTC; never throws (`nvrtc` null and `reason` saying why). */
export function loadNvrtc(
  ffi: Ffi,
  env: (n: string) => string | undefined,
): { nvrtc: Nvrtc | null; reason: string } {
  const r = loadLibrary(ffi, "nvrtc", env, NVRTC_SIGS, (path, fns) => {
    const nvrtc = makeNvrtc(ffi, path, fns);
    preloadBuiltins(ffi, path, nvrtc.version);
    return nvrtc;
  });
  return { nvrtc: r.value, reason: r.reason };
}
