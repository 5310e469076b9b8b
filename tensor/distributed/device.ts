/**
 * Collectives on device tensors: on the cuda backend, NCCL all-reduces the device buffers on the
 * backend's stream (no copy through host memory, no wait for the stream), its communicator made
 * once per job from a unique id that rank 0 broadcasts over MPI. Whether NCCL is used is decided
 * by every rank together: if any rank cannot open it, none does, and the reason is kept for
 * backendInfo(); callers then go through host memory and MPI.
 */
import type { Tensor } from "../tensor.ts";
import { wrap } from "../prims.ts";
import { contiguous } from "../ops/shape.ts";
import { readEnv } from "../platform/env.ts";
import { getFfi } from "../platform/ffi.ts";
import { cudaRuntime, cudaUnavailableReason } from "../cuda/runtime.ts";
import type { CudaBuf } from "../cuda/backend.ts";
import { loadNccl, type Nccl, type NcclComm, type NcclDType } from "../cuda/nccl.ts";
import { byteSize } from "../dtype.ts";
import type { Communicator } from "./communicator.ts";

interface Job {
  nccl: Nccl;
  comm: NcclComm;
  stream: bigint;
}

/** Per MPI communicator: the NCCL job, or why there is none. */
const jobs = new WeakMap<Communicator, Job | { reason: string }>();
/** The last decision, for backendInfo (the communicator is not at hand there). */
let lastInfo: string | null = null;

/** Open NCCL on this rank: the library and a CUDA runtime to queue on, or why not. */
function openHere(): { nccl: Nccl; stream: bigint } | { reason: string } {
  if (readEnv("SPARSECODER_NO_NCCL") === "1") {
    return { reason: "disabled by SPARSECODER_NO_NCCL=1" };
  }
  const rt = cudaRuntime();
  if (!rt) return { reason: `no CUDA runtime (${cudaUnavailableReason()})` };
  const ffi = getFfi();
  if (!ffi) return { reason: "no FFI" };
  const r = loadNccl(ffi, (n) => readEnv(n));
  if (!r.nccl) return { reason: r.reason };
  if (!r.nccl.hasAvg) {
    return { reason: `NCCL ${r.nccl.version} at ${r.nccl.path} lacks ncclAvg (2.10+)` };
  }
  return { nccl: r.nccl, stream: rt.stream };
}

/**
 * The NCCL job of `comm` (made on first use: a collective call, so every rank must reach it
 * together), or null with the reason recorded when any rank cannot use NCCL.
 */
export function ncclJob(comm: Communicator): Job | null {
  let j = jobs.get(comm);
  if (!j) {
    const here = openHere();
    const flags = Float64Array.of("reason" in here ? 0 : 1);
    comm.allReduce(flags, "min");
    if ("reason" in here || flags[0] === 0) {
      j = { reason: "reason" in here ? here.reason : "another rank cannot use NCCL" };
    } else {
      const id = comm.rank === 0 ? here.nccl.uniqueId() : new Uint8Array(128);
      comm.broadcast(id, 0);
      const c = here.nccl.initRank(comm.size, id, comm.rank);
      j = { nccl: here.nccl, comm: c, stream: here.stream };
    }
    jobs.set(comm, j);
    lastInfo = "reason" in j
      ? `cuda collectives through host memory over MPI (NCCL unavailable: ${j.reason})`
      : `cuda collectives: NCCL ${j.nccl.version} (${j.nccl.path}), rank ${comm.rank} of ${comm.size}`;
  }
  return "reason" in j ? null : j;
}

/** One line for backendInfo(): how cuda tensors are reduced in this job, once decided. */
export function deviceCollectivesInfo(): string | null {
  return lastInfo;
}

const NCCL_TYPES: Record<string, NcclDType | undefined> = {
  f32: "f32",
  f64: "f64",
  f16: "f16",
  bf16: "bf16",
};

/**
 * Each tensor's sum or mean over the ranks as new device tensors, launched together as one NCCL
 * group; null when these tensors cannot go through NCCL (another backend, a dtype NCCL lacks, or
 * no NCCL job), so the caller uses host memory.
 */
export function deviceAllReduce(
  xs: readonly Tensor[],
  comm: Communicator,
  op: "sum" | "mean",
): Tensor[] | null {
  if (!xs.length || xs.some((x) => x.backend.name !== "cuda" || !NCCL_TYPES[x.dtype])) return null;
  const job = ncclJob(comm);
  if (!job) return null;
  const { nccl } = job;
  const src = xs.map(contiguous);
  const outs = src.map((x) => wrap(x.backend, x.backend.alloc(x.dtype, x.size), x.shape, x.dtype));
  const addr = (x: Tensor) => (x.view().buf as CudaBuf).ptr + BigInt(x.offset * byteSize(x.dtype));
  nccl.groupStart();
  try {
    src.forEach((x, i) =>
      nccl.allReduce(
        job.comm,
        addr(x),
        addr(outs[i]),
        x.size,
        NCCL_TYPES[x.dtype]!,
        op === "mean" ? "avg" : "sum",
        job.stream,
      )
    );
  } finally {
    nccl.groupEnd();
  }
  src.forEach((x, i) => x !== xs[i] && x.dispose());
  return outs;
}

/** End the job's NCCL communicator (before MPI is finalized). */
export function endDeviceCollectives(comm: Communicator): void {
  const j = jobs.get(comm);
  if (j && !("reason" in j)) j.nccl.destroy(j.comm);
  jobs.delete(comm);
}
