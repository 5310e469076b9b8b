/**
 * Recycles large typed arrays released by dispose/tidy. A fresh array's pages are faulted in on
 * first touch, which costs more than the kernel that fills it (seen: 35 ms to negate 16M floats
 * into new memory); a training loop that reuses its buffers avoids that entirely.
 */
import { totalmem } from "node:os";
import { allocStorage, byteSize, type DType, type StorageArray } from "../dtype.ts";

const MIN_BYTES = 1 << 16;
/**
 * Large enough to hold a training step's working set (a d=512, F=8192, batch-2048 SAE step
 * releases ~1 GB of [2048, 8192] buffers; with a 1 GiB cap it re-faulted ~100 MB a step), and
 * bounded by a quarter of the machine's memory.
 */
const MAX_POOLED_BYTES = Math.min(4 * 2 ** 30, Math.floor(totalmem() / 4));
const PER_SIZE = 16;

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

/** A zeroed array; large ones in shared memory so worker threads can fill them (threads.ts). */
export function allocShared(dtype: DType, n: number, always = false): StorageArray {
  if (!always && n * byteSize(dtype) < MIN_BYTES) return allocStorage(dtype, n);
  const Ctor = allocStorage(dtype, 0).constructor as new (b: SharedArrayBuffer) => StorageArray;
  return new Ctor(new SharedArrayBuffer(n * byteSize(dtype)));
}

/** An array in shared memory whatever its size (pooled when large enough); give it back when done. */
export function takeShared(dtype: DType, n: number): StorageArray {
  return n * byteSize(dtype) >= MIN_BYTES ? takeArray(dtype, n) : allocShared(dtype, n, true);
}

/** Hand back an array nothing references any more. */
export function giveArray(a: StorageArray): void {
  if (a.byteLength < MIN_BYTES || pooled + a.byteLength > MAX_POOLED_BYTES) return;
  // Only shared arrays are recycled, so whatever the pool hands out can go to worker threads
  // (arrays made elsewhere, e.g. uploads, are left to the GC).
  if (
    !(a.buffer instanceof SharedArrayBuffer) || a.byteOffset !== 0 ||
    a.byteLength !== a.buffer.byteLength
  ) return;
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
