/** The chosen backend: the library's one piece of global state. */
import type { Backend } from "./backend.ts";
import { cpu } from "./cpu/backend.ts";
import { readEnv } from "./platform/env.ts";
import { cuda } from "./cuda/backend.ts";
import { cudaUnavailableReason } from "./cuda/runtime.ts";
import { distributedInfo } from "./distributed/job.ts";
import { deviceCollectivesInfo } from "./distributed/device.ts";

const backends = new Map<string, Backend>([["cpu", cpu], ["cuda", cuda]]);
/**
 * Why a known backend cannot be used here (null when it can): cuda checks its libraries and
 * device; webgpu is registered only once a device is found (asynchronously), until then it says how.
 */
const unavailable = new Map<string, () => string | null>([
  ["cuda", cudaUnavailableReason],
  [
    "webgpu",
    () =>
      'not initialised: await initWebGPU() or selectBackend("webgpu") first (finding a device is asynchronous), or set SPARSECODER_BACKEND=webgpu',
  ],
]);
let current: Backend | null = null;
/** Why `selectBackend("auto")` chose the current backend; cleared by any later choice. */
let autoReason: string | null = null;

export function markUnavailable(name: string, reason: string): void {
  unavailable.set(name, () => reason);
}

export function registerBackend(b: Backend): void {
  backends.set(b.name, b);
  unavailable.delete(b.name);
}

/** Backends that can run here. */
export function availableBackends(): string[] {
  return [...backends.keys()].filter((n) => !unavailable.get(n)?.());
}

/** A registered backend by name (without selecting it); the reason when it cannot be used. */
export function findBackend(name: string, where = "useBackend"): Backend {
  const b = backends.get(name);
  const why = unavailable.get(name)?.();
  if (why) throw new Error(`${where}: the ${name} backend is unavailable here: ${why}`);
  if (!b) {
    throw new Error(
      `${where}: unknown backend "${name}"; available: ${availableBackends().join(", ")}`,
    );
  }
  return b;
}

/** Select a backend by name for all tensors created from now on. */
export function useBackend(name: string, where = "useBackend"): Backend {
  current = findBackend(name, where);
  autoReason = null;
  return current;
}

/** Select `name` as "auto"'s choice, remembering why (shown by backendInfo). */
export function useAutoChoice(name: string, why: string): Backend {
  useBackend(name);
  autoReason = why;
  return current!;
}

/** The explicit choice, else $SPARSECODER_BACKEND, else cpu. */
export function getBackend(): Backend {
  if (current) return current;
  const env = readEnv("SPARSECODER_BACKEND");
  return useBackend(env ?? "cpu");
}

/**
 * What runs where, in one line per backend (with the reason for those that cannot run); `auto`
 * says why, when the current backend is what `selectBackend("auto")` chose; `distributed` is
 * the job: a single process (and why) or this rank of an MPI job.
 */
export function backendInfo(): {
  current: string;
  backends: Record<string, string>;
  auto?: string;
  distributed: string;
} {
  const names = new Set([...backends.keys(), ...unavailable.keys()]);
  const name = getBackend().name;
  return {
    current: name,
    ...(autoReason ? { auto: autoReason } : {}),
    backends: Object.fromEntries([...names].map((n) => {
      const b = backends.get(n);
      return [n, b ? b.info() : `unavailable: ${unavailable.get(n)!()}`];
    })),
    distributed: [distributedInfo(), deviceCollectivesInfo()].filter((l) => l).join("; "),
  };
}
