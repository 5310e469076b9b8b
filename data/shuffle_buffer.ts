/**
 * A shuffle buffer over a row stream, with dictionary_learning's ActivationBuffer behaviour: it
 * holds up to `capacity` rows, serves batches of rows drawn uniformly at random without
 * replacement from those not yet served, and refills from the stream once half of it has been
 * read. When the stream ends, the next epoch (a fresh pass) starts once fewer than a batch of
 * rows is left, so every row is served exactly once per epoch, rows of neighbouring epochs mix
 * only near the boundary, and no row is served a third time while another awaits its second
 * (even with a capacity above the dataset's size).
 *
 * Memory: `capacity` rows plus the stream's current chunk. Deterministic: the draws come from
 * our own integer generator (xoshiro128**, seeded by splitmix32), identical under Deno and Bun.
 */
import type { RowStream } from "./row_stream.ts";
import { rowSize } from "./row_stream.ts";

/** xoshiro128** with splitmix32 seeding: fast, 32-bit, reproducible everywhere. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  const split = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = split(), b = split(), c = split(), d = split();
  return () => {
    const r = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return r;
  };
}
const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k));

export interface ShuffleBufferOptions {
  /** Rows held (at least the batch size). */
  capacity: number;
  seed?: number;
  /** Passes over the stream before it is exhausted (default: unlimited). */
  epochs?: number;
}

export interface ShuffleBatch {
  x: Float32Array;
  rows: number;
  /** The epoch the stream was in when the batch was drawn. */
  epoch: number;
}

export class ShuffleBuffer {
  readonly size: number;
  readonly capacity: number;
  private readonly buf: Float32Array;
  /** Slots holding unread rows (the first `count`), then free slots: serving a row moves an index, not the row. */
  private readonly slots: Int32Array;
  private count = 0;
  private readonly next32: () => number;
  private it: Iterator<{ x: Float32Array; rows: number }> | null = null;
  private chunk: { x: Float32Array; rows: number } | null = null;
  private chunkAt = 0;
  private epochsStarted = 0;
  private rowsThisPass = 0;
  private exhausted = false;
  readonly epochs: number;
  /** Rows served so far. */
  served = 0;

  constructor(readonly stream: RowStream, o: ShuffleBufferOptions) {
    this.size = rowSize(stream);
    if (!Number.isSafeInteger(o.capacity) || o.capacity < 1) {
      throw new RangeError(`ShuffleBuffer: capacity must be a positive integer, got ${o.capacity}`);
    }
    this.capacity = o.capacity;
    this.epochs = o.epochs ?? Infinity;
    if (!(this.epochs >= 1)) {
      throw new RangeError(`ShuffleBuffer: epochs must be >= 1, got ${o.epochs}`);
    }
    this.buf = new Float32Array(this.capacity * this.size);
    this.slots = Int32Array.from({ length: this.capacity }, (_, i) => i);
    this.next32 = rng(o.seed ?? 0);
  }

  /** The epoch of the most recently started pass (0-based). */
  get epoch(): number {
    return Math.max(0, this.epochsStarted - 1);
  }

  /** Bytes this buffer holds (not counting the stream's chunk). */
  get bytes(): number {
    return this.buf.byteLength;
  }

  get unread(): number {
    return this.count;
  }

  /** Stop reading: close the stream's current pass (its file), keep nothing. Idempotent. */
  close(): void {
    this.it?.return?.(undefined);
    this.it = null;
    this.chunk = null;
    this.exhausted = true;
    this.count = 0;
  }

  /** Up to `n` rows; fewer only when the last epoch runs out; null when nothing is left. */
  next(n: number): ShuffleBatch | null {
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new RangeError(`ShuffleBuffer.next: batch size must be a positive integer, got ${n}`);
    }
    if (n > this.capacity) {
      throw new RangeError(
        `ShuffleBuffer.next: batch of ${n} rows exceeds the buffer capacity of ${this.capacity}`,
      );
    }
    if (this.count * 2 <= this.capacity || this.count < n) this.refill(n);
    const rows = Math.min(n, this.count);
    if (rows === 0) return null;
    const size = this.size, buf = this.buf, slots = this.slots;
    const out = new Float32Array(rows * size);
    for (let j = 0; j < rows; j++) {
      // Uniform in [0, count): multiply-high of a 32-bit draw (bias below count/2^32).
      const r = Math.floor((this.next32() * this.count) / 4294967296);
      const slot = slots[r];
      out.set(buf.subarray(slot * size, (slot + 1) * size), j * size);
      // Swap the served slot to the free region just past the unread ones.
      const last = --this.count;
      slots[r] = slots[last];
      slots[last] = slot;
    }
    this.served += rows;
    return { x: out, rows, epoch: this.epoch };
  }

  /**
   * Fill free slots from the stream. A new pass (epoch) starts only when fewer than `need` rows
   * are left: otherwise a capacity above the dataset's size would load several epochs at once and
   * serve a row again before the others had their turn in the current epoch.
   */
  private refill(need: number): void {
    const size = this.size;
    while (this.count < this.capacity && !this.exhausted) {
      if (!this.chunk || this.chunkAt >= this.chunk.rows) {
        if (!this.nextChunk(this.count < need)) break;
        continue;
      }
      const take = Math.min(this.capacity - this.count, this.chunk.rows - this.chunkAt);
      // Free slots follow the unread ones in `slots`; rows land wherever those slots are.
      for (let i = 0; i < take; i++) {
        const slot = this.slots[this.count + i], src = (this.chunkAt + i) * size;
        this.buf.set(this.chunk.x.subarray(src, src + size), slot * size);
      }
      this.chunkAt += take;
      this.count += take;
    }
  }

  private nextChunk(mayStartPass: boolean): boolean {
    for (;;) {
      if (this.it) {
        const r = this.it.next();
        if (!r.done) {
          if (r.value.x.length < r.value.rows * this.size) {
            throw new RangeError(
              `ShuffleBuffer: ${this.stream.path} gave a chunk of ${r.value.x.length} values for ${r.value.rows} rows of ${this.size}`,
            );
          }
          this.chunk = r.value;
          this.chunkAt = 0;
          this.rowsThisPass += r.value.rows;
          return true;
        }
        this.it = null;
        if (this.rowsThisPass === 0) {
          throw new RangeError(`ShuffleBuffer: ${this.stream.path} holds no rows`);
        }
      }
      if (this.epochsStarted >= this.epochs) {
        this.exhausted = true;
        return false;
      }
      if (!mayStartPass && this.epochsStarted > 0) return false;
      this.it = this.stream.open();
      this.epochsStarted++;
      this.rowsThisPass = 0;
    }
  }
}
