/**
 * The job this process belongs to: one process, or one rank of several started by an MPI
 * launcher (mpirun, or srun with PMI/PMIx). Nothing is loaded unless a launcher started several
 * ranks (or `initDistributed({ force: true })` asks), so a single process pays nothing; once
 * started, the communicator is the process's own and `distributedInfo()` (shown by backendInfo)
 * says which it is and why.
 */
import { readEnv } from "../platform/env.ts";
import { type Communicator, singleProcess } from "./communicator.ts";
import { type MpiOptions, openMpi } from "./mpi.ts";
import { endDeviceCollectives } from "./device.ts";

let current: Communicator | null = null;
/** MPI was started and finalized in this process: the standard forbids starting it again. */
let mpiEnded = false;

/**
 * The number of ranks a launcher started, read from its environment (Open MPI's mpirun, PMI, or
 * PMIx under srun), or null when no launcher started this process.
 */
export function launchedRanks(): { size: number; by: string } | null {
  const vars = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];
  for (const v of vars) {
    const n = Number(readEnv(v));
    if (Number.isInteger(n) && n > 0) return { size: n, by: v };
  }
  // srun --mpi=pmix sets PMIX_RANK but not the size; Slurm says it.
  const steps = Number(readEnv("SLURM_STEP_NUM_TASKS"));
  if (readEnv("PMIX_RANK") !== undefined && Number.isInteger(steps) && steps > 0) {
    return { size: steps, by: "SLURM_STEP_NUM_TASKS" };
  }
  return null;
}

export interface InitOptions extends MpiOptions {
  /** Start MPI even when no launcher set the environment (e.g. a singleton MPI job). */
  force?: boolean;
}

/**
 * The job's communicator, starting MPI when a launcher started several ranks. Throws when it
 * did but MPI cannot start: N copies training independently into one folder is never wanted.
 */
export function initDistributed(o: InitOptions = {}): Communicator {
  if (current) return current;
  if (mpiEnded) {
    throw new Error("initDistributed: MPI was finalized in this process and cannot start again");
  }
  const launched = launchedRanks();
  if (!o.force && (!launched || launched.size === 1)) {
    current = singleProcess(
      launched ? `the launcher started 1 rank (${launched.by}=1)` : "not started by mpirun or srun",
    );
    return current;
  }
  const { comm, reason } = openMpi(o);
  if (!comm) {
    if (launched && launched.size > 1) {
      throw new Error(
        `started as one of ${launched.size} ranks (${launched.by}) but MPI is unavailable: ${reason}`,
      );
    }
    current = singleProcess(`MPI unavailable: ${reason}`);
    return current;
  }
  if (launched && comm.size !== launched.size) {
    throw new Error(
      `MPI reports ${comm.size} ranks but the launcher set ${launched.by}=${launched.size}: is ${
        o.mpicc ?? "mpicc"
      } from the same MPI as the launcher?`,
    );
  }
  current = comm;
  return current;
}

/** The communicator once initDistributed ran, else null. */
export function communicator(): Communicator | null {
  return current;
}

/** One line for backendInfo(): the job's communicator, or that none was started and why not. */
export function distributedInfo(): string {
  if (current) return current.describe;
  const launched = launchedRanks();
  return launched && launched.size > 1
    ? `not started: launched as one of ${launched.size} ranks (${launched.by}); initDistributed() starts MPI`
    : "single process (not started by mpirun or srun)";
}

/** End MPI (when started) so the launcher sees a clean exit; the job is single-process after. */
export function finalizeDistributed(): void {
  const c = current;
  current = null;
  if (c?.describe.startsWith("mpi:")) mpiEnded = true;
  if (c) endDeviceCollectives(c);
  c?.finalize();
}
