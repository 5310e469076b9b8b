/** The chosen backend: the library's one piece of global state. */
import type { Backend } from "./backend.ts";
import { cpu } from "./cpu/backend.ts";
import { readEnv } from "./env.ts";

const backends = new Map<string, Backend>([["cpu", cpu]]);
let current: Backend | null = null;
/** Why a known backend cannot be used (yet); shown by useBackend and backendInfo. */
const unavailable = new Map<string, string>([["webgpu", "not initialised: await initWebGPU() or selectBackend(\"webgpu\") first (finding a device is asynchronous), or set SPARSECODER_BACKEND=webgpu"]]);

export function markUnavailable(name: string, reason: string): void {
  unavailable.set(name, reason);
}

export function registerBackend(b: Backend): void {
  backends.set(b.name, b);
  unavailable.delete(b.name);
}

export function availableBackends(): string[] {
  return [...backends.keys()];
}

/** A registered backend by name (without selecting it); the reason when it cannot be used. */
export function findBackend(name: string, where = "useBackend"): Backend {
  const b = backends.get(name);
  if (!b && unavailable.has(name)) throw new Error(`${where}: backend "${name}" is unavailable: ${unavailable.get(name)}`);
  if (!b) throw new Error(`${where}: unknown backend "${name}"; available: ${availableBackends().join(", ")}`);
  return b;
}

/** Select a backend by name for all tensors created from now on. */
export function useBackend(name: string): Backend {
  current = findBackend(name);
  return current;
}

/** The explicit choice, else $SPARSECODER_BACKEND, else cpu. */
export function getBackend(): Backend {
  if (current) return current;
  const env = readEnv("SPARSECODER_BACKEND");
  return useBackend(env ?? "cpu");
}

/** What runs where, in one line per backend. */
export function backendInfo(): { current: string; backends: Record<string, string> } {
  return {
    current: getBackend().name,
    backends: Object.fromEntries([...[...backends].map(([n, b]) => [n, b.info()]), ...[...unavailable].map(([n, r]) => [n, `unavailable: ${r}`])]),
  };
}
