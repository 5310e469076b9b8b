/**
 * Where training batches come from: a deterministic function of the batch index, so a resumed
 * run sees exactly the batches the uninterrupted run would have seen.
 */
import type { Tensor } from "../tensor/tensor.ts";
import * as random from "../tensor/random.ts";
import { tensor } from "../tensor/ops/create.ts";
import { take } from "../tensor/ops/shape.ts";
import type { SyntheticSource } from "./synthetic.ts";
import type { RowStream } from "./row_stream.ts";
import { ShuffleBuffer } from "./shuffle_buffer.ts";
import { adoptHostArray } from "./safetensors.ts";

/** A training batch: inputs, and the targets when they differ (transcoders). */
export interface Batch {
  x: Tensor;
  y?: Tensor;
}

export interface DataSource {
  batch(index: number, size: number): Batch;
  /**
   * A source that reads asynchronously (text through a live model) does its work here: a caller
   * awaits prepare(index, size) before batch(index, size). Absent: batch alone suffices.
   */
  prepare?(index: number, size: number): Promise<void>;
  /** What identifies the data, saved with checkpoints: a resume on other data is refused. */
  identity?: Record<string, unknown>;
  /** Release what reading holds open (files of a corpus read part-way); the owner calls it last. */
  close?(): Promise<void>;
  describe(): string;
  /** Width of one input row (d) and, for [N, L, d] data, the number of layers/inputs. */
  width: number;
  layers?: number;
  targetWidth?: number;
}

export function syntheticData(src: SyntheticSource): DataSource {
  const c = src.config;
  return {
    batch: (i, size) => ({ x: src.batch(i, size).x }),
    describe: () =>
      `synthetic: d=${c.d}, ${c.nFeatures} true features, ${c.meanActive} active on average, seed ${c.seed}`,
    width: c.d,
    ...(c.layers > 1 ? { layers: c.layers } : {}),
  };
}

/**
 * Rows of an in-memory array ([N, d] or [N, L, d]; optional targets y [N, d_out]), reshuffled
 * each epoch by a permutation drawn from foldIn(key, epoch); the last partial batch is dropped.
 */
export function arrayData(
  x: Tensor,
  opts: { y?: Tensor; seed?: number; name?: string } = {},
): DataSource {
  const N = x.shape[0];
  if (opts.y && opts.y.shape[0] !== N) {
    throw new RangeError(`arrayData: ${N} inputs but ${opts.y.shape[0]} targets`);
  }
  const key = random.key(opts.seed ?? 0);
  let cachedEpoch = -1, perm: Int32Array = new Int32Array(0);
  return {
    batch(index, size) {
      if (size > N) {
        throw new RangeError(
          `arrayData: batch size ${size} exceeds the ${N} rows of ${opts.name ?? "the data"}`,
        );
      }
      const perEpoch = Math.floor(N / size);
      const epoch = Math.floor(index / perEpoch);
      if (epoch !== cachedEpoch) {
        perm = Int32Array.from(random.permutation(random.foldIn(key, epoch), N).dataSync());
        cachedEpoch = epoch;
      }
      const start = (index % perEpoch) * size;
      const rows = tensor(perm.slice(start, start + size), { backend: x.backend });
      return { x: take(x, rows, 0), ...(opts.y ? { y: take(opts.y, rows, 0) } : {}) };
    },
    describe: () => `${opts.name ?? "array"}: ${x.shape.join("×")} ${x.dtype}`,
    width: x.shape[x.ndim - 1],
    ...(x.ndim === 3 ? { layers: x.shape[1] } : {}),
    ...(opts.y ? { targetWidth: opts.y.shape[opts.y.ndim - 1] } : {}),
  };
}

/** Batch indices from here on are evaluation batches (see streamData). */
export const HELD_OUT_START = 1_000_000;

export interface StreamDataOptions {
  /** Rows the shuffle buffer holds (default: 16 batches' worth, at least 4096 rows). */
  bufferRows?: number;
  seed?: number;
  /** Shown by describe(). */
  name?: string;
}

/**
 * Training batches from an on-disk stream (an Arrow store, a memmap cache, …) through a shuffle
 * buffer. Batches are served in index order; asking for an earlier or later index replays the
 * buffer from the start (the same seed gives the same batches, so a resumed run continues
 * exactly, at the cost of re-reading what came before). Indices from HELD_OUT_START on, which
 * the evaluation after training uses, are read in file order from a separate pass, unshuffled:
 * keep a separate store for a truly held-out evaluation.
 */
export function streamData(
  stream: RowStream,
  opts: StreamDataOptions = {},
): DataSource & { buffer(): ShuffleBuffer | null } {
  const shape = stream.rowShape;
  const size = shape.reduce((a, b) => a * b, 1);
  const seed = opts.seed ?? 0;
  let buf: ShuffleBuffer | null = null, nextIndex = 0, capacity = 0;
  const evalRows = (index: number, n: number): Float32Array => {
    // Rows [(index - HELD_OUT_START)·n, …) of the stream in file order, wrapping around.
    const out = new Float32Array(n * size);
    let skip = (index - HELD_OUT_START) * n, got = 0, seen = 0;
    if (stream.rows) skip %= stream.rows;
    while (got < n) {
      seen = 0;
      const it = stream.open();
      try {
        for (let r = it.next(); !r.done && got < n; r = it.next()) {
          const c = r.value;
          seen += c.rows;
          if (skip >= c.rows) {
            skip -= c.rows;
            continue;
          }
          const take = Math.min(c.rows - skip, n - got);
          out.set(c.x.subarray(skip * size, (skip + take) * size), got * size);
          got += take;
          skip = 0;
        }
      } finally {
        it.return?.(); // close the reader's file even when stopping mid-pass
      }
      if (seen === 0) throw new RangeError(`streamData: ${stream.path} holds no rows`);
      skip %= seen;
    }
    return out;
  };
  return {
    batch(index, n) {
      let x: Float32Array;
      if (index >= HELD_OUT_START) x = evalRows(index, n);
      else {
        const want = Math.max(opts.bufferRows ?? Math.max(4096, 16 * n), n);
        if (!buf || index < nextIndex || capacity !== want) {
          buf?.close();
          buf = new ShuffleBuffer(stream, { capacity: want, seed });
          capacity = want;
          nextIndex = 0;
        }
        while (nextIndex < index) {
          buf.next(n);
          nextIndex++;
        }
        const b = buf.next(n)!;
        nextIndex++;
        x = b.x;
      }
      return { x: adoptHostArray(x, "f32", [n, ...shape]) };
    },
    describe: () =>
      `${opts.name ?? stream.path} (${stream.format}, ${stream.rows ?? "?"} rows of ${
        shape.join("×")
      } ${stream.dtype})`,
    width: shape[shape.length - 1],
    ...(shape.length === 2 ? { layers: shape[0] } : {}),
    buffer: () => buf,
  };
}
