/** The chosen backend: the library's one piece of global state. */
import type { Backend } from "./backend.ts";
import { cpu } from "./cpu/backend.ts";
import { readEnv } from "./env.ts";
import { cuda } from "./cuda/backend.ts";
import { cudaUnavailableReason } from "./cuda/runtime.ts";

const backends = new Map<string, Backend>([["cpu", cpu], ["cuda", cuda]]);
/** Backends that may be missing on a machine: why they cannot run (null when they can). */
const unavailable = new Map<string, () => string | null>([["cuda", cudaUnavailableReason]]);
let current: Backend | null = null;

export function registerBackend(b: Backend): void {
  backends.set(b.name, b);
}

/** Backends that can run here. */
export function availableBackends(): string[] {
  return [...backends.keys()].filter((n) => !unavailable.get(n)?.());
}

/** Select a backend by name for all tensors created from now on. */
export function useBackend(name: string): Backend {
  const b = backends.get(name);
  if (!b) throw new Error(`useBackend: unknown backend "${name}"; available: ${availableBackends().join(", ")}`);
  const why = unavailable.get(name)?.();
  if (why) throw new Error(`useBackend: the ${name} backend is unavailable here: ${why}`);
  current = b;
  return b;
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
    backends: Object.fromEntries([...backends].map(([n, b]) => [n, b.info()])),
  };
}
