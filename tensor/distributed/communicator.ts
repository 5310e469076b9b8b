/**
 * A communicator: the collectives data-parallel training needs, over every process of a job.
 * Buffers are host typed arrays, reduced or filled in place. A failed collective throws an error
 * naming the call and this rank; a collective that never completes is ended by the engine's
 * timeout (see mpi.ts), never waited on forever.
 */
import process from "node:process";

/** The element-wise reduction of an all-reduce. */
export type ReduceOp = "sum" | "min" | "max";

export type HostArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint32Array
  | Uint8Array
  | Int8Array
  | BigUint64Array;

export interface Communicator {
  /** This process's rank, 0 ≤ rank < size. */
  rank: number;
  size: number;
  /** One line: the engine, this rank, and the library (or why there is only one process). */
  describe: string;
  /** Every rank's `buf` combined element-wise by `op` (default sum), into `buf` on every rank. */
  allReduce(buf: Float32Array | Float64Array, op?: ReduceOp): void;
  /** The root's `buf` copied into `buf` on every rank. */
  broadcast(buf: HostArray, root?: number): void;
  /** Every rank's `send` (the same length everywhere), concatenated in rank order. */
  allGather<T extends HostArray>(send: T): T;
  barrier(): void;
  /** Stop every rank of the job with exit status `code`, after printing `message` on this one. */
  abort(code: number, message: string): never;
  /** End the engine; collectives are unusable afterwards. */
  finalize(): void;
}

/** A job of one process: every collective is the identity. */
export function singleProcess(why: string): Communicator {
  return {
    rank: 0,
    size: 1,
    describe: `single process (${why})`,
    allReduce: () => {},
    broadcast: () => {},
    allGather: <T extends HostArray>(send: T) => send.slice() as T,
    barrier: () => {},
    abort(code, message) {
      console.error(message);
      process.exit(code);
    },
    finalize: () => {},
  };
}
