/**
 * Micro-batching: requests that arrive within `maxWaitMs` of each other (or while the previous
 * batch is still running) go to the backend as one call, up to `maxRows` rows. Under light load a
 * request waits at most maxWaitMs; under heavy load batches grow, which is where throughput comes
 * from (one [B, d]·[d, F] matmul instead of B small ones).
 */

export interface BatcherOptions {
  /** Longest a request waits for company before its batch runs (ms). */
  maxWaitMs: number;
  /** Most rows in one backend call; a request larger than this runs alone. */
  maxRows: number;
  /** False: never merge requests (each runs alone, still one at a time). */
  merge?: boolean;
}

export interface BatcherStats {
  /** Backend calls made. */
  batches: number;
  /** Requests served. */
  requests: number;
  /** Largest number of requests merged into one call. */
  largest: number;
}

export interface Batcher<T, R> {
  submit(item: T, rows: number): Promise<R>;
  stats(): BatcherStats;
  /** Resolves when nothing is queued or running. */
  idle(): Promise<void>;
}

interface Pending<T, R> {
  item: T;
  rows: number;
  resolve: (r: R) => void;
  reject: (e: unknown) => void;
}

/** `run` gets the merged items in arrival order and returns one result per item. */
export function createBatcher<T, R>(
  run: (items: T[]) => Promise<R[]>,
  opts: BatcherOptions,
): Batcher<T, R> {
  const queue: Pending<T, R>[] = [];
  let queuedRows = 0, timer: ReturnType<typeof setTimeout> | null = null, busy = false;
  const stats: BatcherStats = { batches: 0, requests: 0, largest: 0 };
  let idleWaiters: (() => void)[] = [];

  const schedule = (delay: number) => {
    if (timer !== null || busy || queue.length === 0) return;
    timer = setTimeout(flush, delay);
  };

  // Take whole requests up to maxRows (always at least one).
  function take(): Pending<T, R>[] {
    const out: Pending<T, R>[] = [];
    let rows = 0;
    while (
      queue.length &&
      (out.length === 0 || (opts.merge !== false && rows + queue[0].rows <= opts.maxRows))
    ) {
      const p = queue.shift()!;
      rows += p.rows;
      out.push(p);
    }
    queuedRows -= rows;
    return out;
  }

  async function flush(): Promise<void> {
    timer = null;
    if (busy || queue.length === 0) return;
    busy = true;
    const batch = take();
    stats.batches++;
    stats.requests += batch.length;
    stats.largest = Math.max(stats.largest, batch.length);
    try {
      const results = await run(batch.map((p) => p.item));
      if (results.length !== batch.length) {
        throw new Error(
          `batcher: run returned ${results.length} results for ${batch.length} requests`,
        );
      }
      batch.forEach((p, i) => p.resolve(results[i]));
    } catch (e) {
      batch.forEach((p) => p.reject(e));
    } finally {
      busy = false;
      // Whatever queued meanwhile has already waited: run it as soon as it is a full batch.
      if (queue.length) schedule(queuedRows >= opts.maxRows ? 0 : opts.maxWaitMs);
      else {
        const w = idleWaiters;
        idleWaiters = [];
        w.forEach((f) => f());
      }
    }
  }

  return {
    submit(item, rows) {
      return new Promise<R>((resolve, reject) => {
        queue.push({ item, rows, resolve, reject });
        queuedRows += rows;
        if (queuedRows >= opts.maxRows || opts.merge === false) {
          if (timer !== null) clearTimeout(timer), timer = null;
          schedule(0);
        } else schedule(opts.maxWaitMs);
      });
    },
    stats: () => ({ ...stats }),
    idle:
      () => (busy || queue.length
        ? new Promise<void>((r) => idleWaiters.push(r))
        : Promise.resolve()),
  };
}
