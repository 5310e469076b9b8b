/**
 * PyTorch's `torch.save` files (the zip format, PyTorch >= 1.6): `<archive>/data.pkl` (a pickle)
 * and one `<archive>/data/<key>` entry per storage. The pickle is run by our safe subset
 * (pickle.ts) with only the globals that tensors and state dicts need:
 *   collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter,
 *   and the typed storage classes (torch.FloatStorage, …) as persistent-id tags.
 * Every tensor's view (offset, sizes, strides) is checked to lie inside its storage.
 */
import type { DType, StorageArray } from "../tensor/dtype.ts";
import { cast } from "../tensor/ops/elementwise.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { readFileBytes } from "./atomic.ts";
import {
  describe,
  isGlobal,
  isTuple,
  PickleError,
  type PyDict,
  type PyValue,
  unpickle,
} from "./pickle.ts";
import { adoptHostArray, gatherStrided, swapBytes } from "./safetensors.ts";
import { readZip, zipData, ZipError } from "./zip.ts";

export class TorchFileError extends Error {
  override name = "TorchFileError";
}

/** Storage classes and how their elements are stored. */
const STORAGES: Record<
  string,
  {
    itemsize: number;
    kind: "f32" | "f64" | "f16" | "bf16" | "i64" | "i32" | "i16" | "i8" | "u8" | "bool";
  }
> = {
  FloatStorage: { itemsize: 4, kind: "f32" },
  DoubleStorage: { itemsize: 8, kind: "f64" },
  HalfStorage: { itemsize: 2, kind: "f16" },
  BFloat16Storage: { itemsize: 2, kind: "bf16" },
  LongStorage: { itemsize: 8, kind: "i64" },
  IntStorage: { itemsize: 4, kind: "i32" },
  ShortStorage: { itemsize: 2, kind: "i16" },
  CharStorage: { itemsize: 1, kind: "i8" },
  ByteStorage: { itemsize: 1, kind: "u8" },
  BoolStorage: { itemsize: 1, kind: "bool" },
};

interface StorageRef {
  type: string;
  key: string;
  numel: number;
  bytes: Uint8Array;
}

/** A tensor as the pickle describes it; its data is materialised by torchTensor. */
export interface TorchTensorRef {
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

export const isTensorRef = (v: PyValue): v is { kind: "object"; value: TorchTensorRef } =>
  typeof v === "object" && v !== null && (v as { kind?: string }).kind === "object" &&
  typeof (v as { value?: { storage?: unknown } }).value?.storage === "object";

const intList = (v: PyValue, what: string): number[] => {
  if (!isTuple(v) && !Array.isArray(v)) {
    throw new Error(`${what} must be a tuple of ints, got ${describe(v)}`);
  }
  const items = isTuple(v) ? v.items : v;
  return items.map((x, i) => {
    if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0) {
      throw new Error(`${what}[${i}] is ${describe(x)}, not a non-negative int`);
    }
    return x;
  });
};

/**
 * The persistent-id loader both torch.save formats share: ('storage', type, key, location, numel)
 * (zip) or the same plus view metadata None (legacy); `bytesOf` returns the storage's data.
 */
function storageLoader(
  bytesOf: (key: string, type: string, numel: number) => Uint8Array,
): (pid: PyValue) => PyValue {
  const storages = new Map<string, StorageRef>();
  return (pid) => {
    const n = isTuple(pid) ? pid.items.length : 0;
    if (
      !isTuple(pid) || (n !== 5 && !(n === 6 && pid.items[5] === null)) ||
      pid.items[0] !== "storage"
    ) {
      throw new Error(`expected ('storage', type, key, location, numel), got ${describe(pid)}`);
    }
    const [, type, key, , numel] = pid.items;
    if (!isGlobal(type) || type.module !== "torch" || !STORAGES[type.name]) {
      throw new Error(`storage type ${describe(type)} is not supported`);
    }
    if (
      typeof key !== "string" || typeof numel !== "number" || !Number.isSafeInteger(numel) ||
      numel < 0
    ) throw new Error(`bad storage key ${describe(key)} or size ${describe(numel)}`);
    let s = storages.get(key);
    if (!s) {
      s = { type: type.name, key, numel, bytes: bytesOf(key, type.name, numel) };
      storages.set(key, s);
    } else if (s.type !== type.name) {
      throw new Error(`storage ${key} is used as both ${s.type} and ${type.name}`);
    }
    return { kind: "object", value: s };
  };
}

function rebuildTensor(args: PyValue[]): PyValue {
  if (args.length < 4) {
    throw new Error(`needs (storage, offset, size, stride, …), got ${args.length} arguments`);
  }
  const [st, off, size, stride] = args;
  const storage = (st as { value?: StorageRef })?.value;
  if (!storage || !(storage.bytes instanceof Uint8Array)) {
    throw new Error(`first argument must be a storage, got ${describe(st)}`);
  }
  if (typeof off !== "number" || !Number.isSafeInteger(off) || off < 0) {
    throw new Error(`storage offset ${describe(off)} is not a non-negative int`);
  }
  const shape = intList(size, "size"), strides = intList(stride, "stride");
  if (shape.length !== strides.length) {
    throw new Error(`size has ${shape.length} dims but stride has ${strides.length}`);
  }
  if (!shape.includes(0)) {
    let last = off;
    for (let i = 0; i < shape.length; i++) last += (shape[i] - 1) * strides[i];
    if (last >= storage.numel) {
      throw new Error(
        `view (offset ${off}, size [${shape}], stride [${strides}]) reaches element ${last} of a ${storage.numel}-element storage`,
      );
    }
  }
  const ref: TorchTensorRef = { storage, offset: off, shape, stride: strides };
  return { kind: "object", value: ref };
}

/** The globals a pickle of tensors and state dicts may call. */
const TENSOR_GLOBALS: Record<string, (args: PyValue[]) => PyValue> = {
  "collections.OrderedDict": (a) => {
    if (a.length > 0) throw new Error("OrderedDict with arguments is not supported");
    return new Map();
  },
  "torch._utils._rebuild_tensor_v2": rebuildTensor,
  "torch._utils._rebuild_parameter": (a) => {
    if (!isTensorRef(a[0])) throw new Error(`expects a tensor, got ${describe(a[0])}`);
    return a[0];
  },
};

/** Run the pickle of a torch.save archive and return its value (tensors as TorchTensorRef objects). */
export function parseTorch(bytes: Uint8Array, source = "<bytes>"): PyValue {
  try {
    const zip = readZip(bytes, source);
    const pkl = [...zip.keys()].filter((n) => n.endsWith("/data.pkl") && n.split("/").length === 2);
    if (pkl.length !== 1) {
      throw new TorchFileError(
        `${source}: expected one <archive>/data.pkl entry, found ${
          pkl.length === 0 ? "none" : pkl.join(", ")
        } (legacy non-zip torch files are not supported)`,
      );
    }
    const prefix = pkl[0].slice(0, -"data.pkl".length);
    const order = zip.get(prefix + "byteorder");
    const bigEndian = order
      ? new TextDecoder().decode(zipData(bytes, order, source)).trim() === "big"
      : false;
    const persistentLoad = storageLoader((key, type, numel) => {
      const e = zip.get(`${prefix}data/${key}`);
      if (!e) throw new Error(`storage ${key}: no entry ${prefix}data/${key} in the archive`);
      const { itemsize } = STORAGES[type];
      if (e.size !== numel * itemsize) {
        throw new Error(
          `storage ${key}: entry holds ${e.size} bytes but ${numel} × ${itemsize}-byte elements need ${
            numel * itemsize
          }`,
        );
      }
      const data = zipData(bytes, e, source).slice(); // aligned, and safe to byte-swap
      if (bigEndian && itemsize > 1) swapBytes(data, itemsize);
      return data;
    });
    return unpickle(zipData(bytes, zip.get(pkl[0])!, source), {
      source: `${source}:${pkl[0]}`,
      persistentLoad,
      globals: TENSOR_GLOBALS,
      // OrderedDict state (a state dict's `_metadata`) and tensor state carry nothing we use.
      build: (obj) => obj,
    });
  } catch (e) {
    if (e instanceof ZipError || e instanceof PickleError) throw new TorchFileError(e.message);
    throw e;
  }
}

/**
 * One storage in PyTorch's legacy (pre-zip) serialisation, as `pickle.dump` of a tensor embeds it
 * (torch.storage._load_from_bytes): pickles of the magic number, the protocol version, the system
 * info and the storage object, the storage keys, then per key an int64 element count and the raw
 * elements.
 */
function legacyStorage(b: Uint8Array, source: string): PyValue {
  let p = 0;
  const next = (what: string, persistentLoad?: (pid: PyValue) => PyValue): PyValue => {
    const v = unpickle(b.subarray(p), {
      source: `${source} (legacy ${what} at byte ${p})`,
      globals: {},
      persistentLoad,
      stoppedAt: (end) => (p += end),
    });
    return v;
  };
  const magic = next("magic number");
  if (magic !== 0x1950a86a20f9469cfc6cn) {
    throw new TorchFileError(`${source}: not a legacy torch storage (magic ${describe(magic)})`);
  }
  const version = next("protocol version");
  if (version !== 1001) {
    throw new TorchFileError(
      `${source}: legacy protocol version ${describe(version)}, expected 1001`,
    );
  }
  const info = next("system info");
  const little = !(info instanceof Map) || info.get("little_endian") !== false;
  const pending: { key: string; type: string; numel: number; out: Uint8Array }[] = [];
  const value = next(
    "storage",
    storageLoader((key, type, numel) => {
      const out = new Uint8Array(numel * STORAGES[type].itemsize);
      pending.push({ key, type, numel, out });
      return out;
    }),
  );
  const keys = next("storage keys");
  if (!Array.isArray(keys)) {
    throw new TorchFileError(
      `${source}: legacy storage keys must be a list, got ${describe(keys)}`,
    );
  }
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (const key of keys) {
    const s = pending.find((x) => x.key === key);
    if (!s) {
      throw new TorchFileError(`${source}: legacy storage key ${describe(key)} was never used`);
    }
    if (p + 8 > b.length) throw new TorchFileError(`${source}: storage ${s.key} is cut short`);
    const n = Number(dv.getBigInt64(p, little));
    p += 8;
    if (n !== s.numel || p + s.out.length > b.length) {
      throw new TorchFileError(
        `${source}: storage ${s.key} holds ${n} elements (${
          b.length - p
        } bytes left), the pickle says ${s.numel}`,
      );
    }
    s.out.set(b.subarray(p, p + s.out.length));
    p += s.out.length;
    if (!little && STORAGES[s.type].itemsize > 1) swapBytes(s.out, STORAGES[s.type].itemsize);
  }
  return value;
}

/**
 * A pickle holding tensors: a torch.save file (zip), or a plain `pickle.dump` of dicts and lists of
 * tensors, whose storages travel as legacy torch.save bytes (torch.storage._load_from_bytes).
 */
export function parsePickledTensors(bytes: Uint8Array, source = "<bytes>"): PyValue {
  if (bytes[0] === 0x50 && bytes[1] === 0x4b) return parseTorch(bytes, source);
  try {
    return unpickle(bytes, {
      source,
      globals: {
        ...TENSOR_GLOBALS,
        "torch.storage._load_from_bytes": (a) => {
          if (!(a[0] instanceof Uint8Array)) {
            throw new Error(`expects bytes, got ${describe(a[0])}`);
          }
          return legacyStorage(a[0], source);
        },
      },
      build: (obj) => obj,
    });
  } catch (e) {
    if (e instanceof PickleError) throw new TorchFileError(e.message);
    throw e;
  }
}

/** A TorchTensorRef as a contiguous tensor. Long tensors become i32 (range-checked) unless asked for f64/f32. */
export function torchTensor(
  ref: TorchTensorRef,
  name: string,
  opts: { dtype?: DType } = {},
): Tensor {
  const { storage: s, shape, stride, offset } = ref;
  const buf = s.bytes.buffer.slice(s.bytes.byteOffset, s.bytes.byteOffset + s.bytes.byteLength);
  const kind = STORAGES[s.type].kind;
  let arr: StorageArray, dtype: DType;
  switch (kind) {
    case "f32":
      [arr, dtype] = [new Float32Array(buf), "f32"];
      break;
    case "f64":
      [arr, dtype] = [new Float64Array(buf), "f64"];
      break;
    case "f16":
      [arr, dtype] = [new Uint16Array(buf), "f16"];
      break;
    case "bf16":
      [arr, dtype] = [new Uint16Array(buf), "bf16"];
      break;
    case "i32":
      [arr, dtype] = [new Int32Array(buf), "i32"];
      break;
    case "i16":
      [arr, dtype] = [Int32Array.from(new Int16Array(buf)), "i32"];
      break;
    case "i8":
      [arr, dtype] = [Int32Array.from(new Int8Array(buf)), "i32"];
      break;
    case "u8":
      [arr, dtype] = [Int32Array.from(new Uint8Array(buf)), "i32"];
      break;
    case "bool":
      [arr, dtype] = [Uint8Array.from(new Uint8Array(buf), (v) => (v ? 1 : 0)), "bool"];
      break;
    default: {
      const src = new BigInt64Array(buf);
      const wantFloat = opts.dtype === "f64" || opts.dtype === "f32";
      const out = wantFloat ? new Float64Array(src.length) : new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        const v = src[i];
        if (!wantFloat && (v > 2147483647n || v < -2147483648n)) {
          throw new TorchFileError(
            `${name}: int64 element ${i} is ${v}, outside the i32 range; ask for dtype f64`,
          );
        }
        // f64 holds every integer only up to ±2^53; beyond it Number(v) would round silently.
        if (wantFloat && (v > 9007199254740992n || v < -9007199254740992n)) {
          throw new TorchFileError(
            `${name}: int64 element ${i} is ${v}, beyond ±2^53 where f64 cannot hold every integer`,
          );
        }
        out[i] = Number(v);
      }
      [arr, dtype] = [out, wantFloat ? "f64" : "i32"];
    }
  }
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new (arr.constructor as new (n: number) => StorageArray)(n);
  if (n > 0) gatherStrided(arr, out, shape, stride, offset);
  const t0 = adoptHostArray(out, dtype, shape);
  if (!opts.dtype || opts.dtype === dtype) return t0;
  const t1 = cast(t0, opts.dtype);
  t0.dispose();
  return t1;
}

/**
 * A state dict as named tensors. Nested dicts flatten with "." (as PyTorch names them); values
 * that are not tensors (ints, strings) are returned separately.
 */
export function stateDictOf(
  v: PyValue,
  source: string,
  opts: { dtype?: DType } = {},
): { tensors: Record<string, Tensor>; other: Record<string, PyValue> } {
  if (isTensorRef(v)) return { tensors: { "": torchTensor(v.value, source, opts) }, other: {} };
  if (!(v instanceof Map)) {
    throw new TorchFileError(
      `${source}: expected a state dict (a dict of tensors), got ${describe(v)}`,
    );
  }
  const tensors: [string, Tensor][] = [], other: [string, PyValue][] = [];
  const walk = (d: PyDict, pre: string) => {
    for (const [k, x] of d) {
      const name = pre + String(k);
      if (isTensorRef(x)) tensors.push([name, torchTensor(x.value, `${source}: ${name}`, opts)]);
      else if (x instanceof Map) walk(x, name + ".");
      else other.push([name, x]);
    }
  };
  try {
    walk(v, "");
  } catch (e) {
    for (const [, t] of tensors) t.dispose();
    throw e;
  }
  return { tensors: Object.fromEntries(tensors), other: Object.fromEntries(other) };
}

/** Load a torch.save file of a tensor or a state dict. */
export async function loadTorch(
  path: string,
  opts: { dtype?: DType } = {},
): Promise<{ tensors: Record<string, Tensor>; other: Record<string, PyValue> }> {
  return stateDictOf(parseTorch(await readFileBytes(path), path), path, opts);
}
