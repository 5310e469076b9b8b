/**
 * Finding a WebGPU device: Deno's built-in `navigator.gpu`, else (Bun, Node) the `webgpu` npm
 * package (Dawn). Acquisition is asynchronous, so it happens once, before the backend is used;
 * every failure is turned into a one-line reason that `backendInfo()` and errors can show.
 */
import { readEnv, setNativeEnv } from "../platform/env.ts";

// WebGPU objects are typed loosely: the runtimes ship different (or no) WebGPU declarations.
// deno-lint-ignore no-explicit-any
export type Gpu = any;

export interface DeviceInfo {
  device: Gpu;
  /** Adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** True for software/fallback adapters (Mesa's llvmpipe): `selectBackend("auto")` passes them over. */
  fallback: boolean;
  /** Whether the device was created with `shader-f16`. */
  f16: boolean;
  /** Which implementation: "deno" (wgpu) or "dawn…" (the webgpu npm package). */
  via: string;
}

export type Acquired = { ok: true; info: DeviceInfo } | { ok: false; reason: string };

interface Entry {
  gpu: Gpu;
  via: string;
  options?: Record<string, unknown>;
}

/**
 * Mesa's EGL picks its platform from EGL_PLATFORM when the display opens; without a window
 * system only "surfaceless" works. It is set in the C environment (Bun's process.env does not
 * reach it), before Dawn starts.
 */
function surfacelessEgl(): void {
  if (readEnv("EGL_PLATFORM") || readEnv("WAYLAND_DISPLAY") || readEnv("DISPLAY")) return;
  // Where this fails, Dawn's OpenGL ES adapter is found only if EGL already works.
  setNativeEnv("EGL_PLATFORM", "surfaceless");
}

/**
 * Deno's built-in `navigator.gpu`; else the `webgpu` npm package (Dawn): its default (Vulkan,
 * Metal, D3D12) adapter, then its OpenGL ES adapter in compatibility mode, which is how Dawn
 * runs on Mesa's software renderer (it rejects Mesa's software Vulkan).
 */
async function gpuEntries(): Promise<Entry[] | { reason: string }> {
  const nav = (globalThis as { navigator?: { gpu?: Gpu } }).navigator;
  if (nav?.gpu) return [{ gpu: nav.gpu, via: "deno" }];
  try {
    // A computed specifier: Deno must not try to resolve the Node addon.
    const mod = await import("web" + "gpu");
    const create = mod.create ?? mod.default?.create;
    if (typeof create !== "function") return { reason: "the webgpu package has no create()" };
    const entries: Entry[] = [{ gpu: create([]), via: "dawn" }];
    // Opt-in: on Mesa (llvmpipe) this adapter computes correctly, but Bun aborts ("Owner died")
    // once its garbage collector frees Dawn's OpenGL objects, so it is no default.
    if (readEnv("SPARSECODER_DAWN_GL") === "1") {
      surfacelessEgl();
      entries.push({
        gpu: create(["backend=opengles"]),
        via: "dawn (OpenGL ES, compatibility mode)",
        options: { featureLevel: "compatibility" },
      });
    }
    return entries;
  } catch (e) {
    return {
      reason: `no navigator.gpu and the webgpu package did not load (${
        (e as Error).message.split("\n")[0]
      })`,
    };
  }
}

/** Mesa's and Google's CPU renderers, by the names adapters report. */
const SOFTWARE = /llvmpipe|lavapipe|softpipe|swiftshader/i;

/**
 * Whether an adapter renders on the CPU. wgpu (Deno) flags llvmpipe as a fallback adapter, but
 * Dawn's OpenGL ES adapter on llvmpipe does not (isFallbackAdapter false; "llvmpipe" only in
 * info.device), so the renderer's name counts too.
 */
function isSoftware(adapter: Gpu): boolean {
  const ai = adapter.info ?? {};
  if (ai.isFallbackAdapter ?? adapter.isFallbackAdapter) return true;
  return SOFTWARE.test(`${ai.device ?? ""} ${ai.description ?? ""} ${ai.architecture ?? ""}`);
}

/** The adapter's limits we rely on; requested at the adapter's maximum. */
const LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
];

export async function acquireDevice(): Promise<Acquired> {
  const entries = await gpuEntries();
  if ("reason" in entries) return { ok: false, reason: entries.reason };
  let adapter: Gpu = null, entry = entries[0];
  for (const e of entries) {
    try {
      adapter = await e.gpu.requestAdapter(e.options);
    } catch (err) {
      return { ok: false, reason: `requestAdapter failed: ${(err as Error).message}` };
    }
    entry = e;
    if (adapter) break;
  }
  if (!adapter) {
    const hint = entry.via.startsWith("dawn")
      ? "Dawn found no adapter it accepts (it rejects Mesa's software Vulkan, which lacks shaderUniformArrayDynamicIndexing; its OpenGL ES adapter, SPARSECODER_DAWN_GL=1, works on Mesa but Bun aborts when its GC frees Dawn's OpenGL objects)"
      : "no WebGPU adapter (install a Vulkan driver, e.g. apt-get install mesa-vulkan-drivers)";
    return { ok: false, reason: `${entry.via.split(" ")[0]}: ${hint}` };
  }
  const f16 = adapter.features.has("shader-f16");
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS) {
    if (typeof adapter.limits[k] === "number") requiredLimits[k] = adapter.limits[k];
  }
  try {
    const device = await adapter.requestDevice({
      requiredFeatures: f16 ? ["shader-f16"] : [],
      requiredLimits,
    });
    const ai = adapter.info ?? {};
    return {
      ok: true,
      info: {
        device,
        description: ai.description || ai.vendor || "unknown adapter",
        fallback: isSoftware(adapter),
        f16,
        via: entry.via,
      },
    };
  } catch (e) {
    return { ok: false, reason: `requestDevice failed: ${(e as Error).message}` };
  }
}
