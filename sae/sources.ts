/**
 * Where training batches come from: a deterministic function of the batch index, so a resumed
 * run sees exactly the batches the uninterrupted run would have seen.
 */
import type { Tensor } from "../tensor/tensor.ts";
import * as random from "../tensor/random.ts";
import { tensor } from "../tensor/ops/create.ts";
import { take } from "../tensor/ops/shape.ts";
import type { SyntheticSource } from "../data/synthetic.ts";
import type { Batch } from "./architecture.ts";

export interface DataSource {
  batch(index: number, size: number): Batch;
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
    describe: () => `synthetic: d=${c.d}, ${c.nFeatures} true features, ${c.meanActive} active on average, seed ${c.seed}`,
    width: c.d,
    ...(c.layers > 1 ? { layers: c.layers } : {}),
  };
}

/**
 * Rows of an in-memory array ([N, d] or [N, L, d]; optional targets y [N, d_out]), reshuffled
 * each epoch by a permutation drawn from foldIn(key, epoch); the last partial batch is dropped.
 */
export function arrayData(x: Tensor, opts: { y?: Tensor; seed?: number; name?: string } = {}): DataSource {
  const N = x.shape[0];
  if (opts.y && opts.y.shape[0] !== N) throw new RangeError(`arrayData: ${N} inputs but ${opts.y.shape[0]} targets`);
  const key = random.key(opts.seed ?? 0);
  let cachedEpoch = -1, perm: Int32Array = new Int32Array(0);
  return {
    batch(index, size) {
      if (size > N) throw new RangeError(`arrayData: batch size ${size} exceeds the ${N} rows of ${opts.name ?? "the data"}`);
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
