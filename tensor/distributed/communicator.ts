/**
 * A communicator: the collectives data-parallel training needs, over every process of a job.
 * Buffers are host typed arrays, reduced or filled in place. A failed collective throws an error
 * naming the call and this rank; a collective that never completes is ended by the engine's
 * timeout (see mpi.ts), never waited on forever.
 */
import process from "node:process";

/** The element-wise reduction of an all-reduce; mean is the sum divided by the ranks. */
export type ReduceOp = "sum" | "min" | "max" | "mean";

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
  /**
   * Every rank's `send` (default `buf` itself) combined element-wise by `op` (default sum), into
   * `buf` on every rank. With a separate `send` (same type and length, not overlapping `buf`),
   * `send` is only read: a gradient's own storage can be sent without copying it first.
   */
  allReduce<T extends Float32Array | Float64Array>(buf: T, op?: ReduceOp, send?: T): void;
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

/** Throws unless `send` can be reduced into `buf`: the same element type and length. */
export function checkSend(buf: Float32Array | Float64Array, send: Float32Array | Float64Array) {
  if (send === buf) return;
  if (send.constructor !== buf.constructor || send.length !== buf.length) {
    throw new Error(
      `allReduce: send is a ${send.constructor.name}[${send.length}], the result buffer a ${buf.constructor.name}[${buf.length}]`,
    );
  }
  if (send.buffer === buf.buffer) {
    const [a, b] = [send, buf].map((x) => [x.byteOffset, x.byteOffset + x.byteLength]);
    if (a[0] < b[1] && b[0] < a[1]) throw new Error("allReduce: send overlaps the result buffer");
  }
}

/** A job of one process: every collective is the identity. */
export function singleProcess(why: string): Communicator {
  return {
    rank: 0,
    size: 1,
    describe: `single process (${why})`,
    allReduce(buf, _op, send = buf) {
      checkSend(buf, send);
      if (send !== buf) buf.set(send);
    },
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
