/**
 * MPI through FFI: csrc/mpi_comm.c, compiled on first use with the MPI installation's compiler
 * wrapper (`mpicc`, or SPARSECODER_MPICC) and cached like the CPU kernels, names MPI's handles
 * and exports plain functions; this file binds them to a Communicator. Opening never throws: the
 * reason comes back instead (no mpicc, no FFI, no permission, MPI_Init failed).
 *   SPARSECODER_MPI_TIMEOUT=s   a collective waiting longer ends this rank (default 600; 0: never)
 *   SPARSECODER_MPI_WAIT=sleep|spin   how a rank waits for the others to arrive at a collective:
 *                               polling with short sleeps, leaving the core to a rank still
 *                               computing (default), or MPI's own busy wait
 */
import { fileURLToPath } from "node:url";
import { readEnv } from "../platform/env.ts";
import { type FfiFn, type FfiSig, getFfi, NO_FFI } from "../platform/ffi.ts";
import { compileCached, defaultCacheDir } from "../platform/compile.ts";
import { runSync, tailLines } from "../platform/process.ts";
import { granted } from "../platform/runtime.ts";
import { checkSend, type Communicator, type HostArray, type ReduceOp } from "./communicator.ts";

const SIGS: Record<string, FfiSig> = {
  sc_mpi_init: { args: ["f64", "i32"], ret: "i32" },
  sc_mpi_rank: { args: [], ret: "i32" },
  sc_mpi_size: { args: [], ret: "i32" },
  sc_mpi_version: { args: ["buf", "i32"], ret: "void" },
  sc_mpi_error_string: { args: ["i32", "buf", "i32"], ret: "void" },
  sc_mpi_allreduce: { args: ["buf", "buf", "i64", "i32", "i32"], ret: "i32" },
  sc_mpi_broadcast: { args: ["buf", "i64", "i32"], ret: "i32" },
  sc_mpi_allgather: { args: ["buf", "i64", "buf"], ret: "i32" },
  sc_mpi_barrier: { args: [], ret: "i32" },
  sc_mpi_abort: { args: ["i32"], ret: "void" },
  sc_mpi_finalize: { args: [], ret: "i32" },
};

const FLAGS = ["-O2", "-fPIC", "-shared", "-pthread"];
const OPS: Record<ReduceOp, number> = { sum: 0, min: 1, max: 2, mean: 3 };
const DEFAULT_TIMEOUT_S = 600;

export interface MpiOptions {
  /** The MPI compiler wrapper (default SPARSECODER_MPICC, else `mpicc`). */
  mpicc?: string;
  cacheDir?: string;
  /** Seconds a collective may wait (default SPARSECODER_MPI_TIMEOUT, else 600; 0: no limit). */
  timeoutS?: number;
  /** How a rank waits for the others (default SPARSECODER_MPI_WAIT, else "sleep"). */
  wait?: MpiWait;
}

/** Sleep: poll for the other ranks with short sleeps, yielding the core; spin: MPI's busy wait. */
export type MpiWait = "sleep" | "spin";

/** The wait from SPARSECODER_MPI_WAIT, else "sleep". */
export function mpiWait(): MpiWait {
  const v = readEnv("SPARSECODER_MPI_WAIT") ?? "";
  if (v === "" || v === "sleep" || v === "spin") return (v || "sleep") as MpiWait;
  throw new Error(`SPARSECODER_MPI_WAIT must be "sleep" or "spin", got ${JSON.stringify(v)}`);
}

export interface MpiStatus {
  comm: Communicator | null;
  /** "loaded <path>" (and "compiled" when this process built it), or why MPI is absent. */
  reason: string;
}

/** The collective timeout from SPARSECODER_MPI_TIMEOUT (seconds), else the default. */
export function mpiTimeout(): number {
  const v = readEnv("SPARSECODER_MPI_TIMEOUT");
  if (v === undefined || v === "") return DEFAULT_TIMEOUT_S;
  const s = Number(v);
  if (!Number.isFinite(s) || s < 0) {
    throw new Error(
      `SPARSECODER_MPI_TIMEOUT must be a number of seconds >= 0, got ${JSON.stringify(v)}`,
    );
  }
  return s;
}

/** How the wrapper compiles and links (part of the cache key: another MPI rebuilds). */
function wrapperLine(mpicc: string): string {
  for (const flag of ["--showme", "-show"]) {
    const r = runSync(mpicc, [flag]);
    if (r.error === null && r.status === 0) return r.stdout.trim();
    if (r.error?.includes("ENOENT")) {
      throw new Error(
        `${mpicc} not found: MPI's compiler wrapper is needed to build the MPI shim (Debian: apt-get install openmpi-bin libopenmpi-dev)`,
      );
    }
  }
  throw new Error(`${mpicc} --showme failed: it does not look like an MPI compiler wrapper`);
}

const bytesOf = (a: HostArray) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function bind(
  path: string,
  fns: Record<string, FfiFn>,
  timeoutS: number,
  wait: MpiWait,
): Communicator {
  const text = (fill: (buf: Uint8Array) => void) => {
    const buf = new Uint8Array(new ArrayBuffer(1024));
    fill(buf);
    return new TextDecoder().decode(buf.subarray(0, buf.indexOf(0)));
  };
  const rank = fns.sc_mpi_rank() as number, size = fns.sc_mpi_size() as number;
  const version = text((b) => fns.sc_mpi_version(b, b.length)).split(", package:")[0];
  const check = (rc: unknown, call: string) => {
    if (rc === 0) return;
    const why = text((b) => fns.sc_mpi_error_string(rc, b, b.length));
    throw new Error(`${call} failed on rank ${rank} of ${size}: ${why}`);
  };
  return {
    rank,
    size,
    describe: `mpi: rank ${rank} of ${size} (${version}; ${path}; collective timeout ${
      timeoutS > 0 ? `${timeoutS} s` : "none"
    }; ${wait} wait)`,
    allReduce(buf, op = "sum", send = buf) {
      checkSend(buf, send);
      if (buf.length === 0) return;
      check(
        fns.sc_mpi_allreduce(send, buf, buf.length, buf instanceof Float32Array ? 0 : 1, OPS[op]),
        `MPI_Allreduce (${op}, ${buf.length} elements)`,
      );
    },
    broadcast(buf, root = 0) {
      if (buf.byteLength === 0) return;
      check(
        fns.sc_mpi_broadcast(bytesOf(buf), buf.byteLength, root),
        `MPI_Bcast from rank ${root}`,
      );
    },
    allGather<T extends HostArray>(send: T): T {
      const Ctor = send.constructor as new (n: number) => T;
      const out = new Ctor(send.length * size);
      if (send.byteLength === 0) return out;
      check(
        fns.sc_mpi_allgather(bytesOf(send), send.byteLength, bytesOf(out)),
        `MPI_Allgather (${send.byteLength} bytes per rank)`,
      );
      return out;
    },
    barrier: () => check(fns.sc_mpi_barrier(), "MPI_Barrier"),
    abort(code, message) {
      console.error(message);
      fns.sc_mpi_abort(code);
      // MPI_Abort does not return; should an implementation return, end this rank anyway.
      throw new Error(message);
    },
    finalize: () => check(fns.sc_mpi_finalize(), "MPI_Finalize"),
  };
}

/** Compile (if not cached) and open the MPI shim, and initialise MPI; never throws. */
export function openMpi(o: MpiOptions = {}): MpiStatus {
  try {
    const ffi = getFfi();
    if (!ffi) return { comm: null, reason: NO_FFI };
    const missing = ["ffi", "run", "read", "write", "env"].filter((name) => !granted({ name }));
    if (missing.length) {
      return {
        comm: null,
        reason: `Deno permissions not granted: ${missing.map((m) => `--allow-${m}`).join(" ")}`,
      };
    }
    const mpicc = o.mpicc ?? readEnv("SPARSECODER_MPICC") ?? "mpicc";
    const src = fileURLToPath(new URL("../../csrc/mpi_comm.c", import.meta.url));
    const { path, compiled } = compileCached({
      src,
      cc: mpicc,
      flags: FLAGS,
      libs: ["-ldl"],
      keyParts: [wrapperLine(mpicc)],
      prefix: "libsparsecoder-mpi",
      dir: o.cacheDir ?? defaultCacheDir(),
    });
    const fns = ffi.open(path, SIGS).fns as Record<string, FfiFn>;
    const timeoutS = o.timeoutS ?? mpiTimeout(), wait = o.wait ?? mpiWait();
    const rc = fns.sc_mpi_init(timeoutS, wait === "sleep" ? 1 : 0) as number;
    if (rc !== 0) return { comm: null, reason: `MPI_Init failed (MPI error ${rc}) using ${path}` };
    const comm = bind(path, fns, timeoutS, wait);
    return { comm, reason: `${compiled ? "compiled and loaded" : "loaded"} ${path}` };
  } catch (e) {
    return { comm: null, reason: tailLines(e instanceof Error ? e.message : String(e), 2) };
  }
}
