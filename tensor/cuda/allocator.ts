/**
 * A caching allocator over cuMemAlloc/cuMemFree. Freed blocks go back to a free list keyed by
 * their rounded size and are handed out again for the next request of that size, so a training
 * loop, whose step allocates the same sizes every time, stops calling the driver after its first
 * step and holds flat device memory. Release is deterministic: `free` is called when a tensor's
 * last reference goes (tidy/dispose), never by the GC alone. All work runs on one stream, so a
 * block freed after a launch can be reused by a later launch without waiting. When the driver
 * runs out of memory the cache is emptied and the allocation tried once more.
 */

export interface RawMemory {
  alloc(bytes: number): bigint;
  free(ptr: bigint): void;
}

export interface Block {
  readonly ptr: bigint;
  /** The rounded size actually reserved. */
  readonly bytes: number;
}

export interface AllocatorStats {
  /** Bytes in blocks handed out and not yet freed. */
  inUse: number;
  /** Bytes held in the free lists. */
  cached: number;
  /** Highest inUse + cached seen. */
  peak: number;
  /** Driver allocations made so far (flat across steps once the cache is warm). */
  driverAllocs: number;
  driverFrees: number;
}

export interface Allocator {
  alloc(bytes: number): Block;
  free(block: Block): void;
  /** Give every cached block back to the driver. */
  releaseCached(): void;
  stats(): AllocatorStats;
}

const SMALL = 1 << 20, SMALL_STEP = 512, LARGE_STEP = 2 << 20;

/** Requests round up to 512 B below 1 MiB and to 2 MiB above, so nearby sizes share blocks. */
export function roundSize(bytes: number): number {
  if (bytes <= 0) return 0;
  const step = bytes < SMALL ? SMALL_STEP : LARGE_STEP;
  return Math.ceil(bytes / step) * step;
}

/** `isOutOfMemory` tells a driver OOM (retry after emptying the cache) from other failures. */
export function cachingAllocator(
  raw: RawMemory,
  isOutOfMemory: (e: unknown) => boolean,
): Allocator {
  const pools = new Map<number, bigint[]>();
  const s: AllocatorStats = { inUse: 0, cached: 0, peak: 0, driverAllocs: 0, driverFrees: 0 };
  const empty: Block = { ptr: 0n, bytes: 0 };
  const releaseCached = () => {
    for (const [bytes, ptrs] of pools) {
      for (const p of ptrs) {
        raw.free(p);
        s.driverFrees++;
        s.cached -= bytes;
      }
    }
    pools.clear();
  };
  return {
    alloc(bytes) {
      const size = roundSize(bytes);
      if (size === 0) return empty;
      const pool = pools.get(size);
      let ptr = pool?.pop();
      if (ptr !== undefined) s.cached -= size;
      else {
        try {
          ptr = raw.alloc(size);
        } catch (e) {
          if (!isOutOfMemory(e) || s.cached === 0) throw e;
          releaseCached();
          ptr = raw.alloc(size);
        }
        s.driverAllocs++;
      }
      s.inUse += size;
      s.peak = Math.max(s.peak, s.inUse + s.cached);
      return { ptr, bytes: size };
    },
    free(block) {
      if (block.bytes === 0) return;
      s.inUse -= block.bytes;
      s.cached += block.bytes;
      const pool = pools.get(block.bytes);
      if (pool) pool.push(block.ptr);
      else pools.set(block.bytes, [block.ptr]);
    },
    releaseCached,
    stats: () => ({ ...s }),
  };
}
