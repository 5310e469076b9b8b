/**
 * NCCL (libnccl.so.2) through our FFI: the collectives data-parallel training needs on device
 * buffers, queued on the backend's stream. A communicator is made from a unique id that rank 0
 * creates and the job broadcasts over MPI (tensor/distributed/device.ts); every call's status is
 * checked and a failure throws a CudaError naming the call and NCCL's own error string.
 *
 * ncclCommInitRank takes the 128-byte ncclUniqueId by value, which FFI cannot express in Bun.
 * The C calling conventions say where such a struct goes, and the binding puts it there
 * (initRankSig / initRankArgs): on x86-64 (System V) a struct over 16 bytes is copied onto the
 * stack, so the id travels as 16 eight-byte words after the three pointer-sized registers the
 * real arguments leave free; on AArch64 it is passed as a pointer to a copy. Other
 * architectures get the reason instead of a binding. tests/nccl_ffi.test.ts calls a C function
 * of the same prototype through this path and checks what it received.
 */
import process from "node:process";
import { type Ffi, type FfiFn, type FfiSig, outI32, outU64 } from "../platform/ffi.ts";
import { makeCheck } from "./errors.ts";
import { loadLibrary } from "./libs.ts";

const I = "i32", P = "u64", B = "buf";
const sig = (args: FfiSig["args"], optional = false): FfiSig => ({ args, ret: I, optional });

/** NCCL_UNIQUE_ID_BYTES (nccl.h). */
export const UNIQUE_ID_BYTES = 128;

/** ncclDataType_t values (nccl.h). */
export const NCCL_DTYPE = { f16: 6, f32: 7, f64: 8, bf16: 9 } as const;
/** ncclRedOp_t values (nccl.h); avg needs NCCL 2.10. */
export const NCCL_OP = { sum: 0, prod: 1, max: 2, min: 3, avg: 4 } as const;

export type NcclDType = keyof typeof NCCL_DTYPE;
export type NcclOp = keyof typeof NCCL_OP;

/** How the by-value ncclUniqueId is passed on this architecture, or null when we do not know. */
export type IdPassing = "stack-words" | "pointer";
export function idPassing(arch: string = process.arch): IdPassing | null {
  return arch === "x64" ? "stack-words" : arch === "arm64" ? "pointer" : null;
}

/** ncclCommInitRank(ncclComm_t*, int nranks, ncclUniqueId id, int rank) as this FFI sees it. */
export function initRankSig(passing: IdPassing): FfiSig {
  // stack-words: comm, nranks and rank take three registers; three pads fill the rest, so the
  // 16 words land on the stack where the struct would be.
  return passing === "pointer" ? sig([B, I, B, I]) : sig([B, I, I, P, P, P, ...Array(16).fill(P)]);
}

/** The arguments for initRankSig(passing): `id` is the 128 bytes every rank received. */
export function initRankArgs(
  passing: IdPassing,
  commOut: BigUint64Array,
  nranks: number,
  id: Uint8Array,
  rank: number,
): unknown[] {
  if (id.length !== UNIQUE_ID_BYTES) {
    throw new Error(`ncclUniqueId: expected ${UNIQUE_ID_BYTES} bytes, got ${id.length}`);
  }
  const copy = new Uint8Array(new ArrayBuffer(UNIQUE_ID_BYTES));
  copy.set(id);
  if (passing === "pointer") return [commOut, nranks, copy, rank];
  const words = new BigUint64Array(copy.buffer);
  return [commOut, nranks, rank, 0n, 0n, 0n, ...words];
}

/** The library's exported entry points and their FFI signatures on this architecture. */
export function ncclSigs(passing: IdPassing): Record<string, FfiSig> {
  return {
    ncclGetVersion: sig([B]),
    ncclGetUniqueId: sig([B]),
    ncclCommInitRank: initRankSig(passing),
    // sendbuff, recvbuff, count (size_t), datatype, op, comm, stream
    ncclAllReduce: sig([P, P, P, I, I, P, P]),
    // sendbuff, recvbuff, count, datatype, root, comm, stream
    ncclBroadcast: sig([P, P, P, I, I, P, P]),
    ncclGroupStart: sig([]),
    ncclGroupEnd: sig([]),
    ncclCommDestroy: sig([P]),
    ncclCommAbort: sig([P], true),
    ncclGetErrorString: { args: [I], ret: "addr" },
    ncclGetLastError: { args: [P], ret: "addr", optional: true },
  };
}

/** NCCL_VERSION_CODE as "major.minor.patch" (2.9 changed the encoding). */
export function versionText(code: number): string {
  const [major, minor, patch] = code >= 20900
    ? [Math.floor(code / 10000), Math.floor((code % 10000) / 100), code % 100]
    : [Math.floor(code / 1000), Math.floor((code % 1000) / 100), code % 100];
  return `${major}.${minor}.${patch}`;
}

export interface NcclComm {
  handle: bigint;
  rank: number;
  size: number;
}

export interface Nccl {
  path: string;
  version: string;
  /** ncclAvg is available (NCCL ≥ 2.10); otherwise a mean is a sum the caller divides. */
  hasAvg: boolean;
  uniqueId(): Uint8Array;
  initRank(size: number, id: Uint8Array, rank: number): NcclComm;
  /** Every rank's `count` elements at `send`, reduced into `recv` (may equal `send`), on `stream`. */
  allReduce(
    c: NcclComm,
    send: bigint,
    recv: bigint,
    count: number,
    dtype: NcclDType,
    op: NcclOp,
    stream: bigint,
  ): void;
  broadcast(
    c: NcclComm,
    send: bigint,
    recv: bigint,
    count: number,
    dtype: NcclDType,
    root: number,
    stream: bigint,
  ): void;
  /** The calls between groupStart and groupEnd are launched together (one fused launch). */
  groupStart(): void;
  groupEnd(): void;
  destroy(c: NcclComm): void;
}

export function makeNccl(ffi: Ffi, path: string, fns: Record<string, FfiFn | null>): Nccl {
  const passing = idPassing()!;
  const f = fns as Record<string, FfiFn>;
  const check = makeCheck("nccl", (code) => ffi.cString(f.ncclGetErrorString(code) as bigint));
  // NCCL's last error says more than the status (which peer, which transport) when it has one.
  const detail = (c: NcclComm | null) => () =>
    fns.ncclGetLastError ? ffi.cString(f.ncclGetLastError(c?.handle ?? 0n) as bigint) : "";
  const v = outI32();
  check("ncclGetVersion", f.ncclGetVersion(v));
  const code = v[0];
  return {
    path,
    version: versionText(code),
    hasAvg: code >= 21000,
    uniqueId() {
      const id = new Uint8Array(new ArrayBuffer(UNIQUE_ID_BYTES));
      check("ncclGetUniqueId", f.ncclGetUniqueId(id), detail(null));
      return id;
    },
    initRank(size, id, rank) {
      const out = outU64();
      check(
        "ncclCommInitRank",
        f.ncclCommInitRank(...initRankArgs(passing, out, size, id, rank)),
        () => `rank ${rank} of ${size}${(detail(null)() && `: ${detail(null)()}`)}`,
      );
      return { handle: out[0], rank, size };
    },
    allReduce(c, send, recv, count, dtype, op, stream) {
      check(
        "ncclAllReduce",
        f.ncclAllReduce(
          send,
          recv,
          BigInt(count),
          NCCL_DTYPE[dtype],
          NCCL_OP[op],
          c.handle,
          stream,
        ),
        detail(c),
      );
    },
    broadcast(c, send, recv, count, dtype, root, stream) {
      check(
        "ncclBroadcast",
        f.ncclBroadcast(send, recv, BigInt(count), NCCL_DTYPE[dtype], root, c.handle, stream),
        detail(c),
      );
    },
    groupStart: () => check("ncclGroupStart", f.ncclGroupStart()),
    groupEnd: () => check("ncclGroupEnd", f.ncclGroupEnd()),
    destroy: (c) => check("ncclCommDestroy", f.ncclCommDestroy(c.handle)),
  };
}

/** Open NCCL (SPARSECODER_NCCL forces a path) and check its version; never throws. */
export function loadNccl(
  ffi: Ffi,
  env: (n: string) => string | undefined,
): { nccl: Nccl | null; reason: string } {
  const passing = idPassing();
  if (!passing) {
    return {
      nccl: null,
      reason: `NCCL binding: passing ncclUniqueId by value is not implemented for ${process.arch}`,
    };
  }
  const r = loadLibrary(
    ffi,
    "nccl",
    env,
    ncclSigs(passing),
    (path, fns) => makeNccl(ffi, path, fns),
  );
  return { nccl: r.value, reason: r.reason };
}
