/**
 * Setting up the webgpu backend. Finding a device is asynchronous while backend selection is
 * not, so the device is acquired here, once: by `await initWebGPU()`, by `await selectBackend()`,
 * or at import when SPARSECODER_BACKEND is "webgpu" or "auto" (a top-level await). The default
 * stays cpu: probing a GPU on every import would cost every program, and the software adapter
 * CI has is slower than the CPU backend (which is also why "auto" passes software adapters over).
 */
import type { Backend } from "../backend.ts";
import { markUnavailable, registerBackend, useAutoChoice, useBackend } from "../registry.ts";
import { readEnv } from "../platform/env.ts";
import { acquireDevice, type DeviceInfo } from "./device.ts";
import { createWebGPUBackend, type WebGPUBackend } from "./backend.ts";

export type { WebGPUBackend } from "./backend.ts";

let pending: Promise<{ ok: true; backend: WebGPUBackend } | { ok: false; reason: string }> | null =
  null;

/** Acquire the device and register the "webgpu" backend; the reason when there is none. */
export function initWebGPU(): Promise<
  { ok: true; backend: WebGPUBackend } | { ok: false; reason: string }
> {
  pending ??= acquireDevice().then((a) => {
    if (!a.ok) {
      markUnavailable("webgpu", a.reason);
      return { ok: false as const, reason: a.reason };
    }
    const backend = createWebGPUBackend(a.info);
    registerBackend(backend);
    return { ok: true as const, backend };
  });
  return pending;
}

/**
 * What "auto" picks for an acquisition result, and why: webgpu on a hardware adapter; cpu when
 * there is none, or when the only one is a software fallback (llvmpipe), which is slower than the
 * cpu backend. Explicit "webgpu" still uses a fallback adapter.
 */
export function autoChoice(
  r: { ok: true; backend: { device: DeviceInfo } } | { ok: false; reason: string },
): { name: "webgpu" | "cpu"; why: string } {
  if (!r.ok) return { name: "cpu", why: `auto chose cpu: no WebGPU adapter (${r.reason})` };
  const d = r.backend.device;
  if (d.fallback) {
    return {
      name: "cpu",
      why:
        `auto chose cpu: the WebGPU adapter is a software fallback (${d.description}), slower than the cpu backend; selectBackend("webgpu") uses it anyway`,
    };
  }
  return { name: "webgpu", why: `auto chose webgpu: hardware adapter ${d.description}` };
}

/**
 * useBackend that can wait for a device: "webgpu" (an error with the reason when no adapter is
 * found), "auto" (see autoChoice; backendInfo().auto says why), or any registered name.
 */
export async function selectBackend(name: string, where = "useBackend"): Promise<Backend> {
  if (name === "webgpu" || name === "auto") {
    const r = await initWebGPU();
    if (name === "auto") {
      const c = autoChoice(r);
      return useAutoChoice(c.name, c.why);
    }
  }
  return useBackend(name, where);
}

const env = readEnv("SPARSECODER_BACKEND");
if (env === "webgpu" || env === "auto") {
  await selectBackend(env).catch(() => undefined); // getBackend() reports the reason on first use
}
