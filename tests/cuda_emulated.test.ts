/**
 * The cuda backend's real kernels and host code run on the CPU (tests/cuda_emu: g++ compiles the
 * kernel sources against a small emulation of blocks, warps, shared memory and atomics) and are
 * compared with the cpu backend on every op case of tests/cuda_cases.ts and through a TopK SAE's
 * gradients. Not a GPU (no timing, no real memory model), but the values a GPU would compute.
 */
import { assert, test } from "./harness.ts";
import { installRuntime } from "../tensor/cuda/runtime.ts";
import { CASES, saeGrads, saeStep, same } from "./cuda_cases.ts";
import { emulatedRuntime } from "./cuda_emu/runtime.ts";
import { skip, which } from "./cuda_tools.ts";

test("cuda kernels emulated on the CPU agree with the cpu backend on every op case and SAE gradients", async () => {
  if (!which("g++")) return skip("emulated cuda kernels", "g++ not on PATH (apt-get install g++)");
  const t0 = performance.now();
  const rt = emulatedRuntime();
  const built = performance.now();
  installRuntime(rt);
  try {
    for (const [name, make, rtol, atol] of CASES) await same(name, make, rtol, atol);
    await same("topk SAE loss, grads, adam", saeGrads, 1e-4, 1e-5);
    await same("topk SAE clipped constrained adam steps", saeStep, 1e-4, 1e-5);
    const s = rt.allocator.stats();
    assert(
      s.inUse <= 16 + 512,
      `every buffer returned to the allocator (in use: ${s.inUse} bytes)`,
    );
  } finally {
    installRuntime(null);
  }
  console.log(
    `emulated cuda: ${CASES.length + 1} cases agree with cpu (build ${
      ((built - t0) / 1000).toFixed(1)
    } s, run ${((performance.now() - built) / 1000).toFixed(1)} s)`,
  );
});
