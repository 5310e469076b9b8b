/**
 * The platform layer: everything that differs between Deno, Bun and Node — which runtime this is,
 * environment variables, opening native libraries through FFI, running subprocesses. The rest of
 * the library goes through these modules and never probes `globalThis.Deno` or `Bun` itself.
 */
export * from "./runtime.ts";
export * from "./env.ts";
export * from "./ffi.ts";
export * from "./process.ts";
