/**
 * Several processes as one job: the communicator (all-reduce, broadcast, all-gather, barrier,
 * abort) over MPI through FFI, or the single-process one when no launcher started several ranks.
 */
export * from "./communicator.ts";
export * from "./job.ts";
export { type MpiOptions, mpiTimeout, openMpi } from "./mpi.ts";
export { JobError, launchRanks, lostRank, mpirunArgs } from "./launch.ts";
export { deviceAllReduce, deviceCollectivesInfo, ncclJob } from "./device.ts";
