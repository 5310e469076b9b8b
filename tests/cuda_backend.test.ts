/**
 * The cuda backend as the library sees it. Without a GPU (CI): it is reported unavailable with a
 * reason naming what is missing, useBackend("cuda") says so, and everything keeps working on the
 * cpu backend. With a GPU (the device run): a smoke test of values through the real driver.
 */
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import * as t from "../mod.ts";
import { skip } from "./cuda_tools.ts";

const reason = t.cudaUnavailableReason();

test("cuda backend: unavailable here with its reason; the library stays on cpu", async () => {
  if (reason === null) {
    return skip("cuda unavailability", "a CUDA device is present here (see the device smoke test)");
  }
  assert(
    /libcuda|driver|NVRTC|cuBLAS|no CUDA device|FFI|disabled/.test(reason),
    `reason names what is missing: ${reason}`,
  );
  assert(!t.availableBackends().includes("cuda"), "not listed as available");
  assert(
    t.backendInfo().backends.cuda === `cuda: unavailable (${reason})`,
    t.backendInfo().backends.cuda,
  );
  const before = t.getBackend().name;
  assertThrows(
    () => t.useBackend("cuda"),
    "useBackend: the cuda backend is unavailable here",
    reason,
  );
  assertEquals(t.getBackend().name, before);
  const y = t.add(t.tensor([1, 2, 3]), 1);
  assertEquals(y.backend.name, "cpu");
  assertEquals([...(await y.data())], [2, 3, 4]);
  assertThrows(() => t.setCudaMatmulPrecision("fp8" as never), "expected f32, tf32 or bf16");
  assertEquals(t.cudaMemoryStats(), null);
});

test("cuda backend: values through the real driver (device machines only)", async () => {
  if (reason !== null) return skip("cuda device smoke test", `no CUDA here: ${reason}`);
  const prev = t.getBackend().name;
  t.useBackend("cuda");
  try {
    const a = t.tensor([[1, 2, 3], [4, 5, 6]]), b = t.tensor([[1, 0], [0, 1], [1, 1]]);
    assertClose(await t.matmul(a, b).data(), [4, 5, 10, 11]);
    assertClose(await t.sum(t.relu(t.sub(a, 3)), -1).data(), [0, 6]);
    const [v, i] = t.topk(t.tensor([[3, 1, 4, 1, 5, 9, 2, 6]]), 3);
    assertEquals([...(await v.data())], [9, 6, 5]);
    assertEquals([...(await i.data())], [5, 7, 4]);
    console.log(t.backendInfo().backends.cuda);
  } finally {
    t.useBackend(prev);
  }
});
