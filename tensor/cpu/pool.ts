/**
 * Recycles large typed arrays released by dispose/tidy. A fresh array's pages are faulted in on
 * first touch, which costs more than the kernel that fills it (seen: 35 ms to negate 16M floats
 * into new memory); a training loop that reuses its buffers avoids that entirely.
 */
import { totalmem } from "node:os";
import { allocStorage, byteSize, type DType, type StorageArray } from "../dtype.ts";
import { getFfi } from "../platform/ffi.ts";

const MIN_BYTES = 1 << 16;
/**
 * Large enough to hold a training step's working set (a d=512, F=8192, batch-2048 SAE step
 * releases ~1 GB of [2048, 8192] buffers; with a 1 GiB cap it re-faulted ~100 MB a step), and
 * bounded by a quarter of the machine's memory.
 */
const MAX_POOLED_BYTES = Math.min(4 * 2 ** 30, Math.floor(totalmem() / 4));
/**
 * Arrays kept per size: a 12-layer forward releases ~70 activations of one shape at the end of its
 * tidy; keeping only 16 of them re-faulted the rest on every forward (under Bun the GPT-2-small
 * bench went 707 → 908 tok/s with 256). MAX_POOLED_BYTES still bounds the total.
 */
const PER_SIZE = 256;

const pools = new Map<string, StorageArray[]>();
let pooled = 0;

const keyOf = (ctor: string, n: number) => `${ctor}:${n}`;

/** An array of `n` elements with arbitrary contents (callers overwrite every element). */
export function takeArray(dtype: DType, n: number): StorageArray {
  if (n * byteSize(dtype) >= MIN_BYTES) {
    const probe = allocStorage(dtype, 0).constructor.name;
    const list = pools.get(keyOf(probe, n));
    const a = list?.pop();
    if (a) {
      pooled -= a.byteLength;
      return a;
    }
  }
  return allocShared(dtype, n);
}

/**
 * A zeroed array; large ones in shared memory so worker threads can fill them (threads.ts), from
 * the buffer's first 64-byte boundary: Deno's shared buffers begin 16 or 32 bytes past one, so
 * every 32-byte load of the native kernels' streams straddled two cache lines (Adam on [8192,
 * 512]: 5.2–5.7 ms aligned against 5.7–5.9 ms 16 bytes off, in C).
 */
export function allocShared(dtype: DType, n: number, always = false): StorageArray {
  const bytes = n * byteSize(dtype);
  if (!always && bytes < MIN_BYTES) return allocStorage(dtype, n);
  const Ctor = allocStorage(dtype, 0).constructor as new (
    b: SharedArrayBuffer,
    offset?: number,
    length?: number,
  ) => StorageArray;
  const ffi = getFfi(), buf = new SharedArrayBuffer(bytes + (ffi ? LINE : 0));
  const at = ffi ? Number(ffi.addressOf(new Uint8Array(buf, 0, 1)) % BigInt(LINE)) : 0;
  const skip = at === 0 || (LINE - at) % byteSize(dtype) !== 0 ? 0 : LINE - at;
  const a = new Ctor(buf, skip, n);
  shared.add(a);
  return a;
}

const LINE = 64;
/** The arrays allocShared made: the only ones the pool takes back. */
const shared = new WeakSet<StorageArray>();

/** An array in shared memory whatever its size (pooled when large enough); give it back when done. */
export function takeShared(dtype: DType, n: number): StorageArray {
  return n * byteSize(dtype) >= MIN_BYTES ? takeArray(dtype, n) : allocShared(dtype, n, true);
}

/** Hand back an array nothing references any more. */
export function giveArray(a: StorageArray): void {
  if (a.byteLength < MIN_BYTES || pooled + a.byteLength > MAX_POOLED_BYTES) return;
  // Only allocShared's arrays are recycled, so whatever the pool hands out can go to worker
  // threads (arrays made elsewhere, e.g. uploads or views into another array, are left to the GC).
  if (!shared.has(a)) return;
  const k = keyOf(a.constructor.name, a.length);
  let list = pools.get(k);
  if (!list) pools.set(k, list = []);
  if (list.length >= PER_SIZE || list.includes(a)) return;
  list.push(a);
  pooled += a.byteLength;
}

export function pooledBytes(): number {
  return pooled;
}
