/**
 * Starting a job of several ranks from one command: this runtime's script again under mpirun,
 * its output passed through, and when the job fails, one line saying which rank was lost and how
 * (read from mpirun's report or a rank's own watchdog line).
 */
import { spawn } from "node:child_process";
import { availableParallelism } from "node:os";
import process from "node:process";
import { scriptCommand } from "../platform/process.ts";
import { readEnv } from "../platform/env.ts";
import { mainScript } from "../platform/runtime.ts";

/** A job started by launchRanks that failed: `status` is mpirun's exit status. */
export class JobError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

/** mpirun's arguments for `ranks` copies of `command` on this machine. */
export function mpirunArgs(ranks: number, command: readonly string[]): string[] {
  const root = (process as { getuid?: () => number }).getuid?.() === 0;
  return [
    ...(root ? ["--allow-run-as-root"] : []),
    // More ranks than cores is a test or a debugging session, not a mistake to refuse.
    ...(ranks > availableParallelism() ? ["--oversubscribe"] : []),
    // Open MPI's progress loop yields the core while waiting (the shim's sleeping arrival covers
    // the wait for slow ranks; this covers the data movement once they are there).
    "--mca",
    "mpi_yield_when_idle",
    "1",
    "-np",
    String(ranks),
    ...command,
  ];
}

/** Which rank the job lost and how, from mpirun's and the ranks' output; null if it does not say. */
export function lostRank(output: string): string | null {
  const signal = output.match(
    /process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+)(?: \(([^)]+)\))?/,
  );
  if (signal) {
    return `rank ${signal[1]} on ${signal[2]} was killed by signal ${signal[3]}${
      signal[4] ? ` (${signal[4]})` : ""
    }`;
  }
  const watchdog = output.match(
    /rank (\d+) of \d+ \(([^,]+), pid \d+\): (\S+) did not complete within ([\d.]+) s/,
  );
  if (watchdog) {
    return `rank ${watchdog[1]} on ${watchdog[2]} waited ${watchdog[4]} s in ${
      watchdog[3]
    } for a rank that had died or hung`;
  }
  const status = output.match(/Process name: \[\[\d+,\d+\],(\d+)\]\s+Exit code:\s+(\d+)/);
  if (status) return `rank ${status[1]} exited with status ${status[2]}`;
  return null;
}

/**
 * Run this process's script with `args` as `ranks` ranks under mpirun (found on PATH, or
 * SPARSECODER_MPIRUN), passing its output through; throws a JobError whose one line names the
 * lost rank when the job failed.
 */
export async function launchRanks(
  ranks: number,
  args: readonly string[],
  mpirun = readEnv("SPARSECODER_MPIRUN") ?? "mpirun",
): Promise<void> {
  const script = mainScript();
  if (!script) {
    throw new Error("cannot relaunch under mpirun: this runtime does not say which script runs");
  }
  const child = spawn(mpirun, mpirunArgs(ranks, [...scriptCommand(script), ...args]), {
    stdio: ["inherit", "inherit", "pipe"],
  });
  let tail = "";
  child.stderr!.on("data", (b: Uint8Array) => {
    process.stderr.write(b);
    tail = (tail + new TextDecoder().decode(b)).slice(-65536);
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on(
      "error",
      (e: Error) =>
        reject(
          new Error(`cannot start ${mpirun}: ${e.message} (Debian: apt-get install openmpi-bin)`),
        ),
    );
    child.on("close", (c: number | null) => resolve(c));
  });
  if (code === 0) return;
  const lost = lostRank(tail);
  throw new JobError(
    `${ranks} ranks under ${mpirun} stopped (exit status ${code})${
      lost ? `: ${lost}` : ""
    }; every rank has stopped`,
    code || 1,
  );
}
