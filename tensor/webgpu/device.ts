/**
 * Finding a WebGPU device: Deno's built-in `navigator.gpu`, else (Bun, Node) the `webgpu` npm
 * package (Dawn). Acquisition is asynchronous, so it happens once, before the backend is used;
 * every failure is turned into a one-line reason that `backendInfo()` and errors can show.
 */
// WebGPU objects are typed loosely: the runtimes ship different (or no) WebGPU declarations.
// deno-lint-ignore no-explicit-any
export type Gpu = any;

export interface DeviceInfo {
  device: Gpu;
  /** Adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** True for software/fallback adapters (Mesa's llvmpipe). */
  fallback: boolean;
  /** Whether the device was created with `shader-f16`. */
  f16: boolean;
  /** Which implementation: "deno" (wgpu) or "dawn" (the webgpu npm package). */
  via: string;
}

export type Acquired = { ok: true; info: DeviceInfo } | { ok: false; reason: string };

async function gpuEntry(): Promise<{ gpu: Gpu; via: string } | { reason: string }> {
  const nav = (globalThis as { navigator?: { gpu?: Gpu } }).navigator;
  if (nav?.gpu) return { gpu: nav.gpu, via: "deno" };
  try {
    // A computed specifier: Deno must not try to resolve the Node addon.
    const mod = await import("web" + "gpu");
    const create = mod.create ?? mod.default?.create;
    if (typeof create !== "function") return { reason: "the webgpu package has no create()" };
    return { gpu: create([]), via: "dawn" };
  } catch (e) {
    return { reason: `no navigator.gpu and the webgpu package did not load (${(e as Error).message.split("\n")[0]})` };
  }
}

/** The adapter's limits we rely on; requested at the adapter's maximum. */
const LIMITS = ["maxStorageBufferBindingSize", "maxBufferSize", "maxStorageBuffersPerShaderStage", "maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX"];

export async function acquireDevice(): Promise<Acquired> {
  const entry = await gpuEntry();
  if ("reason" in entry) return { ok: false, reason: entry.reason };
  let adapter: Gpu;
  try {
    adapter = await entry.gpu.requestAdapter();
  } catch (e) {
    return { ok: false, reason: `requestAdapter failed: ${(e as Error).message}` };
  }
  if (!adapter) {
    const hint = entry.via === "dawn"
      ? "Dawn found no adapter it accepts (it rejects Mesa's software Vulkan, which lacks shaderUniformArrayDynamicIndexing)"
      : "no WebGPU adapter (install a Vulkan driver, e.g. apt-get install mesa-vulkan-drivers)";
    return { ok: false, reason: `${entry.via}: ${hint}` };
  }
  const f16 = adapter.features.has("shader-f16");
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS) if (typeof adapter.limits[k] === "number") requiredLimits[k] = adapter.limits[k];
  try {
    const device = await adapter.requestDevice({ requiredFeatures: f16 ? ["shader-f16"] : [], requiredLimits });
    const ai = adapter.info ?? {};
    return {
      ok: true,
      info: { device, description: ai.description || ai.vendor || "unknown adapter", fallback: !!ai.isFallbackAdapter, f16, via: entry.via },
    };
  } catch (e) {
    return { ok: false, reason: `requestDevice failed: ${(e as Error).message}` };
  }
}
