/**
 * One FFI layer over Deno.dlopen and bun:ffi. Signatures are written once in a neutral spelling;
 * pointers to native memory and opaque handles travel as u64 (a pointer-sized integer register on
 * x86-64), host memory as typed arrays. `openFirst` opens a library from candidate paths and
 * records why each one failed, so every caller can say what was tried.
 */
import { deno, granted, runtime } from "./runtime.ts";

/** Argument and result types: `buf` is host memory (a typed array, or null); `addr` a returned char*. */
export type FfiType = "i32" | "u32" | "i64" | "u64" | "f32" | "f64" | "buf" | "void" | "addr";

export interface FfiSig {
  args: readonly FfiType[];
  ret: FfiType;
  /** Missing from the library → the function is null instead of failing the load. */
  optional?: boolean;
}

export type FfiFn = (...args: unknown[]) => unknown;

export interface FfiLib {
  path: string;
  fns: Record<string, FfiFn | null>;
}

export interface Ffi {
  runtime: "deno" | "bun";
  /** Open the library at `path` (a file, or a soname for the loader); throws when it cannot. */
  open(path: string, sigs: Record<string, FfiSig>): FfiLib;
  /** The host address of a typed array's first element (its byteOffset included). */
  addressOf(view: ArrayBufferView): bigint;
  /** The NUL-terminated string at a host address. */
  cString(addr: bigint): string;
  /**
   * A `buf` argument for `view` from element `offset` on, made as cheaply as the runtime allows
   * (Bun: an address without a new view; Deno: a subarray, since a buffer argument is its start).
   */
  bufAt(view: Float32Array | Float64Array, offset: number): unknown;
}

/** Deno's spelling of a type (null for "addr", which is a pointer result). */
function denoType(t: FfiType): string {
  return t === "buf" ? "buffer" : t === "addr" ? "pointer" : t;
}

function bunType(t: FfiType): string {
  return t === "buf" || t === "addr" ? "ptr" : t;
}

function denoFfi(): Ffi {
  const D = deno!;
  return {
    runtime: "deno",
    open(path, sigs) {
      const defs: Record<string, unknown> = {};
      for (const [name, s] of Object.entries(sigs)) {
        defs[name] = {
          parameters: s.args.map(denoType),
          result: denoType(s.ret),
          optional: !!s.optional,
        };
      }
      const lib = D.dlopen!(path, defs);
      const fns: Record<string, FfiFn | null> = {};
      for (const [name, s] of Object.entries(sigs)) {
        const f = lib.symbols[name];
        if (!f) {
          fns[name] = null;
          continue;
        }
        // Pointer results come back as objects (or null); callers get plain addresses.
        fns[name] = s.ret === "addr"
          ? (...a: unknown[]) => {
            const p = f(...a);
            return p === null ? 0n : BigInt(D.UnsafePointer.value(p));
          }
          : f;
      }
      return { path, fns };
    },
    addressOf: (view) => BigInt(D.UnsafePointer.value(D.UnsafePointer.of(view))),
    cString: (
      addr,
    ) => (addr === 0n ? "" : D.UnsafePointerView.getCString(D.UnsafePointer.create(addr))),
    bufAt: (view, offset) => (offset === 0 ? view : view.subarray(offset)),
  };
}

function bunFfi(): Ffi {
  // Bun's synchronous require; a computed specifier keeps Deno from resolving Bun's module.
  // deno-lint-ignore no-explicit-any
  const req = (import.meta as any).require ?? (globalThis as any).require;
  const ffi = req("bun" + ":ffi");
  const one = (path: string, name: string, s: FfiSig) =>
    ffi.dlopen(path, { [name]: { args: s.args.map(bunType), returns: bunType(s.ret) } })
      .symbols[name];
  const ptr = ffi.ptr as (x: ArrayBufferView, byteOffset?: number) => number;
  return {
    runtime: "bun",
    open(path, sigs) {
      const required = Object.entries(sigs).filter(([, s]) => !s.optional);
      const defs: Record<string, unknown> = {};
      for (const [name, s] of required) {
        defs[name] = { args: s.args.map(bunType), returns: bunType(s.ret) };
      }
      const lib = ffi.dlopen(path, defs);
      const fns: Record<string, FfiFn | null> = {};
      for (const [name, s] of Object.entries(sigs)) {
        let f: FfiFn | null;
        if (!s.optional) f = lib.symbols[name];
        else {
          // bun:ffi has no optional symbols: probe each alone (dlopen is reference counted).
          try {
            f = one(path, name, s);
          } catch {
            f = null;
          }
        }
        fns[name] = f && s.ret === "addr"
          ? (...a: unknown[]) => BigInt((f as FfiFn)(...a) as number ?? 0)
          : f;
      }
      return { path, fns };
    },
    addressOf: (view) => BigInt(ptr(view)),
    cString: (addr) => (addr === 0n ? "" : String(new ffi.CString(Number(addr)))),
    // A typed array passed as "ptr" is converted natively (honouring its byteOffset; ~2x cheaper
    // than ptr()); ptr(view, bytes) is relative to the view's start and allocates no subarray.
    // ptr() rejects empty views.
    bufAt: (view, offset) => (offset === 0 ? view : ptr(view, offset * view.BYTES_PER_ELEMENT)),
  };
}

let cached: Ffi | null | undefined;

/** The runtime's FFI, or null when the runtime is neither Deno nor Bun. */
export function getFfi(): Ffi | null {
  if (cached === undefined) {
    cached = runtime === "deno" && deno?.dlopen ? denoFfi() : runtime === "bun" ? bunFfi() : null;
  }
  return cached;
}

/** Why a library could not be opened without FFI. */
export const NO_FFI = "no FFI: the runtime is neither Deno nor Bun";

/** What Deno says when --allow-ffi does not cover a path. */
export const FFI_DENIED = "Deno FFI permission not granted (run with --allow-ffi or -A)";

/** Whether FFI may open `path` (Deno's --allow-ffi may be scoped to some paths). */
export function ffiGranted(path: string): boolean {
  return granted({ name: "ffi", path });
}

/** One candidate that did not open, and why (the first line of the error). */
export interface Attempt {
  path: string;
  error: string;
  /** Whether it failed for want of Deno's FFI permission (not tried at all). */
  denied: boolean;
}

export interface Opened {
  lib: FfiLib | null;
  /** Every candidate that failed before `lib` opened (all of them when `lib` is null). */
  tried: Attempt[];
}

const firstLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0];

/**
 * Open the first of `candidates` that loads with every required symbol; never throws. A path
 * Deno's permission does not cover is recorded as denied and skipped (asking would prompt).
 */
export function openFirst(
  ffi: Ffi,
  candidates: readonly string[],
  sigs: Record<string, FfiSig>,
): Opened {
  const tried: Attempt[] = [];
  for (const path of candidates) {
    if (ffi.runtime === "deno" && !ffiGranted(path)) {
      tried.push({ path, error: FFI_DENIED, denied: true });
      continue;
    }
    try {
      return { lib: ffi.open(path, sigs), tried };
    } catch (e) {
      tried.push({ path, error: firstLine(e), denied: false });
    }
  }
  return { lib: null, tried };
}

/** The attempts as one line: "path: error; path: error". */
export function triedText(tried: readonly Attempt[]): string {
  return tried.map((t) => `${t.path}: ${t.error}`).join("; ");
}

/** A NUL-terminated UTF-8 copy of `s` in off-heap memory whose address stays put. */
export function cStringBuf(s: string): Uint8Array {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(new ArrayBuffer(bytes.length + 1));
  out.set(bytes);
  return out;
}

/** An array of char* (a `const char**`) for `strs`; `keep` must outlive the call that reads it. */
export function cStringArray(
  ffi: Ffi,
  strs: readonly string[],
): { ptrs: BigUint64Array; keep: Uint8Array[] } {
  const keep = strs.map(cStringBuf);
  const ptrs = new BigUint64Array(new ArrayBuffer(8 * Math.max(1, strs.length)));
  keep.forEach((b, i) => (ptrs[i] = ffi.addressOf(b)));
  return { ptrs, keep };
}

/** A one-slot out-parameter for a pointer-sized value (a handle or a device address). */
export function outU64(): BigUint64Array {
  return new BigUint64Array(new ArrayBuffer(8));
}

export function outI32(n = 1): Int32Array {
  return new Int32Array(new ArrayBuffer(4 * n));
}
