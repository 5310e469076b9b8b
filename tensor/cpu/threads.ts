/**
 * Worker threads for the CPU backend's TypeScript kernels. A kernel split into jobs runs the
 * first on this thread and posts the others to workers; the arrays are typed arrays over
 * SharedArrayBuffer (the buffer pool allocates those), so only handles cross threads. This
 * thread then blocks on an atomic counter until every worker is done: kernels stay synchronous,
 * as the backend contract wants.
 *
 * Workers start in the background on first use and serve only once they have said they are
 * ready, so nothing ever waits on a thread that is still loading; until then kernels run here.
 * They stop after a second without work, so an idle process can exit (Deno has no unref for
 * workers). SPARSECODER_THREADS sets the thread count (1 turns threads off).
 */
import { availableParallelism } from "node:os";
import { readEnv } from "../platform/env.ts";
import { unrefTimer } from "../platform/runtime.ts";
import { type Job, runJob } from "./jobs.ts";

const IDLE_MS = 1000;
/** The worker module beside this one: worker.ts in the repo, worker.js in the built package. */
const WORKER_URL =
  new URL(import.meta.url.endsWith(".ts") ? "./worker.ts" : "./worker.js", import.meta.url).href;
/** Web Workers: Deno and Bun have them; Node has none, so kernels stay on this thread there. */
const HAS_WORKERS = typeof Worker !== "undefined";
/** Longest wait on a worker before the process is declared broken rather than hung. */
const STUCK_MS = 120_000;

function configured(): number {
  const raw = readEnv("SPARSECODER_THREADS");
  if (raw !== undefined && raw !== "") {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`SPARSECODER_THREADS must be a positive integer, got "${raw}"`);
    }
    return n;
  }
  return Math.min(8, availableParallelism());
}

const WANT = configured();
/** The current cap (setThreads), at most WANT. */
let cap = WANT;
const workers: Worker[] = [];
let ready = 0;
let failed = false;
let idle: ReturnType<typeof setTimeout> | undefined;
let lastUse = 0;
/** [jobs finished, jobs failed]: written by workers, waited on here. */
const ctl = new Int32Array(new SharedArrayBuffer(8));

function start(): void {
  for (let i = 0; i < WANT - 1; i++) {
    const w = new Worker(WORKER_URL, { type: "module" });
    w.onmessage = () => ready++;
    // A worker that fails to load leaves `ready` short, so kernels stay on this thread.
    w.onerror = (e) => {
      e.preventDefault();
      if (!failed) {
        console.warn(
          `sparsecoder: CPU worker threads unavailable (${e.message}); kernels run on one thread`,
        );
      }
      failed = true;
    };
    (w as { unref?: () => void }).unref?.();
    workers.push(w);
  }
}

function stop(): void {
  for (const w of workers) w.terminate();
  workers.length = 0;
  ready = 0;
  if (idle !== undefined) clearTimeout(idle);
  idle = undefined;
}

/** Note a use; one timer (not one per kernel call) stops the workers after IDLE_MS without one. */
function keepAlive(): void {
  lastUse = performance.now();
  if (idle === undefined) scheduleStop(IDLE_MS);
}

function scheduleStop(ms: number): void {
  idle = setTimeout(() => {
    const quiet = performance.now() - lastUse;
    if (quiet >= IDLE_MS) stop();
    else scheduleStop(IDLE_MS - quiet);
  }, ms);
  unrefTimer(idle);
}

/** How many slices a kernel may be cut into now (1 until workers are ready, or with threads off). */
export function threads(): number {
  if (cap === 1 || failed || !HAS_WORKERS) return 1;
  if (workers.length === 0) start();
  keepAlive();
  // Only the workers that have said they are ready: one that is still loading would stall us.
  return ready === workers.length ? cap : 1;
}

/** The thread cap alone, for native kernels that bring their own threads (no workers started). */
export function threadCap(): number {
  return cap;
}

/** Cap the threads kernels use (1: this thread only); returns the previous cap. */
export function setThreads(n: number): number {
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`setThreads: expected a positive integer, got ${n}`);
  }
  const prev = cap;
  cap = Math.min(n, WANT);
  return prev;
}

/** Resolves once the worker threads serve (at once with threads off); kernels never wait for this. */
export async function threadsReady(): Promise<number> {
  if (threads() === 1 && cap > 1) {
    while (ready < workers.length && !failed) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return threads();
}

/** Whether every array lives in shared memory (a non-shared one would be copied to a worker). */
export function allShared(...arrays: (ArrayBufferView | null)[]): boolean {
  for (const a of arrays) if (a && !(a.buffer instanceof SharedArrayBuffer)) return false;
  return true;
}

/** Run the jobs, the first here and the rest on workers, and return when all are done. */
export function runJobs(jobs: Job[]): void {
  if (jobs.length === 1) return runJob(jobs[0]);
  if (jobs.length > threads()) {
    throw new Error(`runJobs: ${jobs.length} jobs for ${threads()} threads`);
  }
  Atomics.store(ctl, 0, 0);
  Atomics.store(ctl, 1, 0);
  for (let i = 1; i < jobs.length; i++) workers[i - 1].postMessage({ job: jobs[i], ctl });
  let error: unknown = null;
  try {
    runJob(jobs[0]);
  } catch (e) {
    error = e;
  }
  const want = jobs.length - 1, t0 = Date.now();
  for (let done = Atomics.load(ctl, 0); done < want; done = Atomics.load(ctl, 0)) {
    if (Date.now() - t0 > STUCK_MS) {
      stop();
      throw new Error(`CPU worker threads did not finish a kernel within ${STUCK_MS / 1000} s`);
    }
    Atomics.wait(ctl, 0, done, 100);
  }
  if (error) throw error;
  // A worker's slice threw (e.g. an index out of range): redo the slices here to raise the error
  // with its message and stack on this thread. The kernels are deterministic, so it recurs.
  if (Atomics.load(ctl, 1)) { for (let i = 1; i < jobs.length; i++) runJob(jobs[i]); }
}

/** Split [0, n) into `parts` ranges of nearly equal size, each a multiple of `align`. */
export function ranges(n: number, parts: number, align = 1): [number, number][] {
  const out: [number, number][] = [];
  const units = Math.ceil(n / align);
  for (let p = 0, at = 0; p < parts; p++) {
    const end = Math.min(n, Math.round((units * (p + 1)) / parts) * align);
    if (end > at) out.push([at, end]);
    at = end;
  }
  return out;
}
