/**
 * How the webgpu test files get their adapter. Where none is found a file registers one test
 * that prints the reason and passes — or, under Deno with REQUIRE_WEBGPU=1 (set by .ci/run, where
 * Deno finds Mesa's llvmpipe), fails with it, so CI cannot pass with no webgpu coverage. Under
 * Bun the skip stays even then: Dawn rejects llvmpipe's Vulkan, so Bun has no adapter in CI.
 */
import * as t from "../mod.ts";
import { initWebGPU } from "../tensor/webgpu/mod.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { runtime, test } from "./harness.ts";

/** Whether a missing adapter must fail the run here (REQUIRE_WEBGPU=1, under Deno). */
export const webgpuRequired = (): boolean =>
  readEnv("REQUIRE_WEBGPU") === "1" && runtime === "deno";

/** The adapter, or the reason there is none with the skip (or failure) test registered for `suite`. */
export async function adapterOrSkip(suite: string): ReturnType<typeof initWebGPU> {
  const r = await initWebGPU();
  if (r.ok) return r;
  if (webgpuRequired()) {
    test(`${suite}: REQUIRE_WEBGPU=1 needs a WebGPU adapter`, () => {
      throw new Error(
        `REQUIRE_WEBGPU=1 but Deno found no WebGPU adapter (CI installs mesa-vulkan-drivers for llvmpipe): ${r.reason}`,
      );
    });
  } else {
    const note = readEnv("REQUIRE_WEBGPU") === "1"
      ? " (REQUIRE_WEBGPU=1 applies under deno only: Dawn rejects Mesa's software Vulkan)"
      : "";
    test(`${suite}: skipped (no adapter)`, () =>
      console.log(`skipped under ${runtime}: ${r.reason}${note}`));
  }
  return r;
}

/** Run `fn` with `name` as the current backend, restoring cpu after. */
export async function on<T>(name: string, fn: () => T | Promise<T>): Promise<T> {
  t.useBackend(name);
  try {
    return await fn();
  } finally {
    t.useBackend("cpu");
  }
}
