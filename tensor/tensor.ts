/** The Tensor value: shape, dtype and a strided view onto reference-counted backend storage. */
import type { Backend, Buf, View } from "./backend.ts";
import { type DataArray, decode16, type DType, type StorageArray } from "./dtype.ts";
import { contiguousStrides, fmt, type Shape, sizeOf } from "./shape.ts";
import { track } from "./scope.ts";

/**
 * Device memory is not seen by the GC, so storage is reference counted: each Tensor holds one
 * reference, `dispose()` (or `using`, or leaving a `tidy` scope) drops it, and the buffer is
 * freed when the last view goes. A FinalizationRegistry frees what was forgotten, as a safety net.
 */
export class Storage {
  refs = 0;
  constructor(readonly backend: Backend, public buf: Buf | null, readonly bytes: number) {
    live.buffers++;
    live.bytes += bytes;
  }
  retain(): void {
    this.refs++;
  }
  release(): void {
    if (--this.refs === 0 && this.buf !== null) {
      this.backend.free(this.buf);
      this.buf = null;
      live.buffers--;
      live.bytes -= this.bytes;
    }
  }
}

/**
 * Buffers allocated and not yet released (GC'd host buffers that were never disposed included),
 * and how many device buffers the GC safety net released.
 */
const live = { buffers: 0, bytes: 0, finalized: 0 };

/**
 * Live storage counts: flat across the steps of a training loop when tensors are released.
 * `finalizedBuffers` counts device buffers freed only because their last tensor was garbage
 * collected without `dispose()`: each is a leak that held device memory until the GC ran.
 */
export function memoryStats(): {
  liveBuffers: number;
  liveBytes: number;
  finalizedBuffers: number;
} {
  return { liveBuffers: live.buffers, liveBytes: live.bytes, finalizedBuffers: live.finalized };
}

const forgotten = new FinalizationRegistry<Storage>((s) => {
  const held = s.buf !== null;
  s.release();
  if (held && s.buf === null) live.finalized++;
});

/**
 * One field on every tensor for the layer above (autodiff keeps its tape there), typed by that
 * layer and reachable only through the accessor its one claim returns: this layer never reads it.
 */
export interface TensorSlot<T> {
  get(x: Tensor): T | undefined;
  set(x: Tensor, value: T | undefined): void;
}

let slot: TensorSlot<unknown> | null = null;
let slotOwner = "";

/** Claim the tensor slot; it has one owner per process, so a second claim throws. */
export function claimTensorSlot<T>(owner: string): TensorSlot<T> {
  if (slotOwner) {
    throw new Error(`claimTensorSlot: ${owner} cannot claim the slot, ${slotOwner} holds it`);
  }
  slotOwner = owner;
  return slot as TensorSlot<T>;
}

export class Tensor {
  #disposed = false;
  /** The claimed slot's value; a declared field keeps every tensor one shape for the JIT. */
  #slot: unknown = undefined;

  static {
    slot = {
      get: (x) => x.#slot,
      set: (x, value) => {
        x.#slot = value;
      },
    };
  }

  constructor(
    readonly storage: Storage,
    readonly shape: Shape,
    readonly dtype: DType,
    readonly strides: readonly number[] = contiguousStrides(shape),
    readonly offset = 0,
  ) {
    storage.retain();
    if (!storage.backend.hostMemory) forgotten.register(this, storage, this);
    track(this);
  }

  get size(): number {
    return sizeOf(this.shape);
  }
  get ndim(): number {
    return this.shape.length;
  }
  get backend(): Backend {
    return this.storage.backend;
  }
  get disposed(): boolean {
    return this.#disposed;
  }

  /** The strided view kernels consume. */
  view(): View {
    if (this.#disposed || this.storage.buf === null) {
      throw new Error(`tensor ${this.describe()} was used after dispose()`);
    }
    return {
      buf: this.storage.buf,
      dtype: this.dtype,
      shape: this.shape,
      strides: this.strides,
      offset: this.offset,
    };
  }

  isContiguous(): boolean {
    if (this.offset !== 0) return false;
    const cs = contiguousStrides(this.shape);
    return this.shape.every((d, i) => d === 1 || cs[i] === this.strides[i]);
  }

  /** A contiguous buffer with exactly this tensor's elements, and whether it is a fresh copy. */
  #compact(): { buf: Buf; fresh: boolean } {
    const v = this.view();
    if (this.isContiguous()) return { buf: v.buf, fresh: false };
    return { buf: this.backend.unary("copy", v, this.dtype), fresh: true };
  }

  #decode(raw: StorageArray): DataArray<DType> {
    return (this.dtype === "f16" || this.dtype === "bf16"
      ? decode16(this.dtype, raw as Uint16Array)
      : raw) as DataArray<DType>;
  }

  /** Read the values back (row-major); the only asynchronous step. f16/bf16 come back as f32. */
  async data(): Promise<DataArray<DType>> {
    const { buf, fresh } = this.#compact();
    try {
      return this.#decode(await this.backend.read(buf, this.dtype, this.size));
    } finally {
      if (fresh) this.backend.free(buf);
    }
  }

  /** Synchronous readback; only backends whose memory is on the host have it. */
  dataSync(): DataArray<DType> {
    const b = this.backend;
    if (!b.readSync) {
      throw new Error(
        `dataSync: the ${b.name} backend cannot read synchronously; use await t.data()`,
      );
    }
    const { buf, fresh } = this.#compact();
    try {
      return this.#decode(b.readSync(buf, this.dtype, this.size));
    } finally {
      if (fresh) b.free(buf);
    }
  }

  /** Nested arrays of numbers (booleans as 0/1). */
  async toArray(): Promise<NestedArray> {
    return nest(Array.from(await this.data()), this.shape);
  }

  /** The value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new Error(`item: tensor has shape ${fmt(this.shape)}, not one element`);
    }
    return (await this.data())[0];
  }

  describe(): string {
    return `Tensor(${fmt(this.shape)}, ${this.dtype}, ${this.backend.name})`;
  }

  /** Values are shown when they can be read synchronously (host backends), shape and dtype always. */
  toString(): string {
    if (this.#disposed) return `${this.describe()} <disposed>`;
    if (!this.backend.readSync) return this.describe();
    return `${this.describe()}\n${
      formatValues(Array.from(this.dataSync()), this.shape, this.dtype)
    }`;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (!this.storage.backend.hostMemory) forgotten.unregister(this);
    this.storage.release();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

export type NestedArray = number | NestedArray[];

function nest(flat: number[], shape: Shape): NestedArray {
  if (shape.length === 0) return flat[0];
  const [d, ...rest] = shape;
  const step = sizeOf(rest);
  return Array.from({ length: d }, (_, i) => nest(flat.slice(i * step, (i + 1) * step), rest));
}

const MAX_SHOWN = 6;

function formatValues(flat: number[], shape: Shape, dtype: DType): string {
  const f = (v: number) =>
    dtype === "bool"
      ? (v ? "true" : "false")
      : dtype === "i32"
      ? String(v)
      : Number(v.toPrecision(6)).toString();
  const go = (off: number, dims: Shape, indent: string): string => {
    if (dims.length === 0) return f(flat[off]);
    const [d, ...rest] = dims;
    const step = sizeOf(rest);
    const items: string[] = [];
    const show = d > MAX_SHOWN ? [0, 1, 2, -1, d - 3, d - 2, d - 1] : [...Array(d).keys()];
    for (const i of show) items.push(i < 0 ? "..." : go(off + i * step, rest, indent + " "));
    return rest.length === 0 ? `[${items.join(", ")}]` : `[${items.join(`,\n${indent} `)}]`;
  };
  return go(0, shape, "");
}
