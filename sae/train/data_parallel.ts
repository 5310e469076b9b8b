/**
 * Data-parallel training over a communicator: every rank reads its own rows of each global
 * batch, computes gradients on them, and the ranks average the gradients before the same
 * optimiser step, so parameters stay identical everywhere. Here are the exchanges the step and
 * the driver make; each is a no-op question for a single process, which never calls them.
 *
 * What a rank sees locally and what is exchanged:
 *   - gradients: summed over ranks and divided by their number (each large gradient reduced
 *     from its own storage, the small ones packed into one bucket); a mean loss over B/N rows per
 *     rank then gives the gradient of the mean over all B rows;
 *   - which features fired this step: OR-ed over ranks, so the dead-feature counters (and AuxK's
 *     and ghost grads' dead masks, and resampling's) are the global ones;
 *   - a batch-level top-k (BatchTopK, Matryoshka, BatchTopK crosscoders and DFC): every rank's
 *     best candidates, gathered, so the cut is the global batch's (batchShareOf);
 *   - θ's statistic (the smallest kept activation): the minimum over ranks;
 *   - reported scalars (loss, FVU, L0, …): averaged over ranks;
 *   - after resampling (drawn from rank 0's rows), rank 0's parameters and moments.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { fromStorage, tensor } from "../../tensor/ops/create.ts";
import { giveArray, takeShared } from "../../tensor/cpu/pool.ts";
import { cast, gt } from "../../tensor/ops/elementwise.ts";
import { treeFlatten, treeUnflatten } from "../../autodiff/tree.ts";
import { Tensor as TensorClass } from "../../tensor/tensor.ts";
import type { Communicator } from "../../tensor/distributed/communicator.ts";
import { deviceAllReduce } from "../../tensor/distributed/device.ts";
import type { BatchShare } from "../arch/topk_encode.ts";

type Floats = Float32Array | Float64Array;

/**
 * Gradients at least this long (elements) are all-reduced on their own, straight from their
 * storage into a fresh array; shorter ones (biases, scales) are packed into one bucket so that a
 * tree of many small tensors costs one collective, not one each.
 */
const OWN_CALL = 1 << 16;

/** A contiguous host tensor's elements without a copy; a copy when strided or on a device. */
function elementsOf(t: Tensor): Floats {
  if (!t.backend.hostMemory || !t.isContiguous()) return t.dataSync() as Floats;
  const buf = t.view().buf as Floats;
  return buf.length === t.size ? buf : buf.subarray(0, t.size);
}

/**
 * `tree` with every f32/f64 tensor replaced by its mean over the ranks; other leaves unchanged.
 * Large tensors are reduced from their own storage into pooled arrays that become the new
 * tensors' storage (no copy in JavaScript); small ones share one packed all-reduce per dtype.
 * The division by the number of ranks happens inside the all-reduce ("mean"). Device tensors
 * (cuda) go through NCCL on the stream when the job has it, else through host memory.
 * Synchronous: runs inside the step's scope.
 */
export function averageAcrossRanks<T>(tree: T, comm: Communicator): T {
  const [leaves, def] = treeFlatten(tree);
  const out = leaves.slice();
  // Device tensors through NCCL when the job has it (cuda), launched together.
  const onDevice = leaves.flatMap((l, i) =>
    l instanceof TensorClass && !l.backend.hostMemory && l.dtype.startsWith("f") ? [i] : []
  );
  const reduced = deviceAllReduce(onDevice.map((i) => leaves[i] as Tensor), comm, "mean");
  if (reduced) onDevice.forEach((i, j) => (out[i] = reduced[j]));
  for (const dtype of ["f32", "f64"] as const) {
    const small: number[] = [];
    leaves.forEach((l, i) => {
      if (!(l instanceof TensorClass) || l.dtype !== dtype || out[i] !== l) return;
      if (l.size < OWN_CALL) return void small.push(i);
      const mean = takeShared(dtype, l.size) as Floats;
      comm.allReduce(mean, "mean", elementsOf(l));
      out[i] = fromStorage(mean, dtype, l.shape, l.backend);
    });
    if (!small.length) continue;
    const ts = small.map((i) => leaves[i] as Tensor);
    const packed = takeShared(dtype, ts.reduce((a, t) => a + t.size, 0)) as Floats;
    let at = 0;
    for (const t of ts) {
      packed.set(elementsOf(t), at);
      at += t.size;
    }
    comm.allReduce(packed, "mean");
    at = 0;
    small.forEach((i, j) => {
      const t = ts[j];
      out[i] = tensor(packed.subarray(at, at += t.size), {
        shape: t.shape,
        dtype,
        backend: t.backend,
      });
    });
    giveArray(packed);
  }
  return treeUnflatten<T>(def, out);
}

/** `tree` with every tensor replaced by rank `root`'s value (new tensors; the old stay the caller's). */
export function broadcastFromRoot<T>(tree: T, comm: Communicator, root = 0): T {
  const [leaves, def] = treeFlatten(tree);
  return treeUnflatten<T>(
    def,
    leaves.map((l) => {
      if (!(l instanceof TensorClass)) return l;
      const host = (l.dataSync() as ArrayLike<number>) as Floats;
      comm.broadcast(host, root);
      return tensor(host, { shape: l.shape, dtype: l.dtype, backend: l.backend });
    }),
  );
}

/** Whether each feature fired on any rank (bool [F]) from this rank's bool [F]. */
export function firedOnAnyRank(fired: Tensor, comm: Communicator): Tensor {
  const flags = cast(fired, "f32");
  const onDevice = deviceAllReduce([flags], comm, "sum");
  if (onDevice) return gt(onDevice[0], 0);
  const counts = flags.dataSync() as Float32Array;
  comm.allReduce(counts, "sum");
  return gt(tensor(counts, { backend: fired.backend }), 0);
}

/** The ranks' mean of each scalar, in place (every rank holds the same keys in the same order). */
export function averageScalars(host: Record<string, number>, comm: Communicator): void {
  const keys = Object.keys(host);
  const v = Float64Array.from(keys, (k) => host[k]);
  comm.allReduce(v, "sum");
  keys.forEach((k, i) => (host[k] = v[i] / comm.size));
}

/** The element-wise minimum over ranks. */
export function minAcrossRanks(values: ArrayLike<number>, comm: Communicator): Float64Array {
  const v = Float64Array.from(values as ArrayLike<number>);
  comm.allReduce(v, "min");
  return v;
}

/** A 32-bit FNV-1a hash of the tensors' bytes, in tree order. */
function treeHash(tree: unknown): number {
  let h = 0x811c9dc5;
  for (const l of treeFlatten(tree)[0]) {
    if (!(l instanceof TensorClass)) continue;
    const d = l.dataSync() as unknown as ArrayLike<number> & { buffer: ArrayBufferLike };
    const v = d as unknown as Uint8Array;
    const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  }
  return h >>> 0;
}

/**
 * Throws unless `tree`'s tensors are bit for bit the same on every rank (they must be: the
 * same averaged gradient and the same step everywhere); names the ranks that differ from rank 0.
 */
export function checkSameOnEveryRank(tree: unknown, comm: Communicator, what: string): void {
  const all = comm.allGather(Float64Array.of(treeHash(tree)));
  const differ = [...all.keys()].filter((r) => all[r] !== all[0]);
  if (differ.length) {
    throw new Error(
      `data parallel: ${what} differ between ranks (ranks ${
        differ.join(", ")
      } differ from rank 0); the ranks have diverged`,
    );
  }
}

/**
 * The batch-level top-k over every rank's share (see BatchShare): each rank's sorted candidates
 * are gathered (the same number from each), the global cut found, and this rank keeps its
 * candidates above the cut plus its part of the ties at it, lower ranks first.
 */
export function batchShareOf(comm: Communicator): BatchShare {
  return {
    ranks: comm.size,
    keep(sorted, total) {
      const mine = Float32Array.from(sorted.dataSync() as ArrayLike<number>);
      const all = comm.allGather(mine);
      const cut = all.slice().sort((a, b) => b - a)[total - 1];
      const n = mine.length;
      let above = 0, before = 0;
      const ties = new Array<number>(comm.size).fill(0);
      for (let r = 0; r < comm.size; r++) {
        for (let i = r * n; i < (r + 1) * n; i++) {
          if (all[i] > cut) above++;
          else if (all[i] === cut) ties[r]++;
        }
      }
      for (let r = 0; r < comm.rank; r++) before += ties[r];
      const tiesTaken = Math.max(0, Math.min(ties[comm.rank], total - above - before));
      let mineAbove = 0;
      while (mineAbove < n && mine[mineAbove] > cut) mineAbove++;
      return mineAbove + tiesTaken;
    },
  };
}
