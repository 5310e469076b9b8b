/** A CPU worker thread: runs kernel jobs posted by threads.ts and counts them done in `ctl`. */
import { type Job, runJob } from "./jobs.ts";

const scope = self as unknown as {
  onmessage: (e: MessageEvent) => void;
  postMessage(m: unknown): void;
};

scope.onmessage = (e: MessageEvent<{ job: Job; ctl: Int32Array }>) => {
  const { job, ctl } = e.data;
  try {
    runJob(job);
  } catch {
    // The main thread redoes this slice to raise the error itself (threads.ts).
    Atomics.store(ctl, 1, 1);
  } finally {
    Atomics.add(ctl, 0, 1);
    Atomics.notify(ctl, 0);
  }
};
scope.postMessage("ready");
