/**
 * Property-based testing helpers for users of the library, the `sparsecoder/testing` entry (loads
 * fast-check, so the root mod.ts does not re-export it):
 * fast-check arbitraries for tensors, dictionary configs and parameter records, DFC partitions;
 * checkers for gradient masks, optimizer moments and partition integrity. Re-exports only.
 */
export * from "./arbitraries.ts";
export * from "./checkers.ts";
export { assertPartitionIntact, verifyPartitionIntegrity } from "../sae/crosscoder/partition.ts";
