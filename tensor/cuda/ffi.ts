/**
 * One FFI layer over Deno.dlopen and bun:ffi for the CUDA bindings. Signatures are written once
 * in a neutral spelling; device pointers and opaque handles (CUcontext, CUstream, cublasHandle_t,
 * nvrtcProgram) travel as u64 (a pointer-sized integer register on x86-64), host memory as typed
 * arrays. Nothing here touches a GPU, so it is unit-tested against libc.
 */

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
  open(path: string, sigs: Record<string, FfiSig>): FfiLib;
  /** The host address of a typed array's first element (its byteOffset included). */
  addressOf(view: ArrayBufferView): bigint;
  /** The NUL-terminated string at a host address. */
  cString(addr: bigint): string;
}

const g = globalThis as any;

/** Deno's spelling of a type (null for "addr", which is a pointer result). */
function denoType(t: FfiType): string {
  return t === "buf" ? "buffer" : t === "addr" ? "pointer" : t;
}

function bunType(t: FfiType): string {
  return t === "buf" || t === "addr" ? "ptr" : t;
}

function denoFfi(): Ffi {
  const D = g.Deno;
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
      const lib = D.dlopen(path, defs);
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
  };
}

function bunFfi(): Ffi {
  // A computed specifier keeps Deno from resolving Bun's built-in module.
  const req = (import.meta as any).require ?? g.require;
  const ffi = req("bun" + ":ffi");
  const one = (path: string, name: string, s: FfiSig) =>
    ffi.dlopen(path, { [name]: { args: s.args.map(bunType), returns: bunType(s.ret) } })
      .symbols[name];
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
    addressOf: (view) => BigInt(ffi.ptr(view)),
    cString: (addr) => (addr === 0n ? "" : String(new ffi.CString(Number(addr)))),
  };
}

let cached: Ffi | null | undefined;

/** The runtime's FFI, or null when the runtime is neither Deno nor Bun. */
export function getFfi(): Ffi | null {
  if (cached === undefined) cached = g.Deno?.dlopen ? denoFfi() : g.Bun ? bunFfi() : null;
  return cached;
}

/** Whether Deno already holds a permission (an ungranted one would prompt on a terminal). */
export function denoGranted(desc: Record<string, string>): boolean {
  if (!g.Deno) return true;
  try {
    return g.Deno.permissions.querySync(desc).state === "granted";
  } catch {
    return false;
  }
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
