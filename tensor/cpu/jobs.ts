/**
 * The kernels a worker thread may run, by name: the same per-type copies the main thread runs,
 * so a job gives the same bits wherever it executes. Arguments are plain values and typed
 * arrays over SharedArrayBuffer (posting those shares the memory instead of copying it).
 */
import { adamLoop, projectOutRowsLoop, unitRowsLoop } from "./fused.ts";
import * as K from "./kernels.ts";
import * as S from "./sparse.ts";
import { perType } from "./specialize.ts";
import { stridedKernel } from "./strided.ts";

/** One slice of a kernel's work: `key` names the argument types (see specialize.ts). */
export interface Job {
  fn: JobName;
  key: string;
  args: unknown[];
}

// deno-lint-ignore no-explicit-any
type Fn = (...args: any[]) => void;

// Built on first use: kernels.ts and strided.ts import this module's importers, so at load
// time their exports may not exist yet.
const table = () =>
  ({
    adam: [adamLoop, {}],
    unitRows: [unitRowsLoop, {}],
    projectOutRows: [projectOutRowsLoop, {}],
    spmm: [S.spmm, { check: S.check }],
    sddmm: [S.sddmm, { check: S.check }],
    topk: [K.topk, K.TOPK_DEPS],
  }) as const satisfies Record<string, readonly [Fn, Record<string, unknown>]>;
let TABLE: ReturnType<typeof table> | undefined;

export type JobName = keyof ReturnType<typeof table> | "strided";

/** Run one job on this thread. */
export function runJob(job: Job): void {
  if (job.fn === "strided") {
    const [expr, arity, acc, ...rest] = job.args as [
      string,
      number,
      string | undefined,
      ...unknown[],
    ];
    (stridedKernel(job.key, expr, arity, acc) as Fn)(...rest);
    return;
  }
  const [fn, deps] = (TABLE ??= table())[job.fn];
  perType(fn as Fn, job.key, deps)(...job.args);
}
