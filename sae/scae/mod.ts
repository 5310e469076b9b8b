/** SCAE suites (sparsely connected autoencoders), re-exported by ../mod.ts as `scae`. Re-exports only. */
export * from "./suite.ts";
export * from "./connections.ts";
export * from "./frozen.ts";
export * from "./pruned.ts";
export * from "./connect.ts";
export * from "./scatter.ts";
